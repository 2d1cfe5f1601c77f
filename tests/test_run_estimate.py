"""The run estimate (mtic/callbacks/estimate.py) on a fake clock: the model's steps advance the clock by fixed
amounts, so every estimate is exact and no assertion depends on the wall clock."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from mtic.callbacks.estimate import RunEstimate, format_duration
from mtic.pipelines.train_eval import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
TRAIN_STEP, VALID_STEP = 0.8, 0.4   # fake seconds per training / validation batch


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Ticking(pl.LightningModule):
    """A linear model whose every training / validation batch takes a fixed time on the fake clock."""

    def __init__(self, clock: FakeClock, batches: int, valid_batches: int) -> None:
        super().__init__()
        self.clock, self.batches, self.valid_batches = clock, batches, valid_batches
        self.layer = torch.nn.Linear(2, 1)

    def _loader(self, n: int) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(n, 2), torch.zeros(n, 1)), batch_size=1)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_batches)

    def training_step(self, batch, batch_idx):
        self.clock.advance(TRAIN_STEP)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.clock.advance(VALID_STEP)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(epochs: int, batches: int, valid_batches: int, **trainer_kw) -> RunEstimate:
    clock = FakeClock()
    estimate = RunEstimate(measure_steps=5, clock=clock)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[estimate], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         accelerator="cpu", **trainer_kw)
    trainer.fit(Ticking(clock, batches, valid_batches))
    return estimate


def test_estimate_after_five_steps_then_refined_after_epoch_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mtic")
    estimate = _fit(epochs=3, batches=20, valid_batches=5)
    # 60 steps at 0.8 s = 48 s of training; epoch 1 = 20 x 0.8 + 5 x 0.4 = 18 s, so 3 epochs = 54 s
    assert estimate.lines == [
        "[mtic] ~20 steps/epoch x 3 epochs (+ validation): estimated total 48 s (0.80 s/step, measured over 5 steps)",
        ("[mtic] epoch 1 took 18 s (validation included): estimated total 54 s, ~36 s left (less if early stopping "
        "ends the fit)"),
    ]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("[mtic] ")] == estimate.lines


def test_max_steps_caps_the_estimate_and_no_validation_is_not_promised() -> None:
    estimate = _fit(epochs=10, batches=20, valid_batches=0, max_steps=30, limit_val_batches=0)
    assert estimate.lines[0] == ("[mtic] ~30 steps (trainer.max_steps): estimated total 24 s (0.80 s/step, measured "
                                 "over 5 steps)")
    # epoch 1: 20 steps = 16 s; 10 steps left = half an epoch
    assert estimate.lines[1] == ("[mtic] epoch 1 took 16 s: estimated total 24 s, ~8 s left (less if early "
                                 "stopping ends the fit)")


def test_a_fit_shorter_than_the_measurement_still_gets_the_refined_line() -> None:
    estimate = _fit(epochs=2, batches=3, valid_batches=1)
    assert estimate.lines == [("[mtic] epoch 1 took 3 s (validation included): estimated total 6 s, ~3 s left "
                              "(less if early stopping ends the fit)")]  # 3 x 0.8 + 0.4 = 2.8 s per epoch


@pytest.mark.parametrize(("seconds", "shown"), [(12.4, "12 s"), (89, "89 s"), (200, "3.3 min"), (720, "12 min"),
                                                (5760, "1.6 h")])
def test_durations_read_naturally(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def _callbacks(tmp_path: Path, *overrides: str) -> list[pl.Callback]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=baseline_naive", "logger=none",
                                                       f"paths.run_dir={tmp_path}", *overrides])
    return build_trainer(cfg).callbacks


def test_default_callbacks_estimate_and_null_turns_it_off(tmp_path: Path) -> None:
    wired = [c for c in _callbacks(tmp_path) if isinstance(c, RunEstimate)]
    assert len(wired) == 1 and wired[0].measure_steps == 5
    assert not [c for c in _callbacks(tmp_path, "callbacks.estimate=null") if isinstance(c, RunEstimate)]
    assert [c.measure_steps for c in _callbacks(tmp_path, "callbacks.estimate.measure_steps=2")
            if isinstance(c, RunEstimate)] == [2]
