"""`mtic data import` (issue 25): a bundle from a user's CSV / TSV / JSONL queries and chat logs, a `datasets`
dataset (offline, local files), an intent list with `>` paths; bad input is one line naming the input file and
line (exit 2); the imported bundle trains (baseline_tfidf)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from mtic.cli import main
from mtic.cli_errors import EXIT_USER_ERROR
from mtic.data.bundle import read_bundle
from mtic.dataset_factories.importer.intents import assign_ids, slug
from mtic.pipelines import run

REPO = Path(__file__).resolve().parents[1]

QUERIES_CSV = """utterance,label
cancel my order pls,Logistics > Order > Cancellation
i want to cancel,Logistics > Order > Cancellation
where is my parcel,Logistics > Delivery > Tracking
track my package,Logistics > Delivery > Tracking
where is my refund,Payment > Refund
refund not in yet,Payment > Refund
"""
# chat logs: turns out of order (idx), one unlabelled session, four labelled ones
CHATS = [
    {"conv_id": "c1", "idx": 1, "utterance": "still nothing", "label": "Logistics > Delivery > Tracking"},
    {"conv_id": "c1", "idx": 0, "utterance": "where is my parcel"},
    {"conv_id": "c2", "idx": 0, "utterance": "cancel it", "label": "Logistics > Order > Cancellation"},
    {"conv_id": "c3", "idx": 0, "utterance": "hi"},
    {"conv_id": "c3", "idx": 1, "utterance": "and the money?"},
    {"conv_id": "c4", "idx": 0, "utterance": "refund pls", "label": "Payment > Refund"},
    {"conv_id": "c5", "idx": 0, "utterance": "hello"},
    {"conv_id": "c5", "idx": 1, "utterance": "track my package", "label": "Logistics > Delivery > Tracking"},
]
MAPPING = ["--text-col", "utterance", "--intent-col", "label", "--session-col", "conv_id", "--turn-col", "idx"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def _ok(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run `mtic data import ...` in-process; it must succeed; its stdout."""
    capsys.readouterr()
    assert main(["data", "import", *argv]) == 0
    return capsys.readouterr().out


def _fails(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run `mtic data import ...` in-process; it must exit 2 with one stderr line; that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["data", "import", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_USER_ERROR and err.count("\n") == 1, err
    return err.strip()


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    queries = tmp_path / "queries.csv"
    queries.write_text(QUERIES_CSV, encoding="utf-8")
    return queries, _write_jsonl(tmp_path / "chats.jsonl", CHATS)


# --------------------------------------------------------------------------- (a) files, column mapping, splits
def test_csv_queries_and_jsonl_logs(inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    queries, chats = inputs
    out = tmp_path / "shop"
    printed = _ok(capsys, str(out), "--queries", str(queries), "--logs", str(chats), *MAPPING,
                  "--test-share", "0.25", "--languages", "en")
    ids = {"Cancellation": "logistics.order.cancellation", "Tracking": "logistics.delivery.tracking",
           "Refund": "payment.refund"}
    assert _jsonl(out / "intents.jsonl") == [
        {"id": ids["Tracking"], "title": "Tracking", "path": ["Logistics", "Delivery", "Tracking"]},
        {"id": ids["Cancellation"], "title": "Cancellation", "path": ["Logistics", "Order", "Cancellation"]},
        {"id": ids["Refund"], "title": "Refund", "path": ["Payment", "Refund"]},
    ]
    single = _jsonl(out / "single_turn.jsonl")
    assert [(q["text"], q["intent"], q["split"]) for q in single][:3] == [
        ("cancel my order pls", ids["Cancellation"], "train"), ("i want to cancel", ids["Cancellation"], "train"),
        ("where is my parcel", ids["Tracking"], "train")]
    assert len(single) == 6
    # c3 has no label on its last turn -> unlabeled; c1's turns ordered by idx, its first turn unlabelled
    assert _jsonl(out / "sessions" / "unlabeled.jsonl") == [
        {"id": "c3", "turns": [{"text": "hi", "intent": None}, {"text": "and the money?", "intent": None}]}]
    train, test = _jsonl(out / "sessions" / "train.jsonl"), _jsonl(out / "sessions" / "test.jsonl")
    assert len(test) == 1 and len(train) == 3          # round(0.25 * 4) labelled sessions to test, seeded
    assert sorted(s["id"] for s in train + test) == ["c1", "c2", "c4", "c5"]
    c1 = next(s for s in train + test if s["id"] == "c1")
    assert c1["turns"] == [{"text": "where is my parcel", "intent": None},
                           {"text": "still nothing", "intent": ids["Tracking"]}]
    assert not (out / "sessions" / "valid.jsonl").exists()
    meta = yaml.safe_load((out / "bundle.yaml").read_text(encoding="utf-8"))
    assert (meta["name"], meta["market"], meta["languages"]) == ("shop", "shop", ["en"])
    assert meta["import"]["test_share"] == 0.25 and meta["import"]["inputs"] == [str(queries), str(chats)]
    # the stats table of the written bundle, and what was decided for the user
    row = next(line for line in printed.splitlines() if line.startswith("| shop |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["shop", "en", "3", "6", "1"]   # market, languages, intents, single-turn train, test
    assert "market: shop (the output directory name; set with --market)" in printed
    assert "languages: en (--languages)" in printed
    assert "intents: 3 from the data's intent values" in printed
    # the same seed draws the same test session; the draw does not depend on the file's row order
    again = tmp_path / "again"
    _write_jsonl(chats, list(reversed(CHATS)))
    _ok(capsys, str(again), "--queries", str(queries), "--logs", str(chats), *MAPPING, "--test-share", "0.25",
        "--languages", "en")
    assert [s["id"] for s in _jsonl(again / "sessions" / "test.jsonl")] == [s["id"] for s in test]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_query_file_formats(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"q": "wo ist mein Paket, bitte", "intent": "track", "split": "train"},
            {"q": 'quoted, "comma" text', "intent": "track", "split": "valid"},
            {"q": "Geld zurück", "intent": "refund", "split": ""}]
    path = tmp_path / f"q{suffix}"
    if suffix == ".jsonl":
        _write_jsonl(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        import csv

        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["q", "intent", "split"], delimiter="," if suffix == ".csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    _ok(capsys, str(tmp_path / "b"), "--queries", str(path), "--text-col", "q", "--split-col", "split",
        "--languages", "de", "--market", "de_shop")
    assert _jsonl(tmp_path / "b" / "single_turn.jsonl") == [
        {"text": "wo ist mein Paket, bitte", "intent": "track", "split": "train"},
        {"text": 'quoted, "comma" text', "intent": "track", "split": "valid"},
        {"text": "Geld zurück", "intent": "refund", "split": "train"}]
    assert read_bundle(tmp_path / "b").meta.market == "de_shop"


def test_split_column_decides_before_shares(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"session_id": f"s{k}", "text": f"query {k}", "intent": "a" if k % 2 else "b",
             "split": {0: "test", 1: "validation", 2: "train"}.get(k, "")} for k in range(12)]
    logs = _write_jsonl(tmp_path / "logs.jsonl", rows)
    out = tmp_path / "b"
    _ok(capsys, str(out), "--logs", str(logs), "--valid-share", "0.2", "--test-share", "0.1", "--seed", "3",
        "--languages", "en")
    test = [s["id"] for s in _jsonl(out / "sessions" / "test.jsonl")]
    valid = [s["id"] for s in _jsonl(out / "sessions" / "valid.jsonl")]
    train = [s["id"] for s in _jsonl(out / "sessions" / "train.jsonl")]
    assert "s0" in test and "s1" in valid and "s2" in train
    # the 9 sessions without a split value: round(0.1 * 9) = 1 more test, round(0.2 * 9) = 2 more valid
    assert (len(test), len(valid), len(train)) == (2, 3, 7)
    assert sorted(test + valid + train, key=lambda s: int(s[1:])) == [f"s{k}" for k in range(12)]


# --------------------------------------------------------------------------- (c) intents
def test_intent_list_with_ids_titles_and_lookup(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    intents = tmp_path / "intents.txt"
    intents.write_text("# shop intents\nLogistics > Order > Cancellation\tcancel\tRequest to cancel an order\n"
                       "Logistics > Delivery > Tracking\n\nPayment>Refund\t\tAsk about a refund\n"
                       "Hotel > Inform\nAttraction > Inform\n", encoding="utf-8")
    queries = tmp_path / "q.csv"
    queries.write_text("text,intent\ncancel pls,cancel\nwhere is it,logistics>delivery>TRACKING\n"
                       "money back?,ask about a refund\ntrack it,Tracking\nhotel info,Hotel > Inform\n",
                       encoding="utf-8")
    out = tmp_path / "b"
    printed = _ok(capsys, str(out), "--queries", str(queries), "--intents", str(intents), "--languages", "en")
    assert _jsonl(out / "intents.jsonl") == [
        {"id": "cancel", "title": "Request to cancel an order", "path": ["Logistics", "Order", "Cancellation"]},
        {"id": "logistics.delivery.tracking", "title": "Tracking", "path": ["Logistics", "Delivery", "Tracking"]},
        {"id": "payment.refund", "title": "Ask about a refund", "path": ["Payment", "Refund"]},
        {"id": "hotel.inform", "title": "Inform", "path": ["Hotel", "Inform"]},
        {"id": "attraction.inform", "title": "Inform", "path": ["Attraction", "Inform"]},
    ]
    assert [q["intent"] for q in _jsonl(out / "single_turn.jsonl")] == [
        "cancel", "logistics.delivery.tracking", "payment.refund", "logistics.delivery.tracking", "hotel.inform"]
    assert f"intents: 5 from the intent list {intents}" in printed
    # a leaf two intents share names neither; an intent the list lacks is an error at the query's line
    queries.write_text("text,intent\ncancel pls,cancel\nsome info,Inform\n", encoding="utf-8")
    err = _fails(capsys, str(tmp_path / "c"), "--queries", str(queries), "--intents", str(intents), "--languages", "en")
    assert err.startswith(f"error: {queries}:3: intent 'Inform' is the title or leaf of several intents")
    queries.write_text("text,intent\ncancel pls,cancel\nhello,Greeting\n", encoding="utf-8")
    err = _fails(capsys, str(tmp_path / "c"), "--queries", str(queries), "--intents", str(intents), "--languages", "en")
    assert err.startswith(f"error: {queries}:3: intent 'Greeting' is not in the intent list {intents}")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_intent_list_records(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    intents = tmp_path / f"intents{suffix}"
    if suffix == ".jsonl":
        _write_jsonl(intents, [{"path": ["Order", "Cancel"], "id": "c1", "title": "取消订单", "title_en": "Cancel order",
                                "label": "取消"}, {"path": "Order > Status"}])
    else:
        intents.write_text("path\tid\ttitle\ttitle_en\tlabel\nOrder > Cancel\tc1\t取消订单\tCancel order\t取消\n"
                           "Order > Status\t\t\t\t\n", encoding="utf-8")
    queries = _write_jsonl(tmp_path / "q.jsonl", [{"text": "我要取消订单", "intent": "c1"},
                                                   {"text": "订单状态", "intent": "Order > Status"}])
    printed = _ok(capsys, str(tmp_path / "b"), "--queries", str(queries), "--intents", str(intents))
    assert _jsonl(tmp_path / "b" / "intents.jsonl") == [
        {"id": "c1", "title": "取消订单", "path": ["Order", "Cancel"], "title_en": "Cancel order", "label": "取消"},
        {"id": "order.status", "title": "Status", "path": ["Order", "Status"]}]
    # no --languages: guessed from the scripts, and the output says so
    assert read_bundle(tmp_path / "b").meta.languages == ("zh",)
    assert "languages: zh (guessed from the texts' scripts: zh 100%; set with --languages)" in printed


def test_intents_from_values_are_slugged_stably(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    queries = _write_jsonl(tmp_path / "q.jsonl", [
        {"text": "where is my card", "intent": "card_arrival"}, {"text": "card not here", "intent": "Card Arrival"},
        {"text": "lost it", "intent": "Cards > Lost or stolen"}, {"text": "stolen", "intent": "Cards>Lost or stolen"}])
    _ok(capsys, str(tmp_path / "b"), "--queries", str(queries), "--languages", "en")
    intents = _jsonl(tmp_path / "b" / "intents.jsonl")
    by_path = {tuple(i["path"]): i for i in intents}
    assert set(by_path) == {("Card Arrival",), ("Cards", "Lost or stolen"), ("card_arrival",)}
    assert by_path[("Cards", "Lost or stolen")] == {"id": "cards.lost_or_stolen", "title": "Lost or stolen",
                                                    "path": ["Cards", "Lost or stolen"]}
    # two values with one slug: both get a suffix from their own value, so neither id depends on the other's order
    clash = {by_path[("Card Arrival",)]["id"], by_path[("card_arrival",)]["id"]}
    assert len(clash) == 2 and all(i.startswith("card_arrival-") and len(i) == len("card_arrival-") + 6 for i in clash)
    assert assign_ids([("card_arrival",), ("Card Arrival",)]) == assign_ids([("Card Arrival",), ("card_arrival",)])
    assert [q["intent"] for q in _jsonl(tmp_path / "b" / "single_turn.jsonl")][2:] == ["cards.lost_or_stolen"] * 2
    assert slug("Ödeme  Durumu!") == "ödeme_durumu" and slug("退款 / 状态") == "退款_状态"


# --------------------------------------------------------------------------- bad input: one line naming file:line
BAD_INPUTS = [
    ("q.csv", "utterance,intent\nhi,greet\n", [], "q.csv:1: missing column 'text' (columns: utterance, intent)"),
    ("q.csv", "text,intent\nhi,greet\n  ,greet\n", [], "q.csv:3: empty text in column 'text'"),
    ("q.csv", "text,intent\nhi,greet\nbye,\n", [], "q.csv:3: empty intent in column 'intent'"),
    ("q.csv", "text,intent\nhi,greet,extra\n", [], "q.csv:2: 3 fields where the header has 2"),
    ("q.csv", "text,intent,split\nhi,greet,test\n", [], "q.csv:2: a single-turn query cannot be a test query"),
    ("q.csv", "text,intent,split\nhi,greet,holdout\n", [], "q.csv:2: unknown split 'holdout'"),
    ("q.jsonl", '{"text": "hi", "intent": "greet"}\n{"text": 5, "intent": "greet"}\n', [],
     "q.jsonl:2: 'text' must be a text, got 5"),
    ("q.jsonl", '{"text": "hi", "intent": "greet"}\n{"text": "hi", "intent": "greet"\n', [],
     "q.jsonl:2: malformed JSON"),
    ("l.jsonl", ('{"session_id": "a", "turn": 1, "text": "x", "intent": "greet"}\n'
                '{"session_id": "a", "turn": 1, "text": "y", "intent": "greet"}\n'), [],
     "l.jsonl:2: duplicate turn 1 of session 'a' (first on line 1)"),
    ("l.jsonl", '{"session_id": "a", "turn": "first", "text": "x", "intent": "greet"}\n', [],
     "l.jsonl:1: 'turn' must be a number"),
    ("l.jsonl", ('{"session_id": "a", "text": "x", "intent": "greet", "split": "test"}\n'
                '{"session_id": "a", "text": "y", "split": "test"}\n'), [],
     "l.jsonl:2: session 'a' is in the test split but its last turn has no intent (the target)"),
    ("l.jsonl", ('{"session_id": "a", "text": "x", "intent": "greet", "split": "train"}\n'
                '{"session_id": "a", "text": "y", "intent": "greet", "split": "test"}\n'), [],
     "l.jsonl:2: session 'a' is in the test split here but in the train split on line 1"),
    ("l.csv", "text,intent\nhi,greet\n", [], "l.csv:1: missing column 'session_id'"),
    ("l.csv", "session_id,text,intent\na,hi,greet\n", ["--turn-col", "idx"], "l.csv:1: missing column 'idx'"),
    ("q.txt", "text,intent\nhi,greet\n", [], "q.txt: unknown file type"),
]


@pytest.mark.parametrize(("name", "content", "flags", "reason"), BAD_INPUTS,
                         ids=[reason.split(": ", 1)[1][:40] for *_, reason in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_input(name: str, content: str, flags: list[str], reason: str,
                                                tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    kind = "--logs" if name.startswith("l.") else "--queries"
    err = _fails(capsys, str(tmp_path / "out"), kind, str(path), *flags, "--languages", "en")
    assert err.startswith(f"error: {tmp_path}/{reason}"), err
    assert not (tmp_path / "out").exists()


def test_a_session_split_over_two_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = _write_jsonl(tmp_path / "a.jsonl", [{"session_id": "s", "text": "hi", "intent": "greet"}])
    second = _write_jsonl(tmp_path / "b.jsonl", [{"session_id": "t", "text": "yo"}, {"session_id": "s", "text": "x"}])
    err = _fails(capsys, str(tmp_path / "out"), "--logs", str(first), "--logs", str(second), "--languages", "en")
    assert err == f"error: {second}:2: session 's' is also in {first} (line 1); a session's turns come from one input"


def test_output_directory_rules(inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    queries, _ = inputs
    out = tmp_path / "b"
    out.mkdir()  # an empty directory is a fine target
    _ok(capsys, str(out), "--queries", str(queries), "--text-col", "utterance", "--intent-col", "label",
        "--languages", "en")
    assert _fails(capsys, str(out), "--queries", str(queries), "--languages", "en") == \
        f"error: {out}: already holds a bundle; pass --overwrite to replace it"
    _ok(capsys, str(out), "--queries", str(queries), "--text-col", "utterance", "--intent-col", "label",
        "--languages", "en,ms", "--overwrite")
    assert read_bundle(out).meta.languages == ("en", "ms")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    err = _fails(capsys, str(other), "--queries", str(queries), "--overwrite", "--languages", "en")
    assert err.startswith(f"error: {other}: is a non-empty directory without bundle.yaml")
    assert (other / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_languages_that_cannot_be_guessed_are_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    queries = tmp_path / "q.csv"
    queries.write_text("text,intent\nmau batalin pesanan,batal\nbarang belum sampai,lacak\n", encoding="utf-8")
    err = _fails(capsys, str(tmp_path / "b"), "--queries", str(queries))
    assert err == ("error: --languages: cannot guess the language of the texts (100% in Latin script, not English "
                   "or Vietnamese); pass --languages, e.g. --languages id,en")
    _ok(capsys, str(tmp_path / "b"), "--queries", str(queries), "--languages", "id")
    assert read_bundle(tmp_path / "b").meta.languages == ("id",)


def test_written_bundle_is_validated(inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle written is read back with read_bundle: a fault there is its file:line (here a query whose intent
    a broken build left out of intents.jsonl)."""
    from mtic.dataset_factories import importer

    real = importer.build

    def broken(options: importer.ImportOptions) -> tuple:
        bundle, notes = real(options)
        bundle.intents = bundle.intents[1:]
        return bundle, notes

    monkeypatch.setattr(importer, "build", broken)
    queries, _ = inputs
    out = tmp_path / "b"
    err = _fails(capsys, str(out), "--queries", str(queries), "--text-col", "utterance", "--intent-col", "label",
                 "--languages", "en")
    assert err == f"error: {out}/single_turn.jsonl:3: unknown intent id 'logistics.delivery.tracking' (not in intents.jsonl)"


@pytest.mark.parametrize(("flags", "reason"), [
    (["--test-share", "1.5"], "--test-share must be in [0, 1], got 1.5"),
    (["--test-share", "0.6", "--valid-share", "0.5"], "--test-share + --valid-share must be at most 1"),
    (["--split-col", "fold"], "no input has a value in the split column 'fold' (--split-col)"),
    (["--languages", " , "], "--languages: give language codes separated by commas"),
])
def test_bad_flags(flags: list[str], reason: str, inputs: tuple[Path, Path], tmp_path: Path,
                   capsys: pytest.CaptureFixture) -> None:
    _, chats = inputs
    err = _fails(capsys, str(tmp_path / "b"), "--logs", str(chats), *MAPPING, *flags)
    assert err.startswith("error: ") and reason in err, err


def test_every_labelled_log_to_test(inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--test-share 1: labelled chat logs are the evaluation set (a label-free method trains on the rest)."""
    queries, chats = inputs
    _ok(capsys, str(tmp_path / "b"), "--queries", str(queries), "--logs", str(chats), *MAPPING, "--test-share", "1",
        "--languages", "en")
    assert [s["id"] for s in _jsonl(tmp_path / "b" / "sessions" / "test.jsonl")] == ["c1", "c2", "c4", "c5"]
    assert sorted(p.name for p in (tmp_path / "b" / "sessions").iterdir()) == ["test.jsonl", "unlabeled.jsonl"]


# --------------------------------------------------------------------------- (b) a dataset through `datasets`
def test_local_datasets_folder_as_chat_logs(tmp_path: Path) -> None:
    """`--dataset DIR` (a folder of CSV files, loaded by `datasets.load_dataset`) offline: rows with the session
    column are chat logs; `--split` picks the file."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.csv").write_text("conv,pos,msg,label\nd1,2,ok thanks,Payment > Refund\nd1,1,where is my refund,"
                                      "Payment > Refund\nd2,1,hello,\n", encoding="utf-8")
    (folder / "test.csv").write_text("conv,pos,msg,label\nx9,1,refund pls,Payment > Refund\n", encoding="utf-8")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "b"
    done = subprocess.run([sys.executable, "-m", "mtic.cli", "data", "import", str(out), "--dataset", str(folder),
                           "--split", "train", "--text-col", "msg", "--intent-col", "label", "--session-col", "conv",
                           "--turn-col", "pos", "--languages", "en"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _jsonl(out / "sessions" / "train.jsonl") == [
        {"id": "d1", "turns": [{"text": "where is my refund", "intent": "payment.refund"},
                               {"text": "ok thanks", "intent": "payment.refund"}]}]
    assert _jsonl(out / "sessions" / "unlabeled.jsonl") == [{"id": "d2", "turns": [{"text": "hello", "intent": None}]}]
    assert f"{folder}[train]" in yaml.safe_load((out / "bundle.yaml").read_text(encoding="utf-8"))["import"]["inputs"]
    bad = subprocess.run([sys.executable, "-m", "mtic.cli", "data", "import", str(tmp_path / "c"), "--dataset",
                          str(folder), "--split", "test", "--languages", "en"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == EXIT_USER_ERROR
    assert bad.stderr.strip().splitlines()[-1] == f"error: {folder}[test]: missing column 'text' (columns: conv, pos, " \
                                                  "msg, label); map yours with --text-col/--intent-col/--session-col/--turn-col"


def test_saved_dataset_with_class_labels(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A `save_to_disk` folder whose intent column is a ClassLabel (as the hub's intent datasets): names, not codes;
    no session column: single-turn queries."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["card_arrival", "lost_card"])})
    rows = {"text": ["where is my card", "i lost my card", "card still not here", "no label"], "label": [0, 1, 0, -1]}
    DatasetDict(train=Dataset.from_dict(rows, features=features)).save_to_disk(str(tmp_path / "saved"))
    err = _fails(capsys, str(tmp_path / "b"), "--dataset", str(tmp_path / "saved"), "--intent-col", "label",
                 "--languages", "en")
    assert err == f"error: {tmp_path / 'saved'}[train]:4: empty intent in column 'label'"
    DatasetDict(train=Dataset.from_dict({k: v[:3] for k, v in rows.items()}, features=features)).save_to_disk(
        str(tmp_path / "saved3"))
    _ok(capsys, str(tmp_path / "b"), "--dataset", str(tmp_path / "saved3"), "--intent-col", "label", "--languages", "en")
    assert _jsonl(tmp_path / "b" / "single_turn.jsonl") == [
        {"text": "where is my card", "intent": "card_arrival", "split": "train"},
        {"text": "i lost my card", "intent": "lost_card", "split": "train"},
        {"text": "card still not here", "intent": "card_arrival", "split": "train"}]


def test_load_dataset_builder_and_single_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--dataset json --data-files FILE` and `--dataset FILE.parquet` go through `datasets.load_dataset` (offline,
    its Arrow cache under tmp_path): chat logs mapped by the column flags; a bad row names the data file and row."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    chats = _write_jsonl(tmp_path / "chats.jsonl", CHATS)
    out = tmp_path / "b"
    _ok(capsys, str(out), "--dataset", "json", "--data-files", str(chats), *MAPPING, "--languages", "en")
    assert [s["id"] for s in _jsonl(out / "sessions" / "train.jsonl")] == ["c1", "c2", "c4", "c5"]
    assert _jsonl(out / "sessions" / "unlabeled.jsonl")[0]["turns"] == [{"text": "hi", "intent": None},
                                                                        {"text": "and the money?", "intent": None}]
    c1 = _jsonl(out / "sessions" / "train.jsonl")[0]
    assert [t["text"] for t in c1["turns"]] == ["where is my parcel", "still nothing"]  # ordered by idx
    assert (tmp_path / "hf").is_dir()  # load_dataset built its Arrow cache there
    _write_jsonl(chats, [*CHATS, {"conv_id": "c6", "idx": 0, "utterance": "  ", "label": "Payment > Refund"}])
    err = _fails(capsys, str(tmp_path / "c"), "--dataset", "json", "--data-files", str(chats), *MAPPING,
                 "--languages", "en")
    assert err.startswith(f"error: {chats}[train]:{len(CHATS) + 1}: ") and "utterance" in err, err
    queries = tmp_path / "queries.parquet"
    datasets.Dataset.from_dict({"text": ["where is my refund", "cancel it pls"],
                                "intent": ["Payment > Refund", "Order > Cancel"]}).to_parquet(str(queries))
    _ok(capsys, str(tmp_path / "q"), "--dataset", str(queries), "--languages", "en")
    assert _jsonl(tmp_path / "q" / "single_turn.jsonl") == [
        {"text": "where is my refund", "intent": "payment.refund", "split": "train"},
        {"text": "cancel it pls", "intent": "order.cancel", "split": "train"}]
    unknown = tmp_path / "chats.txt"
    unknown.write_text("where is my refund\n", encoding="utf-8")
    err = _fails(capsys, str(tmp_path / "r"), "--dataset", str(unknown), "--languages", "en")
    assert err.startswith(f"error: {unknown}: a data file is read by its suffix (.parquet, .arrow, "), err


# --------------------------------------------------------------------------- the imported bundle trains
def test_imported_csv_bundle_trains(inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """baseline_tfidf on the imported bundle (market.bundle=DIR): the market and languages come from its
    bundle.yaml, every test session is scored, and test targets that are training queries come back right."""
    queries, _ = inputs
    logs = tmp_path / "test_logs.csv"
    logs.write_text("conv_id,utterance,label,split\nt1,hello,,test\nt1,where is my refund,Payment > Refund,test\n"
                    "t2,cancel my order pls,Logistics > Order > Cancellation,test\nt3,track my package,"
                    "Logistics > Delivery > Tracking,test\n", encoding="utf-8")
    bundle = tmp_path / "shop"
    _ok(capsys, str(bundle), "--queries", str(queries), "--logs", str(logs), "--text-col", "utterance",
        "--intent-col", "label", "--session-col", "conv_id", "--split-col", "split", "--languages", "en")
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=baseline_tfidf", "data=last_query",
                                                       f"market.bundle={bundle}", f"paths.run_dir={run_dir}"])
    metrics = run(cfg)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    predictions = _jsonl(run_dir / "predictions.jsonl")
    assert results["market"] == "shop" and results["languages"] == ["en"]
    assert results["test_size"] == 3 and results["train_size"] == 6
    assert [(p["session_id"], p["target"]) for p in predictions] == [
        ("t1", "payment.refund"), ("t2", "logistics.order.cancellation"), ("t3", "logistics.delivery.tracking")]
    assert metrics["test/acc"] == 1.0 and all(p["intent"] == p["target"] for p in predictions)
