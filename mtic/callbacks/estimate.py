"""An estimate of the whole fit, said early: after a few training steps, one line with the steps, the epochs and
the estimated total time; after the first epoch (its validation included) a refined one.

    [mtic] ~75 steps/epoch x 5 epochs (+ validation): estimated total 6.2 min (0.98 s/step, measured over 5 steps)
    [mtic] epoch 1 took 1.4 min (validation included): estimated total 7.0 min, ~5.6 min left (less if early
    stopping ends the fit)

The first step (allocation, warm-up) is not measured. Wired as `callbacks.estimate` (conf/callbacks/default.yaml);
`callbacks.estimate=null` turns it off.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger("mtic")


def format_duration(seconds: float) -> str:
    """'45 s', '3.5 min', '12 min', '1.6 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 10:
        return f"{minutes:.1f} min"
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


class RunEstimate(pl.Callback):
    """Logs the estimated total time of a fit after `measure_steps` timed training steps, and again after the
    first epoch. `clock` (seconds, monotonic) is a seam for tests."""

    def __init__(self, measure_steps: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        if measure_steps < 1:
            raise ValueError(f"measure_steps must be >= 1, got {measure_steps}")
        self.measure_steps = measure_steps
        self.clock = clock
        self.lines: list[str] = []       # what was said, in order
        self._started = self._timed_from = self._epoch_started = 0.0
        self._seen = 0
        self._first_epoch: int | None = None

    # -- the plan of the fit ---------------------------------------------------------------------------
    @staticmethod
    def _steps_per_epoch(trainer: pl.Trainer) -> float:
        return float(trainer.num_training_batches)

    @staticmethod
    def _epochs(trainer: pl.Trainer) -> int | None:
        epochs = trainer.max_epochs
        return None if epochs is None or epochs < 0 else int(epochs)

    def _total_steps(self, trainer: pl.Trainer) -> float:
        """Training batches of the whole fit (epochs x batches, capped by max_steps); inf when unbounded."""
        epochs, per_epoch = self._epochs(trainer), self._steps_per_epoch(trainer)
        total = per_epoch * epochs if epochs is not None else math.inf
        if trainer.max_steps and trainer.max_steps > 0:
            total = min(total, trainer.max_steps * trainer.accumulate_grad_batches)
        return total

    @staticmethod
    def _validates(trainer: pl.Trainer) -> bool:
        return trainer.limit_val_batches != 0 and any(n > 0 for n in (trainer.num_val_batches or []))

    def _say(self, trainer: pl.Trainer, line: str) -> None:
        self.lines.append(line)
        if trainer.is_global_zero:
            log.info(line)

    # -- Lightning hooks ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = self.clock()
        self._seen = 0
        self._first_epoch = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = self.clock()
        if self._first_epoch is None:
            self._first_epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._seen += 1
        if self._seen == 1:
            self._timed_from = self.clock()  # the first step warms up: not measured
        elif self._seen == 1 + self.measure_steps and trainer.current_epoch == self._first_epoch:
            self._first_estimate(trainer)  # an epoch shorter than that gets the refined line alone

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self._first_epoch:
            self._refined_estimate(trainer)

    # -- the two lines -------------------------------------------------------------------------------------
    def _remaining_steps(self, trainer: pl.Trainer) -> float:
        """Training steps of this fit still to run (a resumed fit did those of its earlier epochs already)."""
        before = self._steps_per_epoch(trainer) * (self._first_epoch or 0)
        return max(self._total_steps(trainer) - before - self._seen, 0.0)

    def _shape(self, trainer: pl.Trainer) -> str:
        per_epoch, epochs, total = self._steps_per_epoch(trainer), self._epochs(trainer), self._total_steps(trainer)
        if not math.isfinite(total):
            return "no epoch or step limit"
        if epochs is not None and total == per_epoch * epochs:
            return f"~{per_epoch:.0f} steps/epoch x {epochs} epochs"
        return f"~{total:.0f} steps (trainer.max_steps)"

    def _first_estimate(self, trainer: pl.Trainer) -> None:
        now = self.clock()
        per_step = (now - self._timed_from) / self.measure_steps
        remaining = self._remaining_steps(trainer)
        said = (f"estimated total {format_duration(now - self._started + remaining * per_step)}"
                if math.isfinite(remaining) else "no total")
        validation = " (+ validation)" if self._validates(trainer) else ""
        self._say(trainer, f"[mtic] {self._shape(trainer)}{validation}: {said} ({per_step:.2f} s/step, measured "
                           f"over {self.measure_steps} steps)")

    def _refined_estimate(self, trainer: pl.Trainer) -> None:
        now = self.clock()
        epoch_time = now - self._epoch_started
        remaining, per_epoch = self._remaining_steps(trainer), self._steps_per_epoch(trainer)
        if not (math.isfinite(remaining) and math.isfinite(per_epoch)) or per_epoch == 0:
            return
        left = remaining / per_epoch * epoch_time
        validation = " (validation included)" if self._validates(trainer) else ""
        self._say(trainer, f"[mtic] epoch {trainer.current_epoch + 1} took {format_duration(epoch_time)}{validation}:"
                           f" estimated total {format_duration(now - self._started + left)}, ~{format_duration(left)}"
                           " left (less if early stopping ends the fit)")
