"""Shared fixtures: every write of a test run under pytest's temp dirs; a tiny valid bundle written to a temp dir."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# Environment variables through which mtic (and run.py subprocesses, which inherit them) choose where to write:
# MTIC_CACHE is read by mtic.hub.registry.cache_root and by conf/paths/default.yaml's paths.cache_dir (converted
# models, built bundles, LLM answer cache, CLARA artefacts); MTIC_OUTPUT by paths.output_dir (Hydra run directories).
ISOLATED_ENV = {"MTIC_CACHE": "cache", "MTIC_OUTPUT": "outputs"}


@pytest.fixture(scope="session", autouse=True)
def isolated_writes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point mtic's cache and Hydra's output root at one temp dir for the whole test session.

    Nothing is written to ~/.cache/mtic or ./outputs. The cache is per session, so a model converted from its
    weight package (smollm2, gemma3, e5) is built once per `pytest` run and reused by every test of that run."""
    root = tmp_path_factory.mktemp("mtic-session")
    patch = pytest.MonkeyPatch()
    for name, sub in ISOLATED_ENV.items():
        patch.setenv(name, str(root / sub))
    yield root
    patch.undo()

TINY_INTENTS = [
    {"id": "cancel", "title": "Request to cancel an order", "path": ["Order", "Cancellation", "Cancel Order"], "title_en": "Request to cancel an order", "label": "Cancel Order"},
    {"id": "cancel_status", "title": "Ask about a cancellation", "path": ["Order", "Cancellation", "Cancellation Status"], "label": "Cancel Status"},
    {"id": "refund", "title": "Ask about the status of a refund", "path": ["Payment", "Refund", "Refund Status"], "label": "Refund Status"},
    {"id": "track", "title": "Ask where a parcel is", "path": ["Logistics", "Delivery", "Delivery Status"], "label": "Track Parcel"},
]
TINY_SINGLE = [
    ("cancel my order pls", "cancel"), ("i want to cancel", "cancel"),
    ("is my cancellation done", "cancel_status"), ("cancel request status?", "cancel_status"),
    ("where is my refund", "refund"), ("refund not in yet", "refund"),
    ("where is my parcel", "track"), ("track my package", "track"),
]
TINY_SESSIONS = {
    "train": [
        {"id": "t1", "turns": [{"text": "where is my parcel", "intent": "track"}, {"text": "still nothing", "intent": "track"}]},
        {"id": "t2", "turns": [{"text": "cancel my order", "intent": "cancel"}, {"text": "and the money?", "intent": "refund"}]},
    ],
    "test": [
        {"id": "s1", "turns": [{"text": "i want to cancel", "intent": None}, {"text": "is it done?", "intent": "cancel_status"}]},
        {"id": "s2", "turns": [{"text": "refund not in yet", "intent": "refund"}]},
        {"id": "s3", "turns": [{"text": "where is my parcel"}, {"text": "ok", "intent": "track"}, {"text": "cancel it", "intent": "cancel"}]},
    ],
}


TINY_UNLABELED = [  # chat logs with the gold intent of the last turn (sessions/unlabeled.gold.jsonl scores pseudo-labels)
    (["where is my parcel", "still nothing"], "track"),
    (["cancel my order", "and my money?"], "refund"),
    (["i want to cancel"], "cancel"),
    (["is my cancellation done"], "cancel_status"),
    (["track my package", "cancel it please"], "cancel"),
    (["refund not in yet"], "refund"),
    (["hello", "where is my refund"], "refund"),
    (["cancel request status?", "ok and the parcel?"], "track"),
]


def write_tiny_bundle(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "bundle.yaml").write_text(yaml.safe_dump({"name": "tiny", "market": "sg", "languages": ["en"]}), encoding="utf-8")
    (root / "intents.jsonl").write_text("".join(json.dumps(i) + "\n" for i in TINY_INTENTS), encoding="utf-8")
    (root / "single_turn.jsonl").write_text(
        "".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in TINY_SINGLE), encoding="utf-8"
    )
    write_sessions(root, TINY_SESSIONS)
    return root


def write_sessions(root: Path, sessions: dict[str, list[dict]]) -> None:
    """sessions/<split>.jsonl of a bundle from {split: [session rows]}."""
    (root / "sessions").mkdir(exist_ok=True)
    for split, rows in sessions.items():
        (root / "sessions" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_tiny_unlabeled(root: Path) -> Path:
    """The tiny bundle's chat logs: sessions/unlabeled.jsonl (no label) and its gold side file."""
    unlabeled = [{"id": f"u{k}", "turns": [{"text": q} for q in queries]} for k, (queries, _) in enumerate(TINY_UNLABELED)]
    gold = [{"id": f"u{k}", "turns": [{"text": q, "intent": intent if j == len(queries) - 1 else None}
                                      for j, q in enumerate(queries)]}
            for k, (queries, intent) in enumerate(TINY_UNLABELED)]
    write_sessions(root, {"unlabeled": unlabeled, "unlabeled.gold": gold})
    return root


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    return write_tiny_bundle(tmp_path / "tiny")


@pytest.fixture
def tiny_bundle_with_logs(tmp_path: Path) -> Path:
    """The tiny bundle plus unlabelled chat logs and their gold side file (what CLARA / st_distill label)."""
    return write_tiny_unlabeled(write_tiny_bundle(tmp_path / "tiny"))
