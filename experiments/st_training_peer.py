"""Symbol-tuning training speed against a peer: mtic's training step (Lightning fit of `SymbolTuningLM`) vs TRL's
`SFTTrainer`, side by side in one process (`bench_symbol_tuning.py --vs-trl`).

Same model (the st_sg experiment's backbone, SmolLM2-135M from its packaged weights, with the same LoRA adapters:
`wrap_lora` of the experiment's `model.lora`), same data (the st_sg training examples, tokenised once by mtic's chat
encoder), same loss mask (answer tokens only: TRL gets mtic's mask as `completion_mask` with
`completion_only_loss=True`), same batches in the same order (the first `steps` length-grouped batches of mtic's
loader, fed to TRL sequentially with the same batch size; so real and padded tokens per step are equal), same
max length, optimizer (AdamW, the experiment's lr, no weight decay, gradient clipping at 1.0), fp32 on the CPU. TRL
defaults that would change the computation are set to mtic's: no gradient checkpointing, no bf16 autocast.
Everything else is each library as a user runs it: TRL computes its per-step entropy / token-accuracy metrics,
Lightning its progress bookkeeping.

Timing: the wall time from the end of the warm-up steps to the end of the last step (data loading, forward,
backward, clipping, optimizer and scheduler steps, logging), and the real (non-pad) tokens of those steps. The
first-step losses are printed as a check that both train the same model on the same batch.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from mtic.inputs.encoding import IGNORE_INDEX, PadCollator
from mtic.models.lora import wrap_lora

SECTION_START, SECTION_END = "<!-- vs-trl:start -->", "<!-- vs-trl:end -->"


@dataclass
class StepLog:
    """Per-step end times, losses and token counts of one training run."""

    ends: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def figures(self, batches: list[dict[str, torch.Tensor]], warmup: int) -> dict[str, Any]:
        timed = batches[warmup : len(self.ends)]
        seconds = self.ends[-1] - self.ends[warmup - 1]
        real = sum(int(b["attention_mask"].sum()) for b in timed)
        return {"timed_steps": len(timed), "seconds": round(seconds, 3), "real_tokens": real,
                "padded_tokens": sum(int(b["input_ids"].numel()) for b in timed),
                "answer_tokens": sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in timed),
                "tokens_per_s": round(real / seconds, 1), "first_loss": round(self.losses[0], 4)}


class LightningSteps(pl.Callback):
    """Records the end of every training step of a Lightning fit."""

    def __init__(self) -> None:
        self.record = StepLog()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.record.ends.append(time.perf_counter())
        self.record.losses.append(float(outputs["loss"]))


def first_batches(datamodule: Any, steps: int) -> list[list[dict[str, Any]]]:
    """The rows of mtic's first `steps` full training batches (length-grouped, seeded), in order."""
    datamodule.setup("fit")
    data = datamodule.datasets["train"]
    sampler = datamodule.train_dataloader().batch_sampler
    full = [b for b in sampler if len(b) == datamodule.batch_size][:steps]
    if len(full) < steps:
        raise SystemExit(f"only {len(full)} full batches of {datamodule.batch_size} in the training data")
    return [[{k: data.rows[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in b] for b in full]


def run_mtic(model: Any, batches: list[list[dict]], collate: PadCollator, max_grad_norm: float) -> StepLog:
    """mtic's training path: Lightning fits the symbol-tuning module on exactly these batches."""
    rows = [row for batch in batches for row in batch]
    loader = DataLoader(rows, batch_size=len(batches[0]), shuffle=False, collate_fn=collate)
    steps = LightningSteps()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), logger=False, callbacks=[steps],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=max_grad_norm)
    model.train()
    trainer.fit(model, train_dataloaders=loader)
    return steps.record


def run_trl(backbone: str, cache_dir: str, lora: dict, batches: list[list[dict]], lr: float, warmup_ratio: float,
            max_length: int, max_grad_norm: float, workdir: Path) -> StepLog:
    """TRL's SFTTrainer on the same LoRA model, rows, mask and batch order."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from mtic.hub.registry import load_causal_lm

    base, tokenizer = load_causal_lm(backbone, cache_dir=cache_dir)
    model = wrap_lora(base, lora)
    rows = [row for batch in batches for row in batch]
    dataset = Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                 "completion_mask": [[int(t != IGNORE_INDEX) for t in r["labels"]] for r in rows]})
    log = StepLog()

    class Steps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            log.ends.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                log.losses.append(float(logs["loss"]))

    config = SFTConfig(
        output_dir=str(workdir), max_steps=len(batches), per_device_train_batch_size=len(batches[0]),
        learning_rate=lr, weight_decay=0.0, lr_scheduler_type="cosine",
        warmup_steps=max(1, int(len(batches) * warmup_ratio)),  # mtic's warm-up (LoraCausalLM.configure_optimizers)
        optim="adamw_torch", max_grad_norm=max_grad_norm, max_length=max_length, completion_only_loss=True,
        train_sampling_strategy="sequential", gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[Steps()])
    trainer.train()
    return log


def write_report(report_dir: Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """`bench_symbol_tuning.json` (key `vs_trl`, other keys kept) and the section of `bench_symbol_tuning.md`
    between the vs-trl markers (appended when absent; the rest of the file is kept)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_dir / "bench_symbol_tuning.json", report_dir / "bench_symbol_tuning.md"
    stored = json.loads(json_path.read_text()) if json_path.is_file() else {}
    json_path.write_text(json.dumps({**stored, "vs_trl": record}, indent=2) + "\n")
    section = f"{SECTION_START}\n{markdown(record)}{SECTION_END}\n"
    text = md_path.read_text() if md_path.is_file() else ""
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1].lstrip("\n")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    md_path.write_text(text)
    return md_path, json_path


def markdown(record: dict[str, Any]) -> str:
    s = record["settings"]
    rows = [("mtic (Lightning fit of SymbolTuningLM: dynamic padding, LM head on answer positions)", record["mtic"]),
            (f"TRL {s['trl_version']} SFTTrainer (completion-only loss, its fused LM head)", record["trl"])]
    lines = ["## Training step vs TRL's SFTTrainer", "",
             f"`{record['command']}` — {s['when']}, {s['threads']} CPU thread(s); {s['conditions']}.", "",
             (f"{s['backbone']} with LoRA {s['lora']}, st_sg training examples, {s['steps']} batches of "
              f"{s['batch_size']} (the first {s['warmup']} not timed), max length {s['max_length']}, lr {s['lr']}, "
              "fp32; the same batches in the same order for both, loss on answer tokens only; one process, mtic "
              "first, then TRL (a fresh copy of the model). Tokens/s counts real (non-pad) tokens."), "",
             "| trainer | timed steps | real tokens | padded tokens | answer tokens | seconds | tokens/s | first-step loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['timed_steps']} | {r['real_tokens']} | {r['padded_tokens']} | {r['answer_tokens']} | "
              f"{r['seconds']:.1f} | {r['tokens_per_s']:.0f} | {r['first_loss']:.4f} |" for name, r in rows]
    lines += ["", f"mtic / TRL tokens/s: **{record['speedup']:.2f}x**", ""]
    return "\n".join(lines)


def record_of(args: Any, cfg: Any, mtic: dict, trl: dict, command: str) -> dict[str, Any]:
    import trl as trl_package

    settings = {"backbone": str(cfg.backbone.name), "lora": OmegaConf.to_container(cfg.model.lora), "steps": args.steps,
                "warmup": args.warmup, "batch_size": args.batch_size, "max_length": int(cfg.model.max_length),
                "lr": float(cfg.model.lr), "threads": torch.get_num_threads(), "trl_version": trl_package.__version__,
                "torch_version": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M"),
                "conditions": args.conditions}
    return {"command": command, "settings": settings, "mtic": mtic, "trl": trl,
            "speedup": round(mtic["tokens_per_s"] / trl["tokens_per_s"], 3)}


def bench_vs_trl(args: Any, command: str) -> dict[str, Any]:
    """Both trainers on the st_sg experiment (`args.override`: more Hydra overrides), the report written."""
    import gc
    import tempfile

    from hydra import compose, initialize_config_dir

    import mtic.config_resolvers  # noqa: F401  (registers the resolvers the composed config uses)
    from mtic.pipelines.train_eval import build_components

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=st_sg", f"data.batch_size={args.batch_size}",
                                                       "logger=none", *args.override])
    datamodule, model = build_components(cfg)
    batches = first_batches(datamodule, args.steps)
    collate = datamodule.collator
    clip = float(cfg.trainer.gradient_clip_val or 0.0)
    mine = run_mtic(model, batches, collate, clip)
    del model, datamodule
    gc.collect()
    with tempfile.TemporaryDirectory() as work:  # TRL's output_dir (nothing is saved: save_strategy="no")
        theirs = run_trl(str(cfg.backbone.name), str(cfg.paths.cache_dir), OmegaConf.to_container(cfg.model.lora), batches,
                         float(cfg.model.lr), float(cfg.model.warmup_ratio), int(cfg.model.max_length), clip,
                         Path(work))
    padded = [collate(b) for b in batches]
    record = record_of(args, cfg, mine.figures(padded, args.warmup), theirs.figures(padded, args.warmup), command)
    md_path, json_path = write_report(Path(args.report_dir), record)
    print(markdown(record) + f"\nwritten: {md_path}, {json_path}")
    return record
