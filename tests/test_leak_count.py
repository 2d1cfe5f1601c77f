"""The leak counter (`mtic.data.stats.leaked_eval_turns`) on a hand-made bundle with a known number of leaks."""
from __future__ import annotations

from pathlib import Path

from mtic.cli import main
from mtic.data.bundle import Bundle, write_bundle, write_unlabeled_gold
from mtic.data.schema import BundleMeta, Intent, Session, SingleTurnQuery, Turn, normalise_text
from mtic.data.stats import bundle_dir_stats, bundle_stats, leaked_eval_turns, stats_table

INTENTS = [Intent(id="a", title="Parcel status", path=("logistics", "a")),
           Intent(id="b", title="Refund", path=("payment", "b"))]


def _session(sid: str, *texts: str, labelled: bool = False, target: str = "a") -> Session:
    """A session whose last turn carries `target` (every turn when `labelled`)."""
    turns = [Turn(t, target if labelled else None) for t in texts[:-1]] + [Turn(texts[-1], target)]
    return Session(sid, tuple(turns))


def _bundle(with_test: bool = True) -> tuple[Bundle, list[Session]]:
    """Training side: single-turn train + valid, train and unlabelled sessions, and a gold file whose only
    extra text is "gold only text". Known leaks (after normalisation) are marked below."""
    single = [SingleTurnQuery("Where is my parcel", "a", "train"), SingleTurnQuery("refund please", "b", "valid")]
    train = [_session("tr-1", "hi", "still nothing", labelled=True)]
    unlabeled = [Session("unl-1", (Turn("ok thanks"), Turn("where is the money")))]
    gold = [_session("unl-1", "ok thanks", "gold only text", labelled=True, target="b")]  # a gold file that differs
    valid = [
        _session("v-1", "ok thanks", "WHERE  is my parcel"),  # last leaks (case/space), history leaks: 2 turns
        _session("v-2", "a fresh question", "another fresh one"),  # clean
    ]
    test = [
        _session("t-1", "refund please ", "gold only text", target="b"),  # history leaks; last leaks via gold
        _session("t-2", "Still nothing."),  # punctuation differs: not a leak
        _session("t-3", "still\tNOTHING"),  # last leaks (tab, case)
    ]
    sessions = {"train": train, "unlabeled": unlabeled, "valid": valid}
    if with_test:
        sessions["test"] = test
    meta = BundleMeta(name="leaky", market="leaky", languages=("en",))
    return Bundle(meta=meta, intents=INTENTS, single_turn=single, sessions=sessions), gold


def test_normalisation() -> None:
    assert normalise_text("  Still\t NOTHING \n") == "still nothing"
    assert normalise_text("ＡＢＣ") == "abc"  # NFKC: full-width letters
    assert normalise_text("still nothing.") != normalise_text("still nothing")


def test_known_leaks_are_counted() -> None:
    bundle, gold = _bundle()
    assert leaked_eval_turns(bundle, gold) == {
        "leaked_last_valid": 1, "leaked_any_valid": 2, "eval_turns_valid": 4,
        "leaked_last_test": 2, "leaked_any_test": 3, "eval_turns_test": 4,
    }
    without_gold = leaked_eval_turns(bundle)  # "gold only text" is then no training-side text
    assert without_gold["leaked_last_test"] == 1 and without_gold["leaked_any_test"] == 2
    no_test = leaked_eval_turns(_bundle(with_test=False)[0], gold)
    assert no_test["leaked_last_test"] is None and no_test["leaked_any_test"] is None
    assert no_test["leaked_last_valid"] == 1


def test_leak_columns_in_the_stats_table_and_the_cli(tmp_path: Path, capsys) -> None:
    bundle, gold = _bundle()
    row = bundle_stats(bundle, gold)
    assert row["leaked_last"] == "1 / 2" and row["leaked_any"] == "2 / 3"
    table = stats_table([row])
    assert "Leaked last turns (valid / test)" in table and "| 1 / 2 | 2 / 3 |" in table
    no_test = bundle_stats(_bundle(with_test=False)[0])
    assert no_test["leaked_last"] == "1 / –"
    root = write_bundle(bundle, tmp_path / "leaky")
    assert bundle_dir_stats(root)["leaked_last_test"] == 1  # no gold file yet
    write_unlabeled_gold(root, gold)
    assert bundle_dir_stats(root)["leaked_last_test"] == 2  # the gold file is training-side
    assert main(["data", "stats", str(root)]) == 0
    assert "| 1 / 2 | 2 / 3 |" in capsys.readouterr().out
