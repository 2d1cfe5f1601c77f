"""Symbol Tuning: LoRA fine-tuning of a causal LM to answer "The intent title is {label}" for every turn."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from mtic.config_schema import DECODES, HISTORIES
from mtic.data.chat import ChatEncoder, ChatFormat
from mtic.data.taxonomy import Taxonomy
from mtic.eval.metrics import IntentMetrics
from mtic.labels.matching import OutputMatcher
from mtic.labels.targets import LabelSet, TargetKind
from mtic.models.backbones import load_sentence_embedder
from mtic.models.causal_lm import LoraCausalLM
from mtic.models.label_scoring import label_probabilities, score_prompts

SUMMARY = str(TargetKind.SUMMARY)
SUMMARY_EXTRA_TOKENS = 32  # "You are asking about ... So, the intent title is" comes before the label


class SymbolTuningLM(LoraCausalLM):
    """A causal LM + LoRA trained on vicuna-style transcripts whose answers are (compressed) intent labels.

    Only answer tokens carry loss (see `ChatEncoder`). At test time every session is rolled out turn by turn; the generated label is mapped back to an intent
    (exact, then gestalt, then embedding similarity) and the unmatched share is reported.
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
        decode: str = "greedy",
        history: str = "rollout",
        max_new_tokens: int = 12,
        max_length: int = 512,
        chat_format: dict | None = None,
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
        self.summary_target = str(labels.kind) == SUMMARY
        fmt = ChatFormat(**(chat_format or {}))
        answer_of = None
        if self.summary_target:
            if decode == "score":
                raise ValueError("decode=score ranks labels; the summary target generates text: use decode=greedy")
            if summaries is None:
                raise ValueError("the summary target needs query summaries (the pipeline makes them with an LLM)")
            fmt = replace(fmt, answer_prefix="")  # the model writes "You are asking about ..." itself

            def answer_of(query: str, intent_id: str) -> str:
                return labels.summary_answer(summaries.get(query, query), intent_id)

        self.encoder = ChatEncoder(
            self.tokenizer, labels.label_of, fmt, loss_on=loss_on, max_length=max_length, answer_of=answer_of
        )
        label_texts = {intent_id: labels.label_of(intent_id) for intent_id in taxonomy.ids}
        if embed is None and match_embedder:  # the last matching stage: embedding similarity
            embed = load_sentence_embedder(match_embedder, cache_dir=cache_dir)
        self.matcher = OutputMatcher(label_texts, embed=embed, **(matcher or {}))
        self.label_intents = list(label_texts)
        self.label_answers = [self.encoder.answer_ids(label_texts[i]) for i in self.label_intents]
        self.metrics = IntentMetrics(taxonomy)

    def build_encoder(self) -> ChatEncoder:
        """The encoder the datamodule uses to turn chat examples into ids + loss mask."""
        return self.encoder

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_labels(self, prompts: Sequence[list[int]]) -> list[str]:
        """Greedy continuation of each prompt until end of sequence (left-padded batch)."""
        width = max(len(p) for p in prompts)
        pad = self.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for k, p in enumerate(prompts):
            ids[k, width - len(p) :] = torch.tensor(p, device=self.device)
            mask[k, width - len(p) :] = 1
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.hparams.max_new_tokens + (SUMMARY_EXTRA_TOKENS if self.summary_target else 0),
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]

    @torch.no_grad()
    def score_labels(self, prompts: Sequence[list[int]]) -> list[tuple[str, dict[str, float]]]:
        """decode=score: the most likely label of the set for each prompt, with a probability per intent."""
        out = []
        batch_scores = score_prompts(self.model, prompts, [self.label_answers] * len(prompts), self.pad_token_id)
        for scores in batch_scores:
            probs = label_probabilities(scores)
            best = int(scores.argmax())
            top = {self.label_intents[i]: float(probs[i]) for i in probs.topk(min(5, len(probs))).indices.tolist()}
            out.append((self.labels.label_of(self.label_intents[best]), top))
        return out

    def decode(self, prompts: Sequence[list[int]]) -> list[tuple[str, dict[str, float] | None]]:
        """Label text for each prompt (greedy generation or scoring, as configured)."""
        if self.hparams.decode == "score":
            return self.score_labels(prompts)
        return [(text, None) for text in self.generate_labels(prompts)]

    def predict_sessions(self, sessions: Sequence[Sequence[tuple[str, str | None]]]) -> list[dict[str, Any]]:
        """Roll every session out turn by turn; returns per session the output text, intent and match method."""
        answers: list[list[str | None]] = [[] for _ in sessions]
        final: list[dict[str, Any]] = [{} for _ in sessions]
        for step in range(max(len(s) for s in sessions)):
            active = [k for k, s in enumerate(sessions) if len(s) > step]
            need = [k for k in active if step == len(sessions[k]) - 1 or self.hparams.history == "rollout"]
            for k in active:
                if k not in need:  # history answers from gold labels, or none
                    gold = sessions[k][step][1] if self.hparams.history == "gold" else None
                    answers[k].append(None if gold is None else self.labels.label_of(gold))
            if not need:
                continue
            prompts = [self.encoder.prompt_ids([q for q, _ in sessions[k][: step + 1]], answers[k]) for k in need]
            for k, (text, top) in zip(need, self.decode(prompts)):
                answers[k].append(text)
                if step == len(sessions[k]) - 1:
                    match = self.matcher.match(self.labels.parse_summary_answer(text) if self.summary_target else text)
                    final[k] = {"output": text, "intent": match.intent_id, "method": match.method}
                    if top is not None:
                        final[k]["top"] = top
        return final

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        results = self.predict_sessions(batch["turns"])
        self.metrics.update(
            [r["intent"] for r in results], list(batch["target"]), [r["method"] == "exact" for r in results]
        )
        self.test_outputs.extend(
            {"session_id": sid, "target": t, **r} for sid, t, r in zip(batch["session_id"], batch["target"], results)
        )

    def on_test_epoch_start(self) -> None:
        self.metrics.reset()
        self.test_outputs: list[dict[str, Any]] = []

    def on_test_epoch_end(self) -> None:
        for name, value in self.metrics.compute("test").items():
            self.log(name, value)
