"""Views, encoders and the shared datamodule on the tiny bundle (a word-level toy tokenizer, no models)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtic.data.bundle import read_bundle
from mtic.inputs.chat import ChatEncoder
from mtic.inputs.datamodule import LengthGroupedBatchSampler, MTICDataModule
from mtic.inputs.encoding import IGNORE_INDEX, ClassificationEncoder
from mtic.inputs.views import (
    VIEW_NAMES,
    ChatView,
    LastKView,
    LastQueryView,
    NaiveConcatView,
    SelectedConcatView,
    labelled_prefixes,
    view_target,
)


class WordTokenizer:
    """Whitespace tokenizer with a growing vocabulary; enough to check ids, masks and truncation."""

    bos_token_id = 1
    eos_token_id = 2
    pad_token_id = 0
    truncation_side = "right"

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = True, truncation: bool = False, max_length: int | None = None):
        ids = [self.vocab.setdefault(w, len(self.vocab) + 3) for w in text.split()]
        if truncation and max_length and len(ids) > max_length:
            ids = ids[-max_length:] if self.truncation_side == "left" else ids[:max_length]
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        inverse = {v: k for k, v in self.vocab.items()}
        return " ".join(inverse.get(i, f"<{i}>") for i in ids)


@pytest.fixture
def sessions(tiny_bundle: Path):
    return read_bundle(tiny_bundle).sessions


def test_last_query_view(sessions) -> None:
    example = LastQueryView()(sessions["test"][2])
    assert example.text == "cancel it" and example.target == "cancel"


def test_naive_concat_view(sessions) -> None:
    example = NaiveConcatView(separator=" | ")(sessions["test"][2])
    assert example.text == "where is my parcel | ok | cancel it"


def test_selected_concat_view(sessions) -> None:
    session = sessions["test"][2]
    picked = SelectedConcatView(selector=lambda history, last: 0)(session)
    assert picked.text == "where is my parcel | cancel it"
    none = SelectedConcatView(selector=lambda history, last: None)(session)
    assert none.text == "cancel it"
    with pytest.raises(ValueError, match="needs a trained selector"):
        SelectedConcatView()(session)


def test_chat_view_history_labels(sessions) -> None:
    session = sessions["train"][1]
    gold = ChatView(history_labels="gold")(session)
    assert gold.turns == (("cancel my order", "cancel"), ("and the money?", "refund"))
    hidden = ChatView(history_labels="none")(session)
    assert hidden.turns == (("cancel my order", None), ("and the money?", "refund"))
    with pytest.raises(ValueError, match="history_labels"):
        ChatView(history_labels="maybe")


def test_labelled_prefixes(sessions) -> None:
    prefixes = labelled_prefixes(sessions["test"][2])
    assert [len(p.turns) for p in prefixes] == [2, 3]
    assert [p.target for p in prefixes] == ["track", "cancel"]


def test_classification_encoder_truncates_oldest(sessions, tiny_bundle: Path) -> None:
    from mtic.data.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_intents(read_bundle(tiny_bundle).intents)
    tok = WordTokenizer()
    encoder = ClassificationEncoder(tok, taxonomy, max_length=3)
    row = encoder(NaiveConcatView(separator=" ")(sessions["test"][2]))
    assert tok.decode(row["input_ids"]) == "ok cancel it"
    assert row["level_labels"] == taxonomy.level_ids("cancel")


def test_chat_encoder_masks_only_answers(sessions) -> None:
    tok = WordTokenizer()
    encoder = ChatEncoder(tok, label_of=lambda i: {"track": "Track Parcel", "cancel": "Cancel Order", "refund": "Refund Status"}[i])
    row = encoder(ChatView()(sessions["train"][1]))
    trained = [t for t, l in zip(row["input_ids"], row["labels"]) if l != IGNORE_INDEX]
    assert tok.decode(trained) == "Cancel Order <2> Refund Status <2>"
    last_only = ChatEncoder(tok, label_of=encoder.label_of, loss_on="last")(ChatView()(sessions["train"][1]))
    trained = [t for t, l in zip(last_only["input_ids"], last_only["labels"]) if l != IGNORE_INDEX]
    assert tok.decode(trained) == "Refund Status <2>"
    prompt = tok.decode(encoder.prompt_ids(["cancel my order", "and the money?"], ["Cancel Order"]))
    assert prompt.endswith("USER: and the money? ASSISTANT: The intent title is")
    assert "ASSISTANT: The intent title is Cancel Order <2> USER:" in prompt


def _module(bundle: Path, **kw) -> MTICDataModule:

    dm = MTICDataModule(bundle, view=LastQueryView(), batch_size=4, eval_batch_size=2, **kw)
    tok = WordTokenizer()
    dm.set_encoder(ClassificationEncoder(tok, dm.taxonomy), pad_token_id=tok.pad_token_id)
    return dm


def test_datamodule_mixes_sources_and_pads(tiny_bundle: Path) -> None:
    dm = _module(tiny_bundle)
    dm.setup("fit")
    # 8 single-turn queries + 4 labelled turns of 2 training sessions (prefix expansion), less the one query held
    # out to select the model: the tiny bundle has neither valid sessions nor a single-turn valid split
    assert len(dm.datasets["train"]) == 11 and len(dm.datasets["valid"]) == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max())  # dynamic padding: no wider than the longest row
    assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == 0)
    assert batch["level_labels"].shape == (batch["input_ids"].shape[0], 3)
    dm.setup("test")
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["target"] == ["cancel_status", "refund"]


def test_datamodule_sources_switch(tiny_bundle: Path) -> None:
    only_sessions = _module(tiny_bundle, train_single_turn=False)
    assert len(only_sessions.training_sessions()) == 2
    only_single = _module(tiny_bundle, train_sessions="none", valid_sessions="none")
    assert len(only_single.training_sessions()) == 8
    assert len(_module(tiny_bundle, train_sessions="none").training_sessions()) == 7  # one held out to select
    with pytest.raises(FileNotFoundError):
        _module(tiny_bundle, train_sessions=str(tiny_bundle / "pseudo.jsonl")).training_sessions()


def test_length_grouped_sampler_covers_everything() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=3, seed=1, mega_factor=2)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert len(batches) == len(sampler) == 4
    for b in batches:  # sorted inside each mega-batch
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_chat_encoder_summary_answers(sessions) -> None:
    from mtic.inputs.chat import ChatFormat

    tok = WordTokenizer()
    # keyed by the conversation so far: turn 2's answer summarises both queries
    summaries = {("cancel my order",): "cancelling an order", ("cancel my order", "and the money?"): "the refund"}
    encoder = ChatEncoder(
        tok,
        label_of=str.upper,
        fmt=ChatFormat(answer_prefix=""),
        answer_of=lambda qs, i: f"You are asking about {summaries[tuple(qs)]}. So, the intent title is {i.upper()}",
    )
    row = encoder(ChatView()(sessions["train"][1]))
    trained = tok.decode([t for t, l in zip(row["input_ids"], row["labels"]) if l != IGNORE_INDEX])
    assert trained == (
        "You are asking about cancelling an order. So, the intent title is CANCEL <2> "
        "You are asking about the refund. So, the intent title is REFUND <2>"
    )
    assert tok.decode(encoder.prompt_ids(["cancel my order"], [])).endswith("USER: cancel my order ASSISTANT:")


def test_clean_summary() -> None:
    from mtic.clara.summaries import clean_summary

    assert clean_summary("The customer is asking about a late parcel.\nmore", "q") == "a late parcel"
    assert clean_summary("", "fallback text") == "fallback text"
    assert clean_summary(None, "q") == "q"


def test_view_names_are_defined_once() -> None:
    """mtic.inputs.views names every view class; deploy.json kinds, `mtic export --view` and the files of
    conf/data/view use those names and `_target_`s."""
    import importlib

    import yaml

    from mtic.deploy.artifact import VIEW_KINDS, ViewSpec
    from mtic.inputs import views

    assert set(VIEW_NAMES.values()) == {"chat", "last_query", "naive_concat", "last_k", "selected_concat",
                                        "transcript"}
    assert VIEW_NAMES[LastKView] == "last_k"  # conf/data/view/last_two.yaml is LastKView with k=2
    for cls in VIEW_NAMES:
        module, _, attr = view_target(cls).rpartition(".")
        assert getattr(importlib.import_module(module), attr) is cls and getattr(views, cls.__name__) is cls
    assert VIEW_KINDS == {"last_query": "mtic.inputs.views.LastQueryView",  # deploy.json's names: a stable format
                          "naive_concat": "mtic.inputs.views.NaiveConcatView",
                          "selected_concat": "mtic.inputs.views.SelectedConcatView"}
    assert ViewSpec.from_target(view_target(SelectedConcatView)).needs_selector
    assert not ViewSpec("naive_concat").needs_selector
    by_target = {view_target(c): c for c in VIEW_NAMES}
    files = sorted((Path(__file__).resolve().parents[1] / "conf" / "data" / "view").glob("*.yaml"))
    assert {p.stem for p in files} == {"chat", "last_query", "naive_concat", "last_two", "selected_concat",
                                       "transcript"}
    for path in files:
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
        cls = by_target[node["_target_"]]
        assert path.stem == VIEW_NAMES[cls] or (cls is LastKView and node["k"] == 2 and path.stem == "last_two")
