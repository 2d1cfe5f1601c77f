"""Compressed labels chosen by the objective among every proposer's candidates: the objective's value, the
proposers (curated, extractive, LLM), the cache, the compression file that wins (and says where), the training
targets it changes, and the configs (labels=compressed | curated, the cross-lingual sweep)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from mtic.clara.llm import LLMRequest, LLMResponse
from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.views import ChatView
from mtic.labels import chooser as chooser_module
from mtic.labels.chooser import LabelChooser
from mtic.labels.compress import compress_labels, load_compression, objective, save_compression
from mtic.labels.targets import LabelSet
from mtic.models.symbol_tuning import SymbolTuningLM

CONF = Path(__file__).resolve().parents[1] / "conf"
TITLE = "alpha beta gamma delta"
# hand-made phi: the title is e1; candidates at known cosines with it
VECTORS = {TITLE: [1.0, 0.0, 0.0], "Alpha Beta": [0.6, 0.8, 0.0], "Alpha": [0.0, 1.0, 0.0],
           "Beta Gamma Delta": [0.96, 0.28, 0.0]}


def hand_embed(texts: list[str]) -> np.ndarray:
    return np.array([VECTORS[t] for t in texts], dtype=np.float32)


def words(text: str) -> int:
    return len(text.split())


def one_intent() -> Taxonomy:
    return Taxonomy.from_intents([Intent("x", TITLE, ("X", "Y"))])


def test_objective_value_by_hand() -> None:
    # "Alpha Beta": 2 of the title's 4 tokens, cosine 0.6 -> normalised 1*(2/4) + 0.4; literal C + E: 2 + 0.4
    assert objective(2, 4, 0.6) == pytest.approx(0.9)
    assert objective(2, 4, 0.6, alpha=1.0, normalise=False) == pytest.approx(2.4)
    assert objective(2, 4, 0.6, alpha=0.5) == pytest.approx(0.65)
    proposed = {"x": [(t, "curated") for t in ("Alpha Beta", "Alpha", "Beta Gamma Delta")]}
    chosen = compress_labels(one_intent(), hand_embed, words, proposed=proposed, extractive=False)["x"]
    # normalised costs: Alpha Beta 0.9, Alpha 0.25 + 1.0 = 1.25, Beta Gamma Delta 0.75 + 0.04 = 0.79
    assert (chosen.label, chosen.cost, chosen.source) == ("Beta Gamma Delta", pytest.approx(0.79), "curated")
    literal = compress_labels(one_intent(), hand_embed, words, proposed=proposed, extractive=False, normalise=False)["x"]
    # literal: Alpha Beta 2.4, Alpha 1 + 1.0 = 2.0, Beta Gamma Delta 3.04: one token outweighs the meaning lost
    assert (literal.label, literal.cost) == ("Alpha", pytest.approx(2.0))


def small_taxonomy() -> Taxonomy:
    rows = [
        ("cancel", "Request to cancel an order that has already been placed", "Cancel Order"),
        ("refund", "Ask about the status and timing of a refund", None),
        ("track", "Ask about the current status and location of a parcel delivery", "Track Parcel"),
    ]
    return Taxonomy.from_intents([Intent(i, t, ("Top", i), label=lab) for i, t, lab in rows])


class ScriptedLLM:
    """A generating backend that answers every title prompt with a fixed label per intent word."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.prompts = answers, []

    identity = {"backend": "scripted"}
    params = {"decode": "greedy"}

    def complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        self.prompts += [r.user for r in requests]
        return [LLMResponse(text=next(v for k, v in self.answers.items() if k in r.user)) for r in requests]


def test_proposers_compete_and_the_report_counts_the_winners(tmp_path: Path) -> None:
    tax = small_taxonomy()
    llm = ScriptedLLM({"refund": "Refund Timing\nignored second line", "cancel": "Cancel", "parcel": "Parcel Location"})
    chooser = LabelChooser(proposers=["curated", "extractive", "llm"], compress_llm=llm, cache_dir=str(tmp_path))
    labels = LabelSet(tax, "compressed", chooser=chooser)
    assert len(llm.prompts) == 3 and all("Short title:" in p for p in llm.prompts)
    report = labels.report()
    assert sum(report["sources"].values()) == 3 and set(report["sources"]) <= {"curated", "extractive", "llm"}
    assert report["chooser"]["proposers"] == ["curated", "extractive", "llm"] and report["file_conflicts"] == 0
    # every label is the cheapest candidate of its intent among all proposers (recomputed here with MiniLM)
    phi = chooser_module._embedder("minilm-l6", str(tmp_path))
    for intent_id in tax.ids:
        title = tax.title(intent_id)
        options = {labels.label_of(intent_id), tax.curated_label(intent_id) or labels.label_of(intent_id)}
        options |= {llm.answers[k].splitlines()[0] for k in llm.answers if k in title.lower()}
        vectors = phi([title, *options])
        cost = {o: objective(words(o), words(title), float(v @ vectors[0])) for o, v in zip(options, vectors[1:])}
        assert cost[labels.label_of(intent_id)] <= min(cost.values()) + 1e-5, (intent_id, cost)
    # cached: the same settings read the reviewable file instead of embedding again
    assert chooser.choices_file is not None and chooser.choices_file.parent == tmp_path / "labels"
    assert load_compression(chooser.choices_file, tax) == labels.as_dict()
    again = LabelChooser(proposers=["curated", "extractive", "llm"], compress_llm=ScriptedLLM(llm.answers),
                         cache_dir=str(tmp_path))
    assert LabelSet(tax, "compressed", chooser=again).as_dict() == labels.as_dict()
    assert again.choices_file == chooser.choices_file


def test_force_curated_and_proposer_errors() -> None:
    tax = small_taxonomy()
    forced = LabelSet(tax, "compressed", chooser=LabelChooser(force="curated", proposers=["extractive"]))
    assert forced.label_of("cancel") == "Cancel Order" and forced.label_of("track") == "Track Parcel"
    assert forced.sources == {"cancel": "curated", "refund": "extractive", "track": "curated"}
    with pytest.raises(ValueError, match="lists 'llm' but labels.compress_llm is null"):
        LabelChooser(proposers=["extractive", "llm"])
    with pytest.raises(ValueError, match="compress_llm is set but labels.proposers does not list 'llm'"):
        LabelChooser(compress_llm=ScriptedLLM({}))
    with pytest.raises(ValueError, match="unknown or empty"):
        LabelChooser(proposers=["gpt4"])
    only_curated = LabelChooser(proposers=["curated"])
    with pytest.raises(ValueError, match="refund: no candidate label"):
        LabelSet(tax, "compressed", chooser=only_curated)  # refund has no curated label and nothing else proposes
    with pytest.raises(ValueError, match=r"only apply to target=compressed"):
        LabelSet.from_taxonomy(tax, target="original", alpha=2.0)


def test_compression_file_wins_and_conflicts_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tax = small_taxonomy()
    chosen = LabelSet(tax, "compressed")
    edited = {"cancel": "Scrap My Order", "refund": chosen.label_of("refund"), "track": "Where Is It"}
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"id": i, "label": lab}) + "\n" for i, lab in edited.items()), encoding="utf-8")
    with caplog.at_level("WARNING", logger="mtic"):
        labels = LabelSet.from_taxonomy(tax, target="compressed", compression_file=str(path))
    assert labels.as_dict() == edited and set(labels.sources.values()) == {"file"}
    report = labels.report()
    assert report["sources"] == {"file": 3} and report["file_conflicts"] == 2
    assert {c["id"] for c in report["file_conflicts_shown"]} == {"cancel", "track"}
    assert "overrides 2 label(s)" in caplog.text and "'Scrap My Order'" in caplog.text


def test_a_hand_edited_file_changes_the_training_targets(tiny_bundle: Path, tmp_path: Path) -> None:
    def trained_answers(labels: LabelSet) -> set[str]:
        dm = MTICDataModule(tiny_bundle, view=ChatView(), eval_view=ChatView(history_labels="none"), batch_size=4,
                            group_by_length=False)
        model = SymbolTuningLM("tiny-llama", dm.taxonomy, labels, lr=5e-3)
        dm.set_encoder(model.build_encoder(), model.pad_token_id)
        dm.setup("fit")
        out = set()
        for k in range(len(dm.datasets["train"])):
            row = dm.datasets["train"][k]
            if row["target"] == "cancel":  # the answer tokens the loss is computed on
                out.add(model.tokenizer.decode([t for t in row["labels"] if t != -100]))
        return out

    dm = MTICDataModule(tiny_bundle, view=ChatView(), batch_size=4)
    chosen = LabelSet(dm.taxonomy, "compressed")
    path = save_compression(tmp_path / "labels.jsonl", chooser_choices(chosen))
    rows = [json.loads(r) for r in path.read_text(encoding="utf-8").splitlines() if not r.startswith("#")]
    for row in rows:
        row["label"] = "Scrap My Order" if row["id"] == "cancel" else row["label"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    before = trained_answers(chosen)
    after = trained_answers(LabelSet.from_taxonomy(dm.taxonomy, "compressed", compression_file=str(path)))
    assert before and all(chosen.label_of("cancel") in a for a in before)
    assert after and all("Scrap My Order" in a and chosen.label_of("cancel") not in a for a in after)


def chooser_choices(labels: LabelSet) -> dict:
    assert labels.chooser is not None
    return labels.chooser.choose(labels.taxonomy)


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_configs_wire_the_chooser() -> None:
    st = _compose("+experiment=st_sg")
    assert st.labels.target == "compressed" and st.labels.force is None
    assert list(st.labels.proposers) == ["curated", "extractive"]
    assert st.labels.encoder == "minilm-l6" and st.labels.tokenizer == "smollm2-135m"
    curated = _compose("+experiment=st_sg", "labels=curated")
    assert curated.labels.force == "curated" and curated.labels.target == "compressed"
    literal = _compose("+experiment=st_sg", "labels.alpha=1", "labels.normalise=false")
    assert (literal.labels.alpha, literal.labels.normalise) == (1, False)
    assert _compose("+experiment=st_id").labels.encoder == "e5-small"
    # the cross-lingual sweep compares language with the same proposers on both sides
    sweep = _compose("+experiment=st_id", "sweep=cross_lingual")
    assert list(sweep.labels.proposers) == ["extractive"]
    # the LLM pipelines keep the curated labels Table 3 ran with
    assert _compose("+experiment=clara", "market=sg").labels.force == "curated"
