"""`pipeline=lara | clara`: LLM in-context classification of sessions, and pseudo-labels -> HTC.

lara      the LLM labels the test sessions directly -> intent metrics -> results.json, predictions.jsonl
clara     the LLM pseudo-labels unlabelled sessions with self-consistency (n orderings, agreement rule), the kept
          sessions are split into pseudo-labelled train / valid parts (`pseudo_valid`), and train_eval.run trains and
          selects the classifier on them (mtic/pipelines/pseudo_training.py, shared with st_distill): no gold
          multi-turn label is read. With `self_consistency: none` (one
          ordering, no vote) it is LARA-PL (`+experiment=lara_pl`).

Candidate intents come from retrieval and from M_c, the fine-tuned single-turn HTC (mtic/pipelines/
candidate_model.py), unless `retrieval.candidates.source=none`.

Stage artifacts are reused: LLM answers live in the answer cache; the pseudo-label records file lives under
`<cache_dir>/clara/<market>-<key>/` where the key hashes everything that determines the labels (bundle, split
and cap, llm, prompt, labels, retrieval, self-consistency), and it is resumable. A finished file is reused
without loading any model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mtic.clara.engine import build_engine
from mtic.clara.labeler import SCORE_METHOD, SYMBOL_METHOD, SessionLabeler
from mtic.clara.llm import LLMBackend, backend_mode
from mtic.clara.pseudo_label import recover
from mtic.clara.retrieval import unique_demos
from mtic.clara.self_consistency import RULES
from mtic.config_schema import ConfigError
from mtic.data.bundle import Bundle, read_bundle
from mtic.data.sources import bundle_fingerprint
from mtic.data.taxonomy import Taxonomy
from mtic.eval.metrics import IntentMetrics
from mtic.eval.results import results_line, write_predictions, write_results
from mtic.eval.supervision import SINGLE_TURN, Supervision, sessions_source
from mtic.inputs.data_plan import no_selection, require_demos, require_split, require_test
from mtic.pipelines.candidate_model import ensure_candidate_model, identity, plan_candidates
from mtic.pipelines.pseudo_training import pseudo_label_gold, require_pseudo_sources, train_on_pseudo_labels
from mtic.pipelines.train_eval import bundle_dir_of

log = logging.getLogger("mtic")
NO_SC = "none"
ARTIFACT_DIR = "clara"
RECORDS_FILE = "pseudo_labels.jsonl"
LARA_RECORDS_FILE = "lara_records.jsonl"
DEFAULT_MATCHER = {"_target_": "mtic.labels.matching.output_matcher"}
EXACT_METHODS = ("exact", SCORE_METHOD, SYMBOL_METHOD)


class Voting(NamedTuple):
    """Self-consistency: how many demo orderings are asked, the agreement rule, the seed of the random ones."""

    n_orders: int
    rule: str
    seed: int


def group_node(cfg: DictConfig, group: str) -> dict[str, Any]:
    """A config group this pipeline needs, resolved to plain values (ConfigError naming the group when absent)."""
    node = cfg.get(group)
    if not node:
        raise ConfigError(f"this pipeline needs the '{group}' config group: add {group}=... (see conf/{group}/)")
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def settings_of(node: Mapping[str, Any]) -> dict[str, Any]:
    """A config node's settings without Hydra's keys (`_target_`, ...): what is hashed and reported."""
    return {k: v for k, v in node.items() if not str(k).startswith("_")}


def llm_summary(cfg: DictConfig) -> dict[str, Any]:
    """The LLM settings reported in summaries and results (no secrets: credentials in a URL are dropped)."""
    from mtic.clara.llm.openai_backend import public_url

    llm = group_node(cfg, "llm")
    out = {k: llm.get(k) for k in ("backend", "model", "decode") if k in llm}
    if llm.get("base_url"):
        out["base_url"] = public_url(llm["base_url"])
    return out


def voting(self_consistency: str, sc_orders: int, sc_seed: int = 0) -> Voting:
    """The self-consistency plan from the pipeline settings (`none` = one ordering, no vote)."""
    if self_consistency == NO_SC:
        return Voting(1, RULES[0], int(sc_seed))
    if self_consistency not in RULES:
        raise ConfigError(f"'pipeline.self_consistency' is {self_consistency!r}; "
                          f"allowed values: {NO_SC}, {', '.join(RULES)}")
    if sc_orders < 2:
        raise ConfigError("self-consistency needs 'pipeline.sc_orders' >= 2 (or self_consistency=none)")
    return Voting(int(sc_orders), self_consistency, int(sc_seed))


# --------------------------------------------------------------------------- building blocks
def build_llm(**node: Any) -> LLMBackend:
    """The `llm` node instantiated through its `_target_` (tests replace this seam with a scripted LLM)."""
    return instantiate(node)


def build_labeler(cfg: DictConfig, bundle: Bundle, taxonomy: Taxonomy, retrieval: Mapping[str, Any],
                  labels: Mapping[str, Any], matcher: Mapping[str, Any], vote: Voting, llm: LLMBackend | None = None,
                  embedder: Any = None) -> SessionLabeler:
    """Every part instantiated from its config node: labels (`pipeline.labels` = the labels group), retriever (`pipeline.retrieval`, with M_c's
    planned checkpoint, trained here if needed), answer matcher (`pipeline.matcher`), template (`prompt`) and LLM
    (`llm`, behind the answer cache). The sentence embedder named by `retrieval.embedder` is loaded once for the
    retriever and the matcher. `llm` / `embedder` replace the configured ones (experiments/render_prompts.py
    renders without an LLM)."""
    from mtic.hub.registry import load_sentence_embedder

    labels = instantiate(dict(labels or group_node(cfg, "labels")), taxonomy=taxonomy)
    retrieval = ensure_candidate_model(cfg, retrieval)
    if embedder is None:
        embedder = load_sentence_embedder(retrieval["embedder"], cfg.paths.cache_dir)
    retriever = instantiate(retrieval, _partial_=True)(bundle=bundle, taxonomy=taxonomy, embedder=embedder,
                                                       cache_dir=cfg.paths.cache_dir)
    answers = instantiate(dict(matcher or DEFAULT_MATCHER), _partial_=True)(labels=labels.as_dict(), embedder=embedder)
    llm = llm if llm is not None else build_llm(**group_node(cfg, "llm"))
    return SessionLabeler(retriever, instantiate(group_node(cfg, "prompt")), labels.as_dict(), llm, matcher=answers,
                          n_orders=vote.n_orders, rule=vote.rule, seed=vote.seed)


@dataclass(frozen=True)
class LabelerRecipe:
    """What builds the session labeller (mtic/clara/engine.py's recipe): `prepare` trains M_c if needed, `build`
    calls build_labeler. It pickles for a Ray worker as the config resolved here and the bundle without its
    sessions (a worker gets its shard's sessions and loads its own models)."""

    cfg: DictConfig
    bundle: Bundle
    taxonomy: Taxonomy
    retrieval: Mapping[str, Any]
    labels: Mapping[str, Any] | None
    matcher: Mapping[str, Any] | None
    vote: Voting

    def prepare(self) -> None:
        ensure_candidate_model(self.cfg, self.retrieval)

    def build(self) -> SessionLabeler:
        return build_labeler(self.cfg, self.bundle, self.taxonomy, self.retrieval, self.labels, self.matcher,
                             self.vote)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        plain = OmegaConf.to_container(self.cfg, resolve=True)  # no resolver (hydra:, market.*) in the worker
        return _recipe, (plain, replace(self.bundle, sessions={}), self.taxonomy, self.retrieval, self.labels,
                         self.matcher, self.vote)


def _recipe(cfg: dict[str, Any], *parts: Any) -> LabelerRecipe:
    return LabelerRecipe(OmegaConf.create(cfg), *parts)


LLM_RUNTIME_KEYS = ("cache", "cache_file", "cache_dir", "batch_size", "num_threads", "max_concurrency", "timeout_s",
                    "connect_timeout_s", "max_retries", "backoff_base_s", "backoff_max_s", "choice_param")


def artifact_key(cfg: DictConfig, bundle_dir: Path, parts: Mapping[str, Any]) -> str:
    """Hash of everything that determines the pseudo-labels: the bundle's files, the LLM settings (not the
    runtime ones such as batch size or retries), prompt, labels and `parts` (split, cap, retrieval, SC)."""
    llm = {k: v for k, v in settings_of(group_node(cfg, "llm")).items() if k not in LLM_RUNTIME_KEYS}
    if "decode" in llm:  # hashed as the backend's mode: the key of the same settings is the one before the rename
        llm["mode"] = backend_mode(llm.pop("decode"))
    payload = {"bundle_files": bundle_fingerprint(bundle_dir), "llm": llm,
               "prompt": settings_of(group_node(cfg, "prompt")),
               "labels": _plain(cfg.labels), **parts}
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- pseudo-labelling stage
def pseudo_label_stage(cfg: DictConfig, self_consistency: str, sc_orders: int, sc_seed: int,
                       retrieval: Mapping[str, Any], unlabeled: Mapping[str, Any], batch_size: int,
                       labels: Mapping[str, Any], matcher: Mapping[str, Any], pseudo_labels: str | None, progress: bool,
                       artifact_dir: str, test: bool = False,
                       engine: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], Supervision]:
    """Pseudo-label (or resume, or reuse) and return the summary (its `files.sessions` holds the kept sessions)
    and the label sources the stage read (single-turn demos, M_c). The bundle parts the run needs (demos, the
    sessions to label, the test sessions when `test`) are checked first: a missing one stops it before any model."""
    vote = voting(self_consistency, sc_orders, sc_seed)
    n_orders, rule = vote.n_orders, vote.rule
    bundle_dir = bundle_dir_of(cfg)
    bundle = read_bundle(bundle_dir)
    split = unlabeled.get("split", "unlabeled")
    _require_clara_inputs(bundle, split, f"experiment '{cfg.experiment}'", test)
    taxonomy = Taxonomy.from_intents(bundle.intents)
    sessions = bundle.require_sessions(split)
    cap = unlabeled.get("max_sessions")
    sessions = sessions[: int(cap)] if cap else sessions
    retrieval, used = plan_candidates(cfg, retrieval, bundle_dir)
    used.add(train=[SINGLE_TURN])  # the demos
    demos = bundle.require_single_turn(retrieval.get("single_turn_split", "train") or None)
    n_demos = len(unique_demos((q.text for q in demos), (q.intent for q in demos)))
    if pseudo_labels:
        out = Path(pseudo_labels)
    else:
        key = artifact_key(cfg, bundle_dir, {"split": split, "max_sessions": cap, "n_orders": n_orders,
                                             "rule": rule, "sc_seed": sc_seed, "retrieval": identity(retrieval, n_demos)})
        out = Path(artifact_dir).expanduser() / f"{cfg.market.name}-{key}" / RECORDS_FILE
    have = recover(out)
    log.info("pseudo-labels: %s (%d of %d sessions already labelled)", out, sum(s.id in have for s in sessions),
             len(sessions))
    recipe = LabelerRecipe(cfg, bundle, taxonomy, retrieval, labels, matcher, vote)
    settings = {"prompt": cfg.prompt.name, "rule": rule if n_orders > 1 else NO_SC, "n_orders": n_orders,
                "llm": llm_summary(cfg), "retrieval": identity(retrieval, n_demos), "bundle": str(bundle_dir),
                "split": split, "max_sessions": cap}
    gold, scored_by = pseudo_label_gold(bundle, sessions, split, taxonomy)
    summary = build_engine(engine).label(sessions, recipe, out, batch_size=batch_size, gold=gold, settings=settings,
                                         progress=progress)
    used.add(evaluation=scored_by)  # scoring the pseudo-labels (Table 4), never training on them
    return summary, used


def _require_clara_inputs(bundle: Bundle, split: str, where: str, test: bool) -> None:
    """Demos, the chat logs to pseudo-label and, when the run tests, the test sessions (one-line errors)."""
    require_demos(bundle, where)
    require_split(bundle, split, f"{where} pseudo-labels the chat logs of this file, but it is missing: add it (e.g. "
                                 "mtic data import ... --logs chats.jsonl), or pipeline.unlabeled.split=<a sessions "
                                 "split the bundle has>")
    if test:
        require_test(bundle, where, "pipeline.test=false to pseudo-label and train only")


def _default_artifact_dir(cfg: DictConfig) -> str:
    return str(Path(cfg.paths.cache_dir).expanduser() / ARTIFACT_DIR)


def _pseudo_then_train(cfg: DictConfig, fit: bool, test: bool, pseudo_valid: Mapping[str, Any],
                       **stage: Any) -> dict[str, float]:
    """Pseudo-labels, then train_eval.run on them; with fit=false and test=false only the pseudo-labels are made."""
    require_pseudo_sources(cfg, "CLARA")
    started = time.time()
    summary, used = pseudo_label_stage(cfg, **stage, test=test)
    report = {"llm": llm_summary(cfg), "candidates": (stage["retrieval"].get("candidates") or {}).get("source", "none")}
    return train_on_pseudo_labels(cfg, summary, used, report, fit, test, pseudo_valid, started)


def clara(cfg: DictConfig, self_consistency: str = "unanimous", sc_orders: int = 3, sc_seed: int = 0,
          retrieval: Mapping[str, Any] | None = None, unlabeled: Mapping[str, Any] | None = None,
          batch_size: int = 8, labels: Mapping[str, Any] | None = None, matcher: Mapping[str, Any] | None = None,
          pseudo_labels: str | None = None,
          pseudo_valid: Mapping[str, Any] | None = None, artifact_dir: str | None = None, progress: bool = True,
          fit: bool = True, test: bool = True, engine: Mapping[str, Any] | str | None = None) -> dict[str, float]:
    """Pseudo-labels (with self-consistency; `none` = LARA-PL) -> train, select and test the configured model.
    `engine`: where the labelling runs (mtic/clara/engine.py; null = this process)."""
    return _pseudo_then_train(cfg, fit, test, pseudo_valid=_plain(pseudo_valid) or {},
                              self_consistency=self_consistency, sc_orders=sc_orders, sc_seed=sc_seed,
                              retrieval=_plain(retrieval) or {}, unlabeled=_plain(unlabeled) or {},
                              batch_size=batch_size, labels=_plain(labels), matcher=_plain(matcher),
                              pseudo_labels=pseudo_labels, engine=_plain(engine),
                              progress=progress, artifact_dir=artifact_dir or _default_artifact_dir(cfg))


# --------------------------------------------------------------------------- LARA on the test sessions
def lara(cfg: DictConfig, self_consistency: str = NO_SC, sc_orders: int = 1, sc_seed: int = 0,
         retrieval: Mapping[str, Any] | None = None, split: str = "test", max_sessions: int | None = None,
         batch_size: int = 8, labels: Mapping[str, Any] | None = None, matcher: Mapping[str, Any] | None = None,
         progress: bool = True, engine: Mapping[str, Any] | str | None = None) -> dict[str, float]:
    """The LLM classifies the evaluation sessions; accuracy etc. go to results.json (resumable in the run dir).
    `engine`: where the labelling runs (mtic/clara/engine.py; null = this process)."""
    started = time.time()
    vote = voting(self_consistency, sc_orders, sc_seed)
    n_orders, rule = vote.n_orders, vote.rule
    bundle_dir = bundle_dir_of(cfg)
    bundle = read_bundle(bundle_dir)
    where = f"experiment '{cfg.experiment}'"
    require_demos(bundle, where)
    require_split(bundle, split, f"{where} classifies the labelled sessions of this file, but it is missing: add it, "
                                 "or pipeline.split=<a labelled sessions split the bundle has>")
    taxonomy = Taxonomy.from_intents(bundle.intents)
    sessions = bundle.require_sessions(split)
    sessions = sessions[: int(max_sessions)] if max_sessions else sessions
    run_dir = Path(cfg.paths.run_dir)
    retrieval, used = plan_candidates(cfg, _plain(retrieval) or {}, bundle_dir)
    used.add(train=[SINGLE_TURN], evaluation=[sessions_source(split)])  # the demos; the gold of what it classifies
    used.enforce(bool(cfg.get("label_free", False)), where=f"experiment '{cfg.experiment}'")
    recipe = LabelerRecipe(cfg, bundle, taxonomy, retrieval, _plain(labels), _plain(matcher), vote)
    gold = {s.id: s.target for s in sessions if s.target is not None}
    settings = {"prompt": cfg.prompt.name, "rule": rule if n_orders > 1 else NO_SC, "n_orders": n_orders}
    summary = build_engine(_plain(engine)).label(sessions, recipe, run_dir / LARA_RECORDS_FILE, batch_size=batch_size,
                                                 gold=gold, settings=settings, progress=progress, desc="LARA")
    records = [json.loads(line) for line in (run_dir / LARA_RECORDS_FILE).read_text(encoding="utf-8").splitlines()]
    metrics_state = IntentMetrics(taxonomy)
    predictions, rows = [], []
    for record, session in zip(records, sessions):
        chosen = (record["intent"] or record["base"]) if n_orders > 1 else record["base"]  # no agreement: first order
        first = record["answers"][0]
        predictions.append(chosen)
        rows.append({"session_id": session.id, "target": session.target, "output": first.get("text"),
                     "intent": chosen, "method": first.get("method") or first.get("status"),
                     "status": record["status"]})
    exact = [r["method"] in EXACT_METHODS for r in rows]
    metrics_state.update(predictions, [s.target for s in sessions], exact)
    metrics = metrics_state.compute("test")
    write_predictions(run_dir, rows)
    extra = {"decode": cfg.llm.get("decode"), "view": "retrieval_prompt", "history": None, "llm": llm_summary(cfg),
             "llm_answers": {"answer_statuses": summary["answer_statuses"],
                             "session_statuses": summary["session_statuses"],
                             "llm_stats": summary["llm_stats"], "answered": sum(r["intent"] is not None for r in rows)},
             "candidates": (retrieval.get("candidates") or {}).get("source", "none"),
             "selection": no_selection("the LLM labels the sessions, no model is trained (M_c selects its own)")}
    path = write_results(run_dir, cfg, metrics, len(sessions), started, extra=extra, supervision=used)
    print(results_line(cfg, metrics, len(sessions), path))
    return metrics
