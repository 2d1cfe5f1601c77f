"""Categories are identified by their path: repeated names at one level and across levels, mixed depths, through
every consumer (bundle reader, HTC levels and coding tree, labels, deploy export and its per-level output)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_sessions, write_tiny_bundle
from test_deploy_export import make_tiny_run

from mtic.data.bundle import read_bundle
from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.labels import LabelSet
from mtic.models.coding_tree import hierarchy_graph, taxonomy_coding_tree
from mtic.models.htc import HTC, leaf_paths

# "Inform" under two parents (one level), "Other" at level 1 and level 2 (across levels), and a two-level intent
# in a three-level taxonomy (padded to Billing > Refund > Refund).
REPEATED = [
    {"id": "hotel_inform", "title": "Inform", "path": ["Hotel", "Inform", "Price"]},
    {"id": "hotel_book", "title": "Book a hotel room", "path": ["Hotel", "Book", "Room"]},
    {"id": "attr_inform", "title": "Inform", "path": ["Attraction", "Inform", "Price"]},
    {"id": "attr_other", "title": "Other question about attractions", "path": ["Attraction", "Other", "Other"]},
    {"id": "other_other", "title": "Anything else", "path": ["Other", "Other", "General"]},
    {"id": "refund", "title": "Ask for a refund", "path": ["Billing", "Refund"]},
]
TEXTS = {
    "hotel_inform": ["how much is the hotel per night", "hotel room price please"],
    "hotel_book": ["book me a room", "i need a hotel room tonight"],
    "attr_inform": ["ticket price for the museum", "how much is the zoo entry"],
    "attr_other": ["is the museum open on monday", "can i bring a dog to the zoo"],
    "other_other": ["hello there", "who are you"],
    "refund": ["i want my money back", "refund my payment"],
}


def write_repeated_bundle(root: Path) -> Path:
    write_tiny_bundle(root)
    (root / "intents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REPEATED), encoding="utf-8")
    (root / "single_turn.jsonl").write_text(
        "".join(json.dumps({"text": t, "intent": i}) + "\n" for i, ts in TEXTS.items() for t in ts), encoding="utf-8")
    sessions = {
        "train": [{"id": f"t{k}", "turns": [{"text": "hi"}, {"text": t, "intent": i}]}
                  for k, (i, t) in enumerate((i, t) for i, ts in TEXTS.items() for t in ts)],
        "test": [{"id": "s1", "turns": [{"text": "museum tickets"}, {"text": "how much for kids", "intent": "attr_inform"}]},
                 {"id": "s2", "turns": [{"text": "money back for my booking", "intent": "refund"}]}],
    }
    write_sessions(root, sessions)
    return root


@pytest.fixture
def repeated(tmp_path: Path) -> Path:
    return write_repeated_bundle(tmp_path / "repeated")


def test_bundle_reader_accepts_repeated_names_and_mixed_depths(repeated: Path) -> None:
    tax = Taxonomy.from_intents(read_bundle(repeated).intents)
    assert tax.depth == 3
    assert tax.levels[0] == ["Attraction", "Billing", "Hotel", "Other"]
    # level 2: Inform twice (Attraction, Hotel), Other twice (Attraction, Other), Refund, Book
    assert sorted(tax.levels[1]) == ["Book", "Inform", "Inform", "Other", "Other", "Refund"]
    assert tax.num_classes == [4, 6, 6]
    # every intent is its own leaf class; the padded intent's leaf is Billing > Refund > Refund
    assert sorted(tax.leaf_intent_ids()) == sorted(TEXTS)
    assert tax.paths["refund"] == ("Billing", "Refund", "Refund")
    assert tax.intent("refund").path == ("Billing", "Refund")  # the bundle's own path is kept
    for intent_id in tax.ids:
        ids = tax.level_ids(intent_id)
        assert tuple(tax.class_path(level, c)[-1] for level, c in enumerate(ids)) == tax.paths[intent_id]
        for level in range(1, tax.depth):  # parents follow the path, not the name
            assert tax.parents[level][ids[level]] == ids[level - 1]
        assert tax.leaf_to_intent(ids[-1]) == intent_id
    hotel, attraction = tax.level_ids("hotel_inform"), tax.level_ids("attr_inform")
    assert hotel[1] != attraction[1] and tax.levels[1][hotel[1]] == tax.levels[1][attraction[1]] == "Inform"


def test_class_ids_unchanged_for_unique_names() -> None:
    """Sorting by name, then path, keeps the ids a name-keyed taxonomy gave (old checkpoints stay valid)."""
    intents = [Intent("a", "t a", ("Z", "b")), Intent("b", "t b", ("A", "c")), Intent("c", "t c", ("Z", "a"))]
    tax = Taxonomy(intents)
    assert tax.levels == [["A", "Z"], ["a", "b", "c"]]
    assert tax.parents == [[-1, -1], [1, 1, 0]]


def test_htc_levels_and_coding_tree(repeated: Path) -> None:
    tax = Taxonomy.from_intents(read_bundle(repeated).intents)
    paths = leaf_paths(tax)
    for leaf, row in enumerate(paths.tolist()):
        assert row == tax.level_ids(tax.leaf_to_intent(leaf))
    nodes, edges = hierarchy_graph(tax)
    assert nodes == sum(tax.num_classes) and len(edges) == sum(tax.num_classes[1:])  # a tree: one parent each
    tree = taxonomy_coding_tree(tax, 2)
    assert tree.layer_sizes[0] == nodes


def test_labels_stay_unique_per_intent(repeated: Path) -> None:
    tax = Taxonomy.from_intents(read_bundle(repeated).intents)
    original = LabelSet(tax, "original")
    assert original.label_of("hotel_inform") == "Inform (Hotel > Inform)"
    assert original.label_of("attr_inform") == "Inform (Attraction > Inform)"
    assert original.label_of("hotel_book") == "Book a hotel room"  # a title of its own is left alone
    compressed = LabelSet(tax, "compressed")
    assert len({label.casefold() for label in compressed.labels}) == len(tax)
    assert compressed.intent_of_exact(compressed.label_of("attr_inform")) == "attr_inform"


def test_htc_trains_and_exports_per_level_paths(repeated: Path, tmp_path: Path) -> None:
    from mtic.deploy.artifact import read_artifact
    from mtic.deploy.export import export_checkpoint
    from mtic.deploy.predictor import IntentClassifier

    ckpt = make_tiny_run(tmp_path, steps=30, bundle=repeated)
    taxonomy = Taxonomy.from_intents(read_bundle(repeated).intents)
    restored = HTC.from_checkpoint(ckpt)
    assert restored.leaf_intents == taxonomy.leaf_intent_ids()
    assert torch.equal(restored.paths, leaf_paths(taxonomy))

    export_checkpoint(ckpt, tmp_path / "export", int8=False)
    artifact = read_artifact(tmp_path / "export")
    assert [i.path for i in artifact.taxonomy.intents] == [tuple(r["path"]) for r in REPEATED]
    assert artifact.spec.levels == [list(level) for level in taxonomy.levels]
    classifier = IntentClassifier.load(tmp_path / "export")
    sessions = [["how much is the hotel per night"], ["refund my payment"]]
    predictions = classifier.predict_batch(sessions)
    probs = classifier.level_probabilities(sessions)
    assert len(predictions) == 2
    for row, prediction in enumerate(predictions):
        padded = taxonomy.paths[prediction.intent]
        assert [lv["path"] for lv in prediction.levels] == [list(padded[: k + 1]) for k in range(3)]
        assert [lv["name"] for lv in prediction.levels] == list(padded)
        # each level reports the probability of the class its path names (not of a same-named class elsewhere)
        assert [lv["probability"] for lv in prediction.levels] == [
            round(float(probs[level][row, cid]), 6) for level, cid in enumerate(taxonomy.level_ids(prediction.intent))]
