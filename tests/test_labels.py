"""mtic.labels: target label sets, label compression and its file, output -> intent matching (no models)."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.labels import (
    MATCH_METHODS,
    TARGET_KINDS,
    CompressionFileError,
    LabelSet,
    LabelSetError,
    OutputMatcher,
    TargetKind,
    compress_labels,
    load_compression,
    output_matcher,
    parse_summary_answer,
    save_compression,
    symbolic_labels,
    unmatched_rate,
)
from mtic.labels.chooser import LabelChooser
from mtic.labels.compress import Candidate, resolve_collisions

CURATED_FIRST = LabelChooser(force="curated")  # the bundle's curated labels where present (labels=curated)

KB = Path(__file__).resolve().parents[1] / "mtic" / "dataset_factories" / "demo" / "knowledge_base.json"


# -- helpers -----------------------------------------------------------------------------------------------------
def toy_embed(texts: list[str], dim: int = 512) -> np.ndarray:
    """Bag of hashed words + character trigrams per word (each word a unit vector), L2-normalised rows."""
    out = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
        for word in text.lower().split():
            vec = np.zeros(dim)
            padded = f"<{word}>"
            for feat in [f"w:{word}"] + [padded[k : k + 3] for k in range(len(padded) - 2)]:
                vec[zlib.crc32(feat.encode()) % dim] += 1.0
            out[row] += vec / np.linalg.norm(vec)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def count_tokens(text: str) -> int:
    return len(text.split())


class CountingEmbed:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return toy_embed(texts)


def kb_taxonomy(with_labels: bool = False) -> Taxonomy:
    rows = json.loads(KB.read_text(encoding="utf-8"))["intents"]
    return Taxonomy.from_intents(
        [
            Intent(r["id"], r["title_en"], tuple(r["path"]), r["title_en"], r["label"] if with_labels else None)
            for r in rows
        ]
    )


def small_taxonomy(**labels: str) -> Taxonomy:
    intents = [
        ("cancel", "Request to cancel an order that has already been placed", ("Order", "Cancel Order")),
        ("refund", "Ask about the status and timing of a refund", ("Payment", "Refund Status")),
        ("warranty", "Ask how to claim the warranty of a product", ("Product", "Warranty Claim")),
        ("track", "Ask about the current status and location of a parcel delivery", ("Logistics", "Delivery Status")),
    ]
    return Taxonomy.from_intents([Intent(i, t, p, label=labels.get(i)) for i, t, p in intents])


# -- target kinds ------------------------------------------------------------------------------------------------
def test_target_kinds_in_one_place() -> None:
    assert TARGET_KINDS == ("original", "compressed", "symbolic", "summary")
    assert TargetKind.parse("Compressed") is TargetKind.COMPRESSED
    assert f"{TargetKind.SUMMARY}" == "summary" and TargetKind.SYMBOLIC == "symbolic"
    with pytest.raises(ValueError, match="original"):
        TargetKind.parse("verbose")


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_every_kind_gives_unique_labels(kind: str) -> None:
    tax = kb_taxonomy(with_labels=True)
    labels = LabelSet.from_taxonomy(tax, target=kind)
    assert len(labels) == len(tax) == len(set(map(str.lower, labels.labels)))
    for intent_id in tax.ids:
        assert labels.intent_of_exact(labels.label_of(intent_id)) == intent_id
        assert labels.intent_of_exact(f"  {labels.label_of(intent_id).upper()} . ") == intent_id
    assert labels.intent_of_exact("no such label at all") is None


def test_original_and_compressed_sources() -> None:
    tax = kb_taxonomy(with_labels=True)
    original = LabelSet(tax, "original")
    assert original.label_of("order.cancellation.cancel") == "Request to cancel an order that has already been placed"
    compressed = LabelSet(tax, "compressed", chooser=CURATED_FIRST)
    assert compressed.label_of("order.cancellation.cancel") == "Cancel Order"
    assert set(compressed.sources.values()) == {"curated"}
    chosen = LabelSet(tax, "compressed")  # the objective: curated labels compete with extractive candidates
    assert set(chosen.sources.values()) <= {"curated", "extractive"}
    assert chosen.report()["sources"] == {s: list(chosen.sources.values()).count(s) for s in set(chosen.sources.values())}


def test_duplicate_labels_are_a_clear_error() -> None:
    tax = small_taxonomy(cancel="Cancel Order", refund="cancel order")
    with pytest.raises(ValueError, match="cancel, refund all compress to 'Cancel Order'"):
        LabelSet(tax, "compressed", chooser=CURATED_FIRST)
    with pytest.raises(LabelSetError, match=r"cancel \(file\) and refund \(file\) would share"):
        LabelSet(small_taxonomy(), "compressed", compressed={"cancel": "Same Label", "refund": "same  label"})
    twins = Taxonomy.from_intents([Intent("a", "Same title", ("X", "A")), Intent("b", "Same title", ("X", "B"))])
    assert LabelSet(twins, "original").labels == ["Same title (X > A)", "Same title (X > B)"]  # qualified, not shared


def test_extractive_fallback_avoids_curated_labels() -> None:
    tax = small_taxonomy(refund="Cancel Order")  # the curated label of refund is what cancel would compress to
    labels = LabelSet(tax, "compressed", chooser=CURATED_FIRST)
    assert labels.sources == {"cancel": "extractive", "refund": "curated", "warranty": "extractive", "track": "extractive"}
    assert labels.label_of("cancel").lower() != "cancel order"
    assert set(labels.label_of("cancel").lower().split()) <= set(tax.title("cancel").lower().split())
    free = LabelSet(small_taxonomy(), "compressed", chooser=CURATED_FIRST)
    assert free.label_of("cancel") == "Cancel Order"  # when it is free


def test_symbolic_labels_are_deterministic_and_unique() -> None:
    tax = kb_taxonomy()
    first, again = LabelSet(tax, "symbolic", seed=3), LabelSet(tax, "symbolic", seed=3)
    assert first.as_dict() == again.as_dict()
    assert len(set(first.labels)) == len(tax)
    assert LabelSet(tax, "symbolic", seed=4).as_dict() != first.as_dict()
    # a label does not depend on the order of the intents
    shuffled = symbolic_labels(list(reversed(tax.ids)), seed=3, avoid=["order", "note"])
    assert len(set(shuffled.values())) == len(tax) and set(shuffled) == set(tax.ids)
    assert symbolic_labels(tax.ids, seed=3) == symbolic_labels(list(reversed(tax.ids)), seed=3)
    # meaningless: no symbol shares a word with its title
    for intent_id, label in first.as_dict().items():
        assert not set(label.lower().split()) & set(tax.title(intent_id).lower().split())
    index = LabelSet(tax, "symbolic", symbols="index")
    assert sorted(index.labels, key=lambda s: int(s.split()[1])) == [f"Label {k}" for k in range(1, len(tax) + 1)]
    with pytest.raises(ValueError, match="pseudoword"):
        symbolic_labels(tax.ids, style="emoji")


def test_cross_lingual_switch_picks_english() -> None:
    tax = Taxonomy.from_intents(
        [
            Intent("cancel", "Minta batalkan pesanan yang sudah dibuat", ("Order", "Cancel"), "Request to cancel an order"),
            Intent("refund", "Tanya status pengembalian dana", ("Payment", "Refund"), "Ask about the status of a refund"),
            Intent("other", "Kirim masukan aplikasi", ("Other", "Feedback"), label="Masukan"),  # no English title
            Intent("track", "Lacak paket", ("Logistics", "Track"), "Track a parcel", label="Lacak Paket",
                   label_en="Track Parcel"),
        ]
    )
    assert LabelSet(tax, "original", cross_lingual=True).label_of("cancel") == "Request to cancel an order"
    assert LabelSet(tax, "original").label_of("cancel") == "Minta batalkan pesanan yang sudah dibuat"
    assert LabelSet(tax, "original", cross_lingual=True).label_of("other") == "Kirim masukan aplikasi"
    english = LabelSet(tax, "compressed", cross_lingual=True, chooser=CURATED_FIRST)
    local = LabelSet(tax, "compressed", chooser=CURATED_FIRST)
    assert set(english.label_of("cancel").lower().split()) <= {"cancel", "order"}
    assert set(local.label_of("cancel").lower().split()) <= {"minta", "batalkan", "pesanan", "dibuat"}
    # curated labels: `label` in the title's language, `label_en` for cross-lingual labels
    assert (english.label_of("track"), local.label_of("track")) == ("Track Parcel", "Lacak Paket")
    assert english.label_of("other") == local.label_of("other") == "Masukan"  # no English at all: the only label
    assert LabelSet(tax, "summary", cross_lingual=True).label_of("refund") == "Ask about the status of a refund"


def test_summary_answer_round_trip() -> None:
    labels = LabelSet(kb_taxonomy(), "summary")
    answer = labels.summary_answer("cancelling an order placed yesterday.", "order.cancellation.cancel")
    assert answer == (
        "You are asking about cancelling an order placed yesterday. So, the intent title is "
        "Request to cancel an order that has already been placed"
    )
    assert parse_summary_answer(answer) == labels.label_of("order.cancellation.cancel")
    assert labels.intent_of_exact(answer) == "order.cancellation.cancel"
    assert parse_summary_answer("no phrase here.") == "no phrase here"
    assert parse_summary_answer("") == "" and parse_summary_answer(None) == ""


def test_from_taxonomy_matches_the_labels_config() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "labels" / "compressed.yaml"
    assert conf.is_file(), f"{conf} is missing: the default labels config (conf/config.yaml) must exist"
    # as the pipeline calls it: Hydra turns the Taxonomy dataclass into a config on the way, LabelSet turns it back
    node = OmegaConf.merge(OmegaConf.load(conf), {"encoder": "minilm-l6", "tokenizer": None, "cache_dir": None})
    labels = instantiate(node, taxonomy=kb_taxonomy(with_labels=True))
    assert isinstance(labels, LabelSet) and labels.kind is TargetKind.COMPRESSED
    assert labels.chooser is not None and labels.chooser.proposers == ("curated", "extractive")
    assert isinstance(labels.taxonomy, Taxonomy) and len(labels) == len(kb_taxonomy())
    forced = instantiate(OmegaConf.merge(node, {"force": "curated"}), taxonomy=kb_taxonomy(with_labels=True))
    assert forced.label_of("order.cancellation.cancel") == "Cancel Order"


# -- compression -------------------------------------------------------------------------------------------------
def test_compression_is_shorter_and_keeps_key_words() -> None:
    tax = kb_taxonomy()
    choices = compress_labels(tax, toy_embed, count_tokens)
    assert set(choices) == set(tax.ids)
    assert len({c.label.lower() for c in choices.values()}) == len(tax)
    for intent_id, choice in choices.items():
        title_words = tax.title(intent_id).lower().replace("(", " ").replace(")", " ").split()
        assert count_tokens(choice.label) < count_tokens(tax.title(intent_id))
        assert set(choice.label.lower().split()) <= set(title_words)  # extractive
        assert choice.candidates_considered >= 1 and -1 <= choice.similarity <= 1
    expected = {
        "order.cancellation.cancel": {"cancel", "order"},
        "product.warranty.claim": {"warranty"},
        "payment.refund.status": {"refund"},
    }
    for intent_id, words in expected.items():
        assert words <= set(choices[intent_id].label.lower().split()), choices[intent_id]


def test_alpha_trades_length_for_meaning() -> None:
    tax = kb_taxonomy()
    short = compress_labels(tax, toy_embed, count_tokens, alpha=2.0)
    long = compress_labels(tax, toy_embed, count_tokens, alpha=0.2)
    assert np.mean([c.tokens for c in short.values()]) < np.mean([c.tokens for c in long.values()])


def test_collisions_move_the_intent_that_loses_least() -> None:
    def opt(label: str, cost: float) -> Candidate:
        return Candidate(label, cost, 1 - cost, 1, "extractive")

    ranked = {"a": [opt("X", 0.1), opt("Y", 0.5)], "b": [opt("X", 0.2), opt("Z", 0.25)]}
    pick = resolve_collisions(ranked, ["a", "b"])
    assert (ranked["a"][pick["a"]].label, ranked["b"][pick["b"]].label) == ("X", "Z")
    # a reserved label is never chosen
    pick = resolve_collisions(ranked, ["a", "b"], reserved=["x"])
    assert {ranked[i][pick[i]].label for i in "ab"} == {"Y", "Z"}
    with pytest.raises(ValueError, match="no other candidate"):
        resolve_collisions({"a": [opt("X", 0.1)], "b": [opt("X", 0.2)]}, ["a", "b"])


def test_identical_titles_get_distinct_labels() -> None:
    tax = Taxonomy.from_intents(
        [Intent(i, "Request to cancel an order", ("Order", i)) for i in ("first", "second", "third")]
    )
    choices = compress_labels(tax, toy_embed, count_tokens)
    labels = [choices[i].label for i in tax.ids]
    assert len(set(labels)) == 3
    # a shared title is compressed with its category path, so each intent has words of its own to choose from
    assert [choices[i].title for i in tax.ids] == [f"Request to cancel an order (Order > {i})" for i in tax.ids]


def test_llm_candidates_are_considered() -> None:
    tax = small_taxonomy()

    # one usable proposal, one near-copy of the title, an empty one and one longer than the title
    answers = ['"Order Cancellation."', "cancel an order that has already been placed", "", "x " * 40]
    proposed = {"cancel": [(a, "llm") for a in answers]}
    plain = compress_labels(tax, toy_embed, count_tokens, ids=["cancel"])["cancel"]
    helped = compress_labels(tax, toy_embed, count_tokens, proposed=proposed, alpha=0.0, ids=["cancel"])["cancel"]
    assert helped.candidates_considered == plain.candidates_considered + 2
    assert helped.source == "llm" and helped.label == "cancel an order that has already been placed"


def test_spaceless_titles_give_character_spans() -> None:
    tax = Taxonomy.from_intents(
        [
            Intent("cancel", "詢問如何取消已經下單的訂單", ("Order", "Cancel"), "Ask how to cancel a placed order"),
            Intent("track", "詢問包裹目前在哪裡", ("Logistics", "Track")),
        ]
    )
    local = compress_labels(tax, toy_embed, lambda s: len(s.replace(" ", "")))
    for intent_id, choice in local.items():
        assert choice.label in tax.title(intent_id) or all(ch in tax.title(intent_id) for ch in choice.label)
        assert len(choice.label) < len(tax.title(intent_id))
    english = compress_labels(tax, toy_embed, count_tokens, english=True, ids=["cancel"])
    assert set(english["cancel"].label.lower().split()) <= {"cancel", "placed", "order"}


def test_compression_file_round_trip_and_user_edit(tmp_path: Path) -> None:
    tax = small_taxonomy()
    choices = compress_labels(tax, toy_embed, count_tokens)
    path = save_compression(tmp_path / "compression.jsonl", choices)
    assert load_compression(path, tax) == {i: c.label for i, c in choices.items()}
    rows = path.read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("#") and {"id", "title", "label", "score"} <= set(json.loads(rows[1]))
    edited = [json.loads(r) if not r.startswith("#") else r for r in rows]
    edited[1]["label"] = "Scrap My Order"  # a reviewer's edit
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in edited) + "\n", encoding="utf-8")
    labels = LabelSet.from_taxonomy(tax, target="compressed", compression_file=str(path))
    assert labels.label_of(edited[1]["id"]) == "Scrap My Order"
    assert labels.sources[edited[1]["id"]] == "file"
    assert labels.intent_of_exact("scrap my order") == edited[1]["id"]


def test_compression_file_errors_name_file_and_line(tmp_path: Path) -> None:
    tax = small_taxonomy()
    path = tmp_path / "labels.jsonl"
    rows = [
        {"id": "cancel", "title": "t", "label": "Cancel Order", "score": 0.3},
        {"id": "refund", "title": "t", "label": "Refund Status", "score": 0.3},
        {"id": "track", "title": "t", "label": "cancel  order", "score": 0.3},
    ]
    path.write_text("# header\n" + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(CompressionFileError, match=r"labels\.jsonl:4: duplicate label .*track.*cancel \(line 2\)"):
        load_compression(path, tax)
    path.write_text(json.dumps({"id": "ghost", "label": "Boo"}) + "\n", encoding="utf-8")
    with pytest.raises(CompressionFileError, match=r"labels\.jsonl:1: unknown intent id 'ghost'"):
        load_compression(path, tax)
    path.write_text(json.dumps(rows[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(CompressionFileError, match=r"labels\.jsonl:2: not valid JSON"):
        load_compression(path, tax)
    path.write_text(json.dumps({"id": "cancel", "label": "  "}) + "\n", encoding="utf-8")
    with pytest.raises(CompressionFileError, match=r":1: intent cancel: missing or empty 'label'"):
        load_compression(path)


# -- matching ----------------------------------------------------------------------------------------------------
LABELS = {"cancel": "Cancel Order", "refund": "Refund Status", "track": "Delivery Status", "voucher": "Voucher Invalid"}


def test_matcher_paths() -> None:
    matcher = OutputMatcher(LABELS, embed=toy_embed)
    exact = matcher.match("The intent title is cancel order.")
    assert (exact.intent_id, exact.method, exact.score) == ("cancel", "exact", 1.0)
    typo = matcher.match("Refund Statsu")
    assert (typo.intent_id, typo.method) == ("refund", "gestalt") and 0.6 <= typo.score < 1
    semantic = matcher.match("my parcel delivery")  # too far for gestalt, close in embedding space
    assert (semantic.intent_id, semantic.method) == ("track", "embedding")
    assert matcher.match("Delivery Status\nUSER: and now?").method == "exact"  # run-on generation
    no_embed = OutputMatcher(LABELS)
    miss = no_embed.match("my parcel delivery")
    assert (miss.intent_id, miss.method) == (None, "none") and 0 <= miss.score < 0.6
    strict = OutputMatcher(LABELS, embed=toy_embed, embedding_threshold=0.99)
    assert strict.match("my parcel delivery").method == "none"
    assert {r.method for r in [exact, typo, semantic, miss]} == set(MATCH_METHODS)


@pytest.mark.parametrize("garbage", ["", "   ", None, 42, "!!!", "\x00\x01", "The intent title is"])
def test_matcher_never_raises_on_garbage(garbage: object) -> None:
    result = OutputMatcher(LABELS, embed=toy_embed).match(garbage)
    assert result.method in MATCH_METHODS
    if garbage in ("", "   ", None, 42, "!!!", "The intent title is"):
        assert (result.intent_id, result.method, result.score) == (None, "none", 0.0)


def test_match_many_embeds_once() -> None:
    embed = CountingEmbed()
    matcher = OutputMatcher(LABELS, embed=embed)
    results = matcher.match_many(["Cancel Order", "my parcel delivery", "vouchers invalid", "status of my refund", ""])
    assert [r.intent_id for r in results[:3]] == ["cancel", "track", "voucher"]
    assert results[-1].method == "none"
    assert len(embed.calls) == 2  # labels once, then all leftovers in one batch
    matcher.match_many(["something unrelated entirely"])
    assert len(embed.calls) == 3  # label embeddings are cached
    assert unmatched_rate(results) == pytest.approx(4 / 5)
    assert unmatched_rate([]) == 0.0


def test_difflib_and_rapidfuzz_agree_on_typos() -> None:
    labels = LabelSet(kb_taxonomy(with_labels=True), "compressed", chooser=CURATED_FIRST).as_dict()
    slow = OutputMatcher(labels, gestalt_backend="difflib")
    fast = OutputMatcher(labels, gestalt_backend="rapidfuzz")
    rng = np.random.default_rng(0)
    for intent_id, label in labels.items():
        chars = list(label)
        k = int(rng.integers(1, len(chars) - 1))
        typo = "".join(chars[:k] + chars[k + 1 :]) + "s"  # drop a character, add a plural
        a, b = slow.match(typo), fast.match(typo)
        assert a.intent_id == b.intent_id == intent_id, (typo, a, b)
        assert a.method == b.method == "gestalt"
        assert abs(a.score - b.score) < 0.1
    with pytest.raises(ValueError, match="difflib"):
        OutputMatcher(labels, gestalt_backend="levenshtein")


def test_matcher_rejects_ambiguous_labels() -> None:
    with pytest.raises(ValueError, match="a and b share"):
        OutputMatcher({"a": "Cancel Order", "b": "cancel order "})
    labels = LabelSet(kb_taxonomy(with_labels=True), "compressed", chooser=CURATED_FIRST)
    assert output_matcher(labels.as_dict()).match("Refund Status").intent_id == "payment.refund.status"
