"""Symbol Tuning: LoRA fine-tuning of a causal LM to answer "The intent title is {label}" for every turn."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from mtic.clara.summaries import conversation_key
from mtic.data.taxonomy import Taxonomy
from mtic.eval.distributed import EXAMPLE_INDEX
from mtic.eval.metrics import IntentMetrics
from mtic.hub.registry import load_sentence_embedder
from mtic.inputs.chat import ChatEncoder, rollout_row
from mtic.inputs.chat import chat_format as chat_format_of
from mtic.labels.matching import output_matcher
from mtic.labels.targets import LabelSet, TargetKind
from mtic.models.causal_lm import LoraCausalLM
from mtic.models.rollout import DECODES, GREEDY, HISTORIES, ROLLOUT, SCORE, GreedyDecoder, LabelScorer, SessionRollout
from mtic.models.test_predictions import GatheredTestMetrics

SUMMARY_EXTRA_TOKENS = 32  # "You are asking about ... So, the intent title is" comes before the label


class SymbolTuningLM(GatheredTestMetrics, LoraCausalLM):
    """A causal LM + LoRA trained on vicuna-style transcripts whose answers are (compressed) intent labels.

    Only answer tokens carry loss (see `ChatEncoder`). At test time every session is rolled out turn by turn
    over one growing KV cache (`SessionRollout`); `decode=greedy` generates the label and maps it back to an
    intent (exact, then gestalt, then embedding similarity; the unmatched share is reported), `decode=score`
    takes the exact argmax over the label set (branch and bound; every label at the final turn when
    `label_probs`, giving a probability per intent).
    """

    def __init__(
        self,
        backbone: str,
        taxonomy: Taxonomy,
        labels: LabelSet,
        cache_dir: str | None = None,
        dtype: str = "float32",
        lora: dict | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.05,
        loss_on: str = "all",
        decode: str = GREEDY,
        history: str = ROLLOUT,
        max_new_tokens: int = 12,
        label_probs: bool = True,
        max_length: int = 512,
        chat_format: str | dict | None = None,
        matcher: dict | None = None,
        embed: Callable[[list[str]], Any] | None = None,
        match_embedder: str | None = None,
        summaries: dict[str, str] | None = None,
    ) -> None:
        super().__init__(backbone, cache_dir, dtype, lora, lr, weight_decay, warmup_ratio)
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        if history not in HISTORIES:
            raise ValueError(f"history must be one of {HISTORIES}, got {history!r}")
        self.save_hyperparameters(ignore=["taxonomy", "labels", "embed", "summaries"])
        self.taxonomy = taxonomy
        self.labels = labels
        self.summary_target = str(labels.kind) == TargetKind.SUMMARY
        fmt = chat_format_of(chat_format)
        answer_of = None
        if self.summary_target:
            if decode == SCORE:
                raise ValueError("decode=score ranks labels; the summary target generates text: use decode=greedy")
            if summaries is None:
                raise ValueError("the summary target needs query summaries (the pipeline makes them with an LLM)")
            fmt = replace(fmt, answer_prefix="")  # the model writes "You are asking about ..." itself

            def answer_of(queries: Sequence[str], intent_id: str) -> str:  # the conversation so far, summarised
                return labels.summary_answer(summaries.get(conversation_key(queries), queries[-1]), intent_id)

        self.encoder = ChatEncoder(
            self.tokenizer, labels.label_of, fmt, loss_on=loss_on, max_length=max_length, answer_of=answer_of
        )
        label_texts = {intent_id: labels.label_of(intent_id) for intent_id in taxonomy.ids}
        if embed is None and match_embedder:  # the last matching stage: embedding similarity
            embed = load_sentence_embedder(match_embedder, cache_dir=cache_dir)
        self.matcher = output_matcher(label_texts, embedder=embed, embedding=embed is not None, **(matcher or {}))
        self.label_intents = list(label_texts)
        self.label_answers = [self.encoder.answer_ids(label_texts[i]) for i in self.label_intents]
        self.metrics = IntentMetrics(taxonomy)

    def build_encoder(self) -> ChatEncoder:
        """The encoder the datamodule uses to turn chat examples into ids + loss mask."""
        return self.encoder

    def build_test_encoder(self) -> Callable[[Any], dict[str, Any]]:
        """What the datamodule makes of a test session: its turns only (`test_step` rolls them out and tokenises
        each prompt itself; the training encoder's transcript would never be read)."""
        return rollout_row

    # -- inference -----------------------------------------------------------------------------------
    def rollout(self) -> SessionRollout:
        """The turn-by-turn decoder of this model's settings (greedy generation or exact label scoring)."""
        if self.hparams.decode == SCORE:
            decoder = LabelScorer(self.label_answers, [self.labels.label_of(i) for i in self.label_intents])
        else:
            extra = SUMMARY_EXTRA_TOKENS if self.summary_target else 0
            decoder = GreedyDecoder(self.tokenizer, self.tokenizer.eos_token_id, self.hparams.max_new_tokens + extra)
        return SessionRollout(self.model, self.encoder, decoder, self.pad_token_id, history=self.hparams.history,
                              gold_answer=self.labels.label_of, all_labels=self.hparams.label_probs)

    @torch.no_grad()
    def predict_sessions(self, sessions: Sequence[Sequence[tuple[str, str | None]]]) -> list[dict[str, Any]]:
        """Roll every session out turn by turn; returns per session the output text, intent and match method.

        With decode=score the output is always a label of the set (method `exact`), with its mean token
        log-likelihood (`score`) and, when `label_probs`, the five most probable intents (`top`).
        """
        results = []
        answers = self.rollout()(sessions)
        parse = self.labels.parse_summary_answer if self.summary_target else str
        matches = self.matcher.match_many([parse(a.text) for a in answers])  # one embedding call per batch
        for answer, match in zip(answers, matches):
            text = answer.text
            result: dict[str, Any] = {"output": text, "intent": match.intent_id, "method": match.method}
            if answer.label is not None:
                result["score"] = answer.score
            if answer.probs is not None:
                result["top"] = {self.label_intents[j]: p for j, p in answer.probs.items()}
            results.append(result)
        return results

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        results = self.predict_sessions(batch["turns"])
        self.add_test_rows(batch[EXAMPLE_INDEX], [
            {"session_id": sid, "target": t, **r} for sid, t, r in zip(batch["session_id"], batch["target"], results)
        ])

    def score_test_rows(self, rows: list[dict[str, Any]]) -> None:
        """Accuracy and the unmatched share (outputs that were not exactly a label) over every test session."""
        if rows:
            self.metrics.update([r["intent"] for r in rows], [r["target"] for r in rows],
                                [r["method"] == "exact" for r in rows])
