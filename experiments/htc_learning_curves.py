"""HTC learning curves on CPU: test accuracy against training wall time, per recipe, beside the TF-IDF floor.

Each (market, recipe) composes the real experiment config (`--experiment`, default baseline_naive: label-free,
trained on single-turn queries, read on the naive concatenation) with the recipe's overrides, builds the datamodule
and the HTC exactly as `python run.py` does (mtic.pipelines.train_eval.build_components / build_trainer) and trains
for `--epochs` epochs with early stopping and checkpointing switched off, so the whole curve is seen. After each
epoch the clock stops while the test sessions are scored (the curve is for the report only, nothing is selected
on it) and the label-free validation loss is read; the "selected" point is the epoch of lowest validation loss
within the early-stopping rule a real run uses (patience 3), i.e. what `run.py` would report.
The TF-IDF + logistic regression row on the same bundle and view is the floor line of each plot.

    python experiments/htc_learning_curves.py --markets sg id --recipes paper lr5e-5 lr1e-4 lr1e-4_unfrozen \
        --epochs 6 --out experiments/reports/htc_curves
Writes <out>.json (every point), <out>.md (a table) and <out>.png. Run it alone on the machine: the times are
wall-clock.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES: dict[str, list[str]] = {
    "paper": [],  # the shipped defaults: encoder lr 5e-6 (the paper's), head lr 1e-3, frozen word embeddings
    "lr5e-5": ["model.lr=5e-5"],
    "lr1e-4": ["model.lr=1e-4"],
    "lr1e-4_unfrozen": ["model.lr=1e-4", "model.freeze_embeddings=false"],
    "lr1e-4_head3e-3": ["model.lr=1e-4", "model.head_lr=3e-3"],
    "lr1e-4_len64": ["model.lr=1e-4", "model.max_length=64"],
    "lr1e-4_local_only": ["model.lr=1e-4", "model.global_head=false"],
    "lr1e-4_minilm": ["model.lr=1e-4", "market.encoder=minilm-l6"],
    "lr1e-4_e5": ["model.lr=1e-4", "market.encoder=e5-small"],
}
VIEW_OF_EXPERIMENT = {"baseline_naive": "naive_concat", "baseline_single": "last_query"}
PATIENCE = 3  # conf/callbacks/default.yaml early_stopping.patience


class EpochProbe(pl.Callback):
    """After every training epoch: cumulative training seconds (evaluation excluded), test accuracy, val loss."""

    def __init__(self, datamodule: Any) -> None:
        self.datamodule, self.points, self.train_seconds, self._start = datamodule, [], 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:  # Lightning validates at the end of each training epoch, before its end hook
            self.train_seconds += time.perf_counter() - self._start

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        val_loss = trainer.callback_metrics.get("val/loss")
        self.points.append({"epoch": trainer.current_epoch + 1, "train_s": round(self.train_seconds, 1),
                            "test_acc": test_accuracy(module, self.datamodule),
                            "val_loss": None if val_loss is None else round(float(val_loss), 5)})
        print(f"  epoch {self.points[-1]['epoch']}: {self.points[-1]}", flush=True)


@torch.no_grad()
def test_accuracy(model: pl.LightningModule, datamodule: Any) -> float:
    was_training = model.training
    model.eval()
    hits = total = 0
    for batch in datamodule.test_dataloader():
        leaf, _ = model.decode(model(batch["input_ids"], batch["attention_mask"]))
        hits += int((leaf == batch["level_labels"][:, -1]).sum())
        total += len(leaf)
    model.train(was_training)
    return round(100.0 * hits / max(total, 1), 2)


def selected(points: list[dict]) -> dict | None:
    """The point a real run reports: lowest val loss, with training stopped after PATIENCE epochs without gain."""
    best, since = None, 0
    for point in points:
        if point["val_loss"] is None:
            continue
        if best is None or point["val_loss"] < best["val_loss"]:
            best, since = point, 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    return best


def compose(overrides: list[str], run_dir: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*overrides, f"paths.run_dir={run_dir}"])


def curve(experiment: str, market: str, recipe: str, epochs: int, work: Path) -> dict:
    from mtic.pipelines.train_eval import build_components

    run_dir = work / f"{experiment}-{market}-{recipe}"
    cfg = compose([f"+experiment={experiment}", f"market={market}", *RECIPES[recipe], f"trainer.max_epochs={epochs}",
                   "callbacks.early_stopping=null", "callbacks.checkpoint=null", "callbacks.progress=null",
                   "logger=none"], run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_components(cfg)
    probe = EpochProbe(datamodule)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[probe],
                         gradient_clip_val=cfg.trainer.get("gradient_clip_val"))
    datamodule.setup("test")
    trainer.fit(model, datamodule=datamodule)
    return {"experiment": experiment, "market": market, "recipe": recipe, "overrides": RECIPES[recipe],
            "encoder": str(cfg.model.backbone), "points": probe.points, "selected": selected(probe.points)}


def tfidf_floor(experiment: str, market: str, work: Path) -> float:
    """TF-IDF + LR on the same bundle and view (the experiment's data group), trained on single-turn queries."""
    from mtic.pipelines import run

    data = VIEW_OF_EXPERIMENT[experiment]
    metrics = run(compose(["+experiment=baseline_tfidf", f"market={market}", f"data={data}", "logger=none"],
                          work / f"tfidf-{market}-{data}"))
    return round(100.0 * float(metrics["test/acc"]), 2)


def plot(results: list[dict], floors: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markets = list(dict.fromkeys(r["market"] for r in results))
    fig, axes = plt.subplots(1, len(markets), figsize=(6 * len(markets), 4.5), squeeze=False)
    for ax, market in zip(axes[0], markets):
        for r in (r for r in results if r["market"] == market):
            xs = [0.0] + [p["train_s"] / 60 for p in r["points"]]
            ys = [None] + [p["test_acc"] for p in r["points"]]
            line, = ax.plot(xs[1:], ys[1:], marker="o", label=r["recipe"])
            if r["selected"]:
                ax.scatter([r["selected"]["train_s"] / 60], [r["selected"]["test_acc"]], s=120, facecolors="none",
                           edgecolors=line.get_color())
        if market in floors:
            ax.axhline(floors[market], color="black", linestyle="--", label=f"TF-IDF + LR ({floors[market]:.1f})")
        ax.set_title(f"{market}: {results[0]['experiment']}")
        ax.set_xlabel("training wall time (min, 2 CPU cores)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("HTC learning curves (circles: the epoch a real run selects on label-free validation loss)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: list[dict], floors: dict[str, float]) -> str:
    header = ("| market | recipe | encoder | epochs | train min | final acc | selected epoch | selected acc "
              "| TF-IDF floor |")
    lines = [header, "|:---|:---|:---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        last, sel = r["points"][-1], r["selected"] or {}
        floor = floors.get(r["market"])
        mark = "" if floor is None or not sel or sel["test_acc"] > floor else " ↓"
        lines.append(f"| {r['market']} | {r['recipe']} | {r['encoder']} | {last['epoch']} | {last['train_s'] / 60:.1f} "
                     f"| {last['test_acc']:.1f} | {sel.get('epoch', '–')} | {sel.get('test_acc', float('nan')):.1f}{mark} "
                     f"| {'–' if floor is None else f'{floor:.1f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="baseline_naive", choices=sorted(VIEW_OF_EXPERIMENT))
    parser.add_argument("--markets", nargs="+", default=["sg", "id"])
    parser.add_argument("--recipes", nargs="+", default=["paper", "lr5e-5", "lr1e-4", "lr1e-4_unfrozen"],
                        choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default="experiments/reports/htc_curves")
    parser.add_argument("--work", default="outputs/htc_curves", help="run directories (not committed)")
    args = parser.parse_args()
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    results, floors = done.get("results", []), done.get("floors", {})
    for market in args.markets:
        if market not in floors:
            floors[market] = tfidf_floor(args.experiment, market, work)
        for recipe in args.recipes:
            if any(r["market"] == market and r["recipe"] == recipe and r["experiment"] == args.experiment
                   for r in results):
                continue  # resumable: finished curves are kept
            print(f"[curves] {args.experiment} {market} {recipe} ({time.strftime('%H:%M:%S')})", flush=True)
            results.append(curve(args.experiment, market, recipe, args.epochs, work))
            out.with_suffix(".json").write_text(json.dumps({"results": results, "floors": floors}, indent=1))
    out.with_suffix(".md").write_text(table(results, floors), encoding="utf-8")
    plot(results, floors, out.with_suffix(".png"))
    print(table(results, floors))


if __name__ == "__main__":
    main()
