"""The teacher's pseudo-labels: its answer for each unlabelled session with its probability, and the sure ones.

Answers. The teacher (a symbol-tuned LM, `decode=score`, `label_probs=true`) rolls each session out turn by turn
on its own answers and, at the last turn, scores every label exactly: the answer is the label of highest
length-normalised log-likelihood and its `confidence` the softmax of those scores over the whole label set (the
probability of the answer among every intent). One record per session, in CLARA's layout
(mtic/clara/pseudo_label.py): `id`, `turns` (the last one labelled), `status`, `intent`, `base` (the answer),
`answers` (one, order `teacher`), plus `confidence` and `top` (the five most probable intents). Exact scoring
always answers, so every answer record is `kept`: the answers file is what is cached and resumed.

Selection (per run, cheap, never cached with the answers): a session is kept when its confidence is at least
`min_confidence`, it is among the `keep_share` most confident answers (ranked by confidence, ties by session id;
null = no rank limit) and, given CLARA's pseudo-label records (`agree_with`), CLARA kept the same intent for it;
otherwise it is `low_confidence` or `disagreement`, and its `intent` (the pseudo-label) is None. A share needs no
calibration: a softmax over many verbose labels is flat (on the SG demo market the median top probability is 0.16),
so an absolute threshold that suits one taxonomy keeps nothing or everything on another. The summary then scores
all answers (`precision.without_sc`) and the kept ones (`precision.with_sc`) against the gold side file.
Guarantee: raising `min_confidence` or lowering `keep_share` keeps a subset of the sessions kept before, with the
same labels.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtic.clara.labeler import ANSWER_OK, DISAGREEMENT, KEPT, Answer
from mtic.clara.pseudo_label import RecordsError, recover
from mtic.config_schema import ConfigError
from mtic.data.schema import Session

TEACHER_ORDER = "teacher"
LOW_CONFIDENCE = "low_confidence"


def answer_record(session: Session, output: Mapping[str, Any]) -> dict[str, Any]:
    """The record of one session from the teacher's output (`SymbolTuningLM.predict_sessions`)."""
    intent, top = output["intent"], dict(output.get("top") or {})
    if intent is None or intent not in top:
        raise RuntimeError(f"session {session.id}: the teacher gave no probability for its answer; it must decode "
                           "with decode=score and label_probs=true")
    turns = [{"text": t.text, "intent": None} for t in session.turns]
    turns[-1]["intent"] = intent
    answer = Answer(TEACHER_ORDER, ANSWER_OK, intent, output.get("method"), output.get("output"))
    return {"id": session.id, "turns": turns, "status": KEPT, "intent": intent, "votes": 1, "base": intent,
            "confidence": round(float(top[intent]), 6), "score": output.get("score"),
            "top": {k: round(float(v), 6) for k, v in top.items()}, "answers": [answer.to_json()]}


class TeacherLabeler:
    """Labels batches of sessions with the teacher, loaded on first use (a finished answers file loads nothing)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load, self.model = load, None

    def __call__(self, sessions: Sequence[Session]) -> list[dict[str, Any]]:
        if self.model is None:
            self.model = self._load()
        outputs = self.model.predict_sessions([[(t.text, None) for t in s.turns] for s in sessions])
        return [answer_record(s, o) for s, o in zip(sessions, outputs)]

    def close(self) -> None:
        """Drop the model (its memory goes back before the classifier trains)."""
        self.model = None


def check_min_confidence(value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"'pipeline.min_confidence' must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_keep_share(value: float | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) <= 1.0:
        raise ConfigError(f"'pipeline.keep_share' must be null or a share in (0, 1], got {value!r}")
    return float(value)


def most_confident(records: Sequence[Mapping[str, Any]], keep_share: float | None) -> set[str]:
    """Ids of the ceil(keep_share * n) most confident records (ties by id), every id when keep_share is None."""
    share = check_keep_share(keep_share)
    if share is None:
        return {r["id"] for r in records}
    ranked = sorted(records, key=lambda r: (-float(r["confidence"]), str(r["id"])))
    return {r["id"] for r in ranked[: math.ceil(share * len(ranked))]}


def select(records: Sequence[Mapping[str, Any]], min_confidence: float,
           agreement: Mapping[str, str | None] | None = None, keep_share: float | None = None
           ) -> list[dict[str, Any]]:
    """The answer records with their selection status (see the module doc); the input is not changed."""
    threshold = check_min_confidence(min_confidence)
    ranked_in = most_confident(records, keep_share)
    out = []
    for record in records:
        row = copy.deepcopy(dict(record))
        sure = float(row["confidence"]) >= threshold and row["id"] in ranked_in
        agreed = agreement is None or agreement.get(row["id"]) == row["base"]
        row["status"] = KEPT if sure and agreed else (LOW_CONFIDENCE if not sure else DISAGREEMENT)
        row["intent"] = row["base"] if row["status"] == KEPT else None
        row["turns"][-1]["intent"] = row["intent"]
        out.append(row)
    return out


def read_agreement(path: str | Path, session_ids: Sequence[str]) -> dict[str, str | None]:
    """CLARA's kept intent per session (None where CLARA kept none) from its pseudo-label records file; a
    RecordsError names the file when it is missing or shares no session with the ones labelled here."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RecordsError(path, "pipeline.agree_with: no such pseudo-label records file (a CLARA run's "
                                 "pseudo_labels.jsonl)")
    records = recover(path)  # a bad line is a RecordsError naming file:line
    shared = [i for i in session_ids if i in records]
    if not shared:
        raise RecordsError(path, "pipeline.agree_with: none of its sessions is among the sessions labelled here "
                                 "(made on another bundle or split?)")
    return {i: (records[i].get("intent") if records[i].get("status") == KEPT else None) if i in records else None
            for i in session_ids}
