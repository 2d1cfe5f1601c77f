"""The datamodule of a general chat corpus (`pipeline=pretrain corpus=jsonl | hub`, conf/pipeline/pretrain.yaml's
`corpus_data`): conversations in a chat format, loss on the assistant replies, a held-out share selects the model.

The split is fixed before any model loads (`plan`): a seeded `valid_share` of the conversations (at least one when
the share is positive and the corpus holds two or more) is held out for val/loss (early stopping, best checkpoint);
the rest trains. With nothing held out the fit runs without selection and the last epoch is merged, as the log and
results.json say. Conversations whose first reply lies beyond `max_length` carry no loss: they are left out, counted
and said.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from mtic.data.chat_corpus import ChatCorpus, Conversation
from mtic.inputs.chat import chat_format as parse_chat_format
from mtic.inputs.conversations import ConversationEncoder
from mtic.inputs.data_plan import EMPTY_VALIDATION, ValidationPlan
from mtic.inputs.datamodule import EncodedDataModule, EncodedDataset
from mtic.inputs.encoding import LanguageModelEncoder

log = logging.getLogger("mtic")
HELD_OUT = "corpus.held_out"
"""The validation source of a corpus run, as results.json's `selection` names it."""


class HeldOutConversations(ValidationPlan):
    """Model selection on conversations held out of the corpus (named as they are, not as bundle sources)."""

    def names(self, specs: Sequence[str]) -> list[str]:
        return list(specs)


class ChatCorpusDataModule(EncodedDataModule):
    """Feeds `DomainPretrainLM` from a `ChatCorpus`; the model's LM encoder supplies the tokenizer and max length."""

    def __init__(self, corpus: ChatCorpus, chat_format: str | dict | None = "vicuna", valid_share: float = 0.02,
                 batch_size: int = 8, eval_batch_size: int = 16, group_by_length: bool = True, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, group_by_length, num_workers, seed)
        if not 0 <= valid_share < 1:
            raise ValueError(f"corpus valid_share must be in [0, 1), got {valid_share}")
        self.corpus = corpus
        self.fmt = parse_chat_format(chat_format)
        self.valid_share = valid_share
        self.training_fallback: str | None = None  # the pretrain pipeline records it, as for the bundle's logs
        self.parts: dict[str, list[Conversation]] = {}
        self.left_out: dict[str, int] = {}

    def plan(self, where: str, fit: bool = True, test: bool = False) -> HeldOutConversations:
        """Read and check the corpus (a bad line is one error naming it) and split it; say what selects."""
        if test or not fit:
            raise ValueError(f"{where}: a chat corpus is for training only (pipeline=pretrain)")
        conversations = self.corpus.conversations()
        order = list(range(len(conversations)))
        random.Random(self.seed).shuffle(order)
        held = max(1, round(self.valid_share * len(order))) if self.valid_share > 0 and len(order) >= 2 else 0
        self.parts = {"valid": [conversations[k] for k in sorted(order[:held])],
                      "train": [conversations[k] for k in sorted(order[held:])]}
        if held:
            return HeldOutConversations((HELD_OUT,), (HELD_OUT,), valid_size=held)
        why = "valid_share is 0" if self.valid_share == 0 else "the corpus holds a single conversation"
        return HeldOutConversations((HELD_OUT,) if self.valid_share else (), (), fallback=f"{why}: {EMPTY_VALIDATION}")

    def set_encoder(self, encoder: LanguageModelEncoder, pad_token_id: int) -> None:
        """The model's plain LM encoder gives the tokenizer and max length; conversations are rendered in the
        corpus's chat format with loss on the replies."""
        super().set_encoder(ConversationEncoder(encoder.tokenizer, self.fmt, encoder.max_length), pad_token_id)

    def record(self) -> dict[str, Any]:
        """The `corpus` entry of results.json: where it came from, the split, what was left out."""
        sizes = {part: len(rows) for part, rows in self.parts.items()}
        return {**self.corpus.describe(), "conversations": sizes, "left_out_no_reply_within_max_length": self.left_out}

    def _encode(self, part: str) -> EncodedDataset:
        encoder = self.encoder
        assert isinstance(encoder, ConversationEncoder)
        rows = [encoder(c) for c in self.parts[part]]
        kept = [r for r in rows if r is not None]
        self.left_out[part] = len(rows) - len(kept)
        if self.left_out[part]:
            log.warning("[mtic] %d %s conversation(s) left out: their first reply starts after max_length=%d tokens",
                        self.left_out[part], part, encoder.max_length)
        if rows and not kept:
            raise ValueError(f"no {part} conversation has a reply within max_length={encoder.max_length} tokens: "
                             "raise model.max_length")
        return EncodedDataset(kept)

    def setup(self, stage: str | None = None) -> None:
        if self.encoder is None or not self.parts:
            raise RuntimeError("call plan() and set_encoder(model encoder) before using the datamodule")
        for part in ("train", "valid"):
            if part not in self.datasets:
                self.datasets[part] = self._encode(part)
