"""Symbol Tuning: LoRA fine-tuning of a causal LM to answer "The intent title is {label}" for every turn."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from mtic.config_schema import DECODES, HISTORIES
from mtic.data.chat import ChatEncoder, ChatFormat
from mtic.data.encoding import IGNORE_INDEX
from mtic.data.taxonomy import Taxonomy
from mtic.eval.metrics import IntentMetrics
from mtic.labels.matching import OutputMatcher
from mtic.labels.targets import LabelSet
from mtic.models.backbones import load_causal_lm
from mtic.models.label_scoring import label_probabilities, score_continuations

DEFAULT_LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


class SymbolTuningLM(pl.LightningModule):
    """A causal LM + LoRA trained on vicuna-style transcripts whose answers are (compressed) intent labels.

    Loss is computed only where it counts: the LM head runs on the answer positions alone, so the vocabulary
    projection (the main cost for 262k-token vocabularies) never sees the prompt tokens.
    At test time every session is rolled out turn by turn; the generated label is mapped back to an intent
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
    ) -> None:
        super().__init__()
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        if history not in HISTORIES:
            raise ValueError(f"history must be one of {HISTORIES}, got {history!r}")
        self.save_hyperparameters(ignore=["taxonomy", "labels", "embed"])
        self.taxonomy = taxonomy
        self.labels = labels
        base, self.tokenizer = load_causal_lm(backbone, cache_dir=cache_dir, dtype=getattr(torch, dtype))
        lora_cfg = {**DEFAULT_LORA, **(lora or {})}
        self.model = get_peft_model(
            base,
            LoraConfig(
                r=lora_cfg["r"],
                lora_alpha=lora_cfg["alpha"],
                lora_dropout=lora_cfg["dropout"],
                target_modules=list(lora_cfg["target_modules"]),
                task_type="CAUSAL_LM",
            ),
        )
        self.encoder = ChatEncoder(
            self.tokenizer, labels.label_of, ChatFormat(**(chat_format or {})), loss_on=loss_on, max_length=max_length
        )
        label_texts = {intent_id: labels.label_of(intent_id) for intent_id in taxonomy.ids}
        self.matcher = OutputMatcher(label_texts, embed=embed, **(matcher or {}))
        self.label_intents = list(label_texts)
        self.label_answers = [self.encoder.answer_ids(label_texts[i]) for i in self.label_intents]
        self.metrics = IntentMetrics(taxonomy)

    # -- data ----------------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def build_encoder(self) -> ChatEncoder:
        """The encoder the datamodule uses to turn chat examples into ids + loss mask."""
        return self.encoder

    # -- training ------------------------------------------------------------------------------------
    def answer_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy over answer tokens, projecting only those hidden states to the vocabulary."""
        base = self.model.get_base_model()
        hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
        softcap = getattr(base.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits.float(), targets[keep])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.answer_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss = self.answer_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])

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
            max_new_tokens=self.hparams.max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]

    @torch.no_grad()
    def score_labels(self, prompts: Sequence[list[int]]) -> list[tuple[str, dict[str, float]]]:
        """decode=score: the most likely label of the set for each prompt, with a probability per intent."""
        out = []
        for prompt in prompts:
            scores = score_continuations(self.model, prompt, self.label_answers, self.pad_token_id)
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
                    match = self.matcher.match(text)
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

    # -- optimisation & checkpoints ----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(total * self.hparams.warmup_ratio))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trainable (LoRA) weights: checkpoints stay megabytes, not the whole base model."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """LoRA-only checkpoints load on top of the freshly loaded base model."""
        return super().load_state_dict(state_dict, strict=False, assign=assign)
