"""TF-IDF + logistic regression on the view texts: the afternoon baseline, the floor row of every table.

The same data as the HTC baselines (the datamodule of `cfg.data`: training examples, test sessions, view), a
scikit-learn classifier from `cfg.model` (conf/model/tfidf.yaml, fitted with its defaults), the same metrics
(`IntentMetrics`), `predictions.jsonl` and `results.json`. No model selection: no validation label is read.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.pipeline import Pipeline, make_pipeline

from mtic.config_schema import ConfigError
from mtic.eval.metrics import IntentMetrics
from mtic.eval.results import results_line, write_predictions, write_results
from mtic.eval.supervision import Supervision
from mtic.inputs.data_plan import no_selection
from mtic.inputs.views import LastKView, LastQueryView, NaiveConcatView, SelectedConcatView, ViewExample
from mtic.pipelines.train_eval import bundle_dir_of

log = logging.getLogger("mtic")
TEXT_VIEWS = (LastQueryView, NaiveConcatView, LastKView)   # one text per session
SUPPORTED = "data=last_query | naive_concat | last_two"
NO_SELECTION = "scikit-learn defaults, one fit, no model selection"


def make_classifier(vectorizer: Any, classifier: Any) -> Pipeline:
    """`make_pipeline(vectorizer, classifier)`: the config's keys reach both objects (conf/model/tfidf.yaml)."""
    return make_pipeline(vectorizer, classifier)


def check_view(view: Any) -> None:
    """The classifier reads `ViewExample.text` of one text view; anything else is one clear error."""
    if isinstance(view, SelectedConcatView):
        raise ConfigError("pipeline=tfidf: data=selected_concat needs a trained selector (pipeline=selective trains "
                          f"one for the HTC); the TF-IDF baseline supports {SUPPORTED}")
    if not isinstance(view, TEXT_VIEWS):
        raise ConfigError(f"pipeline=tfidf: view {type(view).__name__} is not a text view; use {SUPPORTED}")


def build_classifier(cfg: DictConfig) -> Any:
    """The estimator of `cfg.model` (anything with fit / predict; model=tfidf by default)."""
    target = str(cfg.model.get("_target_", ""))
    if target.startswith("mtic.models."):
        raise ConfigError(f"pipeline=tfidf needs an sklearn estimator as model (model=tfidf), got {target}")
    classifier = instantiate(cfg.model)
    if not (hasattr(classifier, "fit") and hasattr(classifier, "predict")):
        raise ConfigError(f"pipeline=tfidf: model {target} has no fit / predict; use model=tfidf")
    return classifier


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit on the training view texts, predict the test sessions' last intent, write results; returns the metrics."""
    started = time.time()
    run_dir = Path(cfg.paths.run_dir)
    datamodule = instantiate(cfg.data, bundle_dir=str(bundle_dir_of(cfg)))
    datamodule.plan(f"experiment '{cfg.experiment}'", fit=True, test=True)  # one-line errors before fitting
    check_view(datamodule.view)
    check_view(datamodule.eval_view)
    read = datamodule.supervision()
    used = Supervision(train=read.train, evaluation=read.evaluation)   # sklearn defaults: no model selection
    used.enforce(bool(cfg.get("label_free", False)), where=f"experiment '{cfg.experiment}'")
    classifier = build_classifier(cfg)

    train = [e for e in datamodule.train_examples() if e.target is not None]
    if not train:
        raise ConfigError("pipeline=tfidf: no labelled training example (data.train_single_turn / train_sessions)")
    classifier.fit([e.text for e in train], [e.target for e in train])
    log.info("tfidf: fitted on %d examples, %d intents", len(train), len({e.target for e in train}))

    test = [datamodule.eval_view(s) for s in datamodule.evaluation_sessions("test")]
    rows = predict(classifier, test)
    labelled = [r for r in rows if r["target"] is not None]
    metrics: dict[str, float] = {}
    if labelled:
        state = IntentMetrics(datamodule.taxonomy)
        state.update([r["intent"] for r in labelled], [r["target"] for r in labelled])
        metrics = state.compute("test")
    write_predictions(run_dir, rows)
    path = write_results(run_dir, cfg, metrics, len(test), started, supervision=used,
                         extra={"train_size": len(train), "selection": no_selection(NO_SELECTION)})
    log.info("results: %s -> %s", json.dumps(metrics), path)
    print(results_line(cfg, metrics, len(test), path))
    return metrics


def predict(classifier: Any, examples: list[ViewExample]) -> list[dict[str, Any]]:
    """Prediction rows like the HTC's: session_id, target, intent (and its probability when the model has one)."""
    if not examples:
        return []
    texts = [e.text for e in examples]
    intents = [str(p) for p in classifier.predict(texts)]
    probabilities = classifier.predict_proba(texts).max(axis=1).tolist() if hasattr(classifier, "predict_proba") \
        else [None] * len(texts)
    return [{"session_id": e.session_id, "target": e.target, "intent": p,
             "probability": None if q is None else round(float(q), 6)}
            for e, p, q in zip(examples, intents, probabilities)]


