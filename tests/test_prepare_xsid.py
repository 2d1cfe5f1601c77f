"""xSID -> one bundle per language, on a small conll fixture (tests/fixtures/xsid) and on the real files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtic.data.bundle import read_bundle, read_unlabeled_gold
from mtic.data.errors import BundleError, MissingBundleFileError
from mtic.data.stats import leaked_eval_turns
from mtic.dataset_factories.prepare import prepare
from mtic.dataset_factories.prepare.xsid import XSIDOptions, build, read_conll

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "xsid"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "xsid"
LANGS = ("en", "id", "zh", "ja", "de")


def test_conll_reading() -> None:
    rows, skipped = read_conll(FIXTURE / "de.valid.conll")
    assert rows[0] == ("wecker auf 7 uhr stellen", "alarm/set_alarm") and len(rows) == 18 and skipped == 0
    assert read_conll(FIXTURE / "en.test.conll")[0][-1] == ("book a sushi restaurant for 3", "BookRestaurant")


def test_paths_titles_labels_and_same_intent_set() -> None:
    en, _ = build(FIXTURE, XSIDOptions(lang="en"))
    de, _ = build(FIXTURE, XSIDOptions(lang="de"))
    assert en.intents == de.intents  # the union over every file: snooze_alarm only occurs in de.test
    by_id = {i.id: i for i in en.intents}
    assert set(by_id) == {"AddToPlaylist", "BookRestaurant", "PlayMusic", "alarm/cancel_alarm", "alarm/set_alarm",
                          "alarm/snooze_alarm", "weather/find"}
    assert by_id["alarm/set_alarm"].path == ("alarm", "set_alarm") and by_id["alarm/set_alarm"].label == "Set Alarm"
    assert by_id["AddToPlaylist"].path == ("music", "AddToPlaylist")
    assert by_id["BookRestaurant"].path == ("restaurant", "BookRestaurant")
    assert by_id["weather/find"].label == "Find Weather"
    assert all(i.title == i.title_en and i.title for i in en.intents)
    assert en.meta.languages == ("en",) and de.meta.market == "xsid_de"


def test_splits_single_turn_from_valid_file_test_sessions_from_test_file() -> None:
    bundle, gold = build(FIXTURE, XSIDOptions(lang="de", valid_share=0.67, n_train=20, n_unlabeled=15, n_valid=5))
    valid_texts = {t for t, _ in read_conll(FIXTURE / "de.valid.conll")[0]}
    test_texts = {t for t, _ in read_conll(FIXTURE / "de.test.conll")[0]}
    single = {q.split: set() for q in bundle.single_turn}
    for q in bundle.single_turn:
        single[q.split].add(q.text)
    # two of the three queries of each of the six intents held out: one single-turn valid, one for valid sessions
    session_valid = valid_texts - single["train"] - single["valid"]
    assert not single["train"] & single["valid"] and len(single["valid"]) == len(session_valid) == 6
    assert bundle.meta.extra["valid_session_queries"] == 6
    assert all(t.text in test_texts for s in bundle.sessions["test"] for t in s.turns)
    assert {t.text for s in bundle.sessions["valid"] for t in s.turns} <= session_valid
    leaks = leaked_eval_turns(bundle, gold)
    assert [leaks[f"leaked_{k}_{s}"] for k in ("last", "any") for s in ("valid", "test")] == [0] * 4
    assert all(t.text in single["train"] for s in bundle.sessions["train"] + gold for t in s.turns)
    assert len(bundle.sessions["test"]) == len(test_texts)  # n_test=None: one session per test query
    assert all(t.intent is None for s in bundle.sessions["test"] for t in s.turns[:-1])
    assert [s.id for s in gold] == [s.id for s in bundle.sessions["unlabeled"]]


def test_deterministic_written_bundle_validates(tmp_path: Path) -> None:
    opts = {"lang": "en", "n_train": 10, "n_unlabeled": 10, "n_valid": 4}
    assert build(FIXTURE, XSIDOptions(**opts)) == build(FIXTURE, XSIDOptions(**opts))
    assert build(FIXTURE, XSIDOptions(seed=1, **opts))[0].sessions != build(FIXTURE, XSIDOptions(**opts))[0].sessions
    root = prepare("xsid", FIXTURE, tmp_path / "b", **opts)
    bundle = read_bundle(root)
    assert len(read_unlabeled_gold(root, {i.id for i in bundle.intents}) or []) == 10


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingBundleFileError, match=r"no xSID valid file for 'fr' \(languages here: de, en\)"):
        build(FIXTURE, XSIDOptions(lang="fr"))
    src = tmp_path / "xsid"
    shutil.copytree(FIXTURE, src)
    path = src / "en.test.conll"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if line != "# intent = weather/find") + "\n")
    with pytest.raises(BundleError, match=r"en.test.conll:\d+: sentence without a '# intent = ...' line"):
        build(src, XSIDOptions(lang="en"))
    path.write_text("\n".join(lines).replace("# text = play rock music", "# text = ") + "\n")
    bundle, _ = build(src, XSIDOptions(lang="en"))  # an empty source text (as in no.valid) is skipped and counted
    assert bundle.meta.extra["skipped_empty_texts"] == 1


def test_repository_layout_is_found(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "xsid" / "data" / "xSID-0.7")
    opts = XSIDOptions(lang="de", n_train=5, n_unlabeled=5, n_valid=2)
    assert build(tmp_path / "xsid", opts) == build(FIXTURE, opts)


@pytest.mark.datasets
def test_real_xsid_languages() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"xSID not available at {SHARED}")
    bundles = {lang: build(SHARED, XSIDOptions(lang=lang, n_train=30, n_unlabeled=30, n_valid=10, n_test=50))[0]
               for lang in LANGS}
    assert len({tuple(b.intents) for b in bundles.values()}) == 1 and len(bundles["en"].intents) == 16
    for lang, bundle in bundles.items():
        trained = {q.intent for q in bundle.single_turn if q.split == "train"}
        assert len(trained) >= (9 if lang == "ja" else 14) and len(bundle.sessions["test"]) == 50, lang
        leaks = leaked_eval_turns(bundle)
        assert leaks["leaked_any_valid"] == leaks["leaked_any_test"] == 0, lang  # test file repeats dropped
        assert {i.path[0] for i in bundle.intents} == {"alarm", "reminder", "weather", "music", "restaurant",
                                                        "creative_work", "movie"}
