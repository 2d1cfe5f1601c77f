"""The four measured stages of experiments/bench_scale.py, each run alone in its own process (`--stage`), and the
stand-ins that keep the measurement on the framework: a hashing embedder instead of a sentence encoder, an
instant scripted LLM instead of a model, a tiny HTC (tiny-bert) instead of the market's encoder.

    load        read_bundle: parse and validate every file of the bundle into memory
    retrieval   the configured `pipeline.retrieval` (exact up to ann_above demos, HNSW above) over the train
                single-turn queries, then the demos of every session of every split (M_c off)
    retrieval_ann  the same with pipeline.retrieval.ann_above=0 (HNSW at every size: its cost and recall)
    label       CLARA's pseudo-labelling stage (run.py +experiment=clara pipeline.fit=false pipeline.test=false) on
                every unlabeled session: retrieval, prompts, 3 orderings, the instant LLM behind the real answer
                cache, answer matching, the vote and the resumable records file
    train       htc_supervised's datamodule (every training example encoded up front) and one epoch slice of
                training (`train_batches` batches); throughput is timed after the first 5 batches
"""
from __future__ import annotations

import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMBED_DIM = 384  # e5-small's: the index holds what a real encoder's would
SESSION_BATCH = 512
WARMUP_BATCHES = 5


class HashingEmbedder:
    """Deterministic stand-in for the sentence embedder: signed feature hashing of word unigrams and bigrams into
    EMBED_DIM dimensions (scikit-learn's HashingVectorizer), l2-normalised. `seconds` accumulates its own time so
    that the framework's share can be told apart."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=True, norm="l2")
        self.seconds = 0.0

    def encode(self, texts: Sequence[str], kind: str = "query") -> np.ndarray:
        started = time.perf_counter()
        out = self.vectorizer.transform(list(texts)).astype(np.float32).toarray()
        self.seconds += time.perf_counter() - started
        return out

    __call__ = encode  # the label chooser calls the embedder itself


class InstantLLM:
    """Score-mode LLM that answers at once: the alphabetically first candidate (so every ordering agrees)."""

    mode = "score"

    def __init__(self) -> None:
        self.calls = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "bench-instant"}

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def complete(self, requests: Sequence[Any]) -> list[Any]:
        from mtic.clara.llm.base import LLMResponse

        self.calls += len(requests)
        out = []
        for request in requests:
            choice = min(range(len(request.choices)), key=request.choices.__getitem__)
            out.append(LLMResponse(text=request.choices[choice].strip(), choice=choice))
        return out


def rss_mb() -> float:
    """This process's resident set now (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def reader_name() -> str:
    """Which bundle reader this checkout has: the list reader, or Arrow for files above a size."""
    try:
        from mtic.data.arrow_cache import arrow_above
    except ImportError:
        return "list reader"
    return f"list reader up to {arrow_above() / 2**20:.0f} MiB a file, Arrow cache above"


def stage_load(bundle_dir: Path, work: Path, options: dict[str, Any]) -> dict[str, Any]:
    """read_bundle twice: cold (parse, validate and, for big files, build the Arrow cache), then warm."""
    from mtic.data.bundle import read_bundle

    started = time.perf_counter()
    bundle = read_bundle(bundle_dir)
    cold = time.perf_counter() - started
    sessions, queries = sum(map(len, bundle.sessions.values())), len(bundle.single_turn)
    del bundle
    started = time.perf_counter()
    read_bundle(bundle_dir)
    return {"sessions": sessions, "single_turn": queries, "cold_s": round(cold, 3),
            "warm_s": round(time.perf_counter() - started, 3), "reader": reader_name()}


def stage_retrieval(bundle_dir: Path, work: Path, options: dict[str, Any]) -> dict[str, Any]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mtic.data.bundle import read_bundle
    from mtic.data.taxonomy import Taxonomy
    from mtic.pipelines.candidate_model import plan_candidates

    overrides = ["+experiment=lara", "pipeline.retrieval.candidates.source=none", "pipeline.retrieval.ann.threads=1",
                 f"paths.data_dir={bundle_dir}", f"paths.cache_dir={work / 'cache'}", *options.get("overrides", [])]
    cfg = compose(overrides)
    phases: dict[str, float] = {}
    started = time.perf_counter()
    bundle = read_bundle(bundle_dir)
    phases["read_bundle_s"] = time.perf_counter() - started
    retrieval, _ = plan_candidates(cfg, OmegaConf.to_container(cfg.pipeline.retrieval, resolve=True), bundle_dir)
    embedder = HashingEmbedder()
    started = time.perf_counter()
    retriever = instantiate(retrieval, _partial_=True)(bundle=bundle, taxonomy=Taxonomy.from_intents(bundle.intents),
                                                       embedder=embedder)
    phases["index_build_s"] = time.perf_counter() - started
    phases["index_embed_s"], embedder.seconds = embedder.seconds, 0.0
    sessions = [s.queries for split in bundle.sessions.values() for s in split]
    started = time.perf_counter()
    demos = 0
    for start in range(0, len(sessions), SESSION_BATCH):
        demos += sum(map(len, retriever.retrieve(sessions[start : start + SESSION_BATCH])))
    phases["retrieve_s"] = time.perf_counter() - started
    phases["retrieve_embed_s"] = embedder.seconds
    approximate = retriever.index.approximate
    return {**{k: round(v, 3) for k, v in phases.items()}, "demos_indexed": len(retriever.index),
            "sessions": len(sessions), "queries": sum(map(len, sessions)), "demos_returned": demos,
            "index": "hnsw" if approximate is not None else "exact",
            "recall_at_k": None if approximate is None else round(approximate.recall, 4),
            "sessions_per_s": round(len(sessions) / phases["retrieve_s"], 1)}


def stage_label(bundle_dir: Path, work: Path, options: dict[str, Any]) -> dict[str, Any]:
    import mtic.hub.registry
    import mtic.pipelines.clara
    from mtic.clara.llm import AnswerCache, CachedLLM
    from mtic.pipelines import run

    cfg = compose(["+experiment=clara", "logger=none", "pipeline.fit=false", "pipeline.test=false",
                   "pipeline.unlabeled.max_sessions=null", "pipeline.retrieval.candidates.source=none",
                   "pipeline.progress=false", "pipeline.retrieval.ann.threads=1", f"paths.data_dir={bundle_dir}",
                   f"paths.run_dir={work / 'run-label'}", f"paths.cache_dir={work / 'cache'}"])
    embedder, llm = HashingEmbedder(), InstantLLM()
    mtic.hub.registry.load_sentence_embedder = lambda name, cache_dir=None: embedder  # the documented seams
    mtic.pipelines.clara.build_llm = lambda **node: CachedLLM(llm, AnswerCache(node["cache_file"]))
    started = time.perf_counter()
    run(cfg)
    seconds = time.perf_counter() - started
    summary = json.loads((work / "run-label" / "results.json").read_text(encoding="utf-8"))["pseudo_labels"]
    return {"labelled_sessions": summary["sessions"], "kept": summary["kept"], "llm_prompts": llm.calls,
            "label_s": round(seconds, 3), "embed_s": round(embedder.seconds, 3),
            "sessions_per_s": round(summary["sessions"] / seconds, 1)}


def stage_train(bundle_dir: Path, work: Path, options: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl

    from mtic.pipelines.train_eval import build_components

    batches, batch_size = int(options.get("train_batches", 60)), int(options.get("batch_size", 32))
    cfg = compose(["+experiment=htc_supervised", "market.encoder=tiny-bert", "logger=none",
                   f"data.batch_size={batch_size}", f"paths.data_dir={bundle_dir}", f"paths.run_dir={work / 'run'}",
                   f"paths.cache_dir={work / 'cache'}"])
    pl.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    datamodule, model = build_components(cfg)
    built = time.perf_counter()
    datamodule.setup("fit")
    encoded = time.perf_counter()

    class StepClock(pl.Callback):
        """The time each training batch ended."""

        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.ends.append(time.perf_counter())

    clock = StepClock()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[clock], gradient_clip_val=cfg.trainer.get(
                             "gradient_clip_val"))
    trainer.fit(model, datamodule=datamodule)
    timed = clock.ends[-1] - clock.ends[WARMUP_BATCHES - 1]
    examples = (len(clock.ends) - WARMUP_BATCHES) * batch_size
    return {"build_s": round(built - started, 3), "encode_s": round(encoded - built, 3),
            "train_examples": len(datamodule.datasets["train"]), "batch_size": batch_size,
            "timed_batches": len(clock.ends) - WARMUP_BATCHES, "backbone": str(cfg.model.backbone),
            "examples_per_s": round(examples / timed, 1)}


STAGES = {"load": stage_load, "retrieval": stage_retrieval, "retrieval_ann": stage_retrieval, "label": stage_label,
          "train": stage_train}
STAGE_OPTIONS = {"retrieval_ann": {"overrides": ["pipeline.retrieval.ann_above=0"]}}
STAGE_IMPORTS = {  # imported before the baseline RSS is read: the stage's growth is what comes after
    "load": ["mtic.data.bundle"],
    "retrieval": ["hydra", "mtic.pipelines.candidate_model", "mtic.clara.retrieval", "sklearn.feature_extraction.text"],
    "label": ["hydra", "mtic.pipelines", "mtic.pipelines.clara", "sklearn.feature_extraction.text"],
    "train": ["hydra", "pytorch_lightning", "mtic.pipelines.train_eval"],
}
STAGE_IMPORTS["retrieval_ann"] = STAGE_IMPORTS["retrieval"]
