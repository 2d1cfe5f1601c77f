"""What a checkpoint's run knew: its view, bundle and market, read from the run's saved Hydra config.

A checkpoint holds the HTC's weights, hyper-parameters and taxonomy, but not the view it was trained with.
Runs save their composed config to `<run dir>/.hydra/config.yaml` and checkpoints to `<run dir>/checkpoints/`,
so the config is found from the checkpoint's path; the selective baseline's selector sits in `<run dir>/selector`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtic.deploy.artifact import VIEW_KINDS, ExportError, ViewSpec

HYDRA_CONFIG = Path(".hydra") / "config.yaml"


@dataclass
class RunContext:
    """Fields are None when unknown (a checkpoint outside a run directory)."""

    run_dir: Path | None = None
    view: ViewSpec | None = None
    bundle: str | None = None
    market: str | None = None
    languages: list[str] | None = None
    cache_dir: str | None = None
    datasets_dir: str | None = None
    experiment: str | None = None


def _select(cfg: Any, key: str) -> Any:
    """A value of the saved config, resolved where it can be (run-time resolvers like ${hydra:} cannot)."""
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is simply unknown here
        return None
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def view_from_config(data: Any) -> ViewSpec | None:
    """The ViewSpec of a `data` config node (its `eval_view` when set: that is what testing used)."""
    node = _select(data, "eval_view") or _select(data, "view")
    if not isinstance(node, dict) or "_target_" not in node:
        return None
    return ViewSpec.from_target(node["_target_"], node.get("separator"))


def context_from_config(cfg: Any, run_dir: Path | None = None) -> RunContext:
    """A RunContext from a composed run config (a DictConfig)."""
    return RunContext(
        run_dir=run_dir,
        view=view_from_config(cfg.get("data")) if cfg.get("data") is not None else None,
        bundle=_select(cfg, "paths.data_dir") or _select(cfg, "market.bundle"),
        market=_select(cfg, "market.name"),
        languages=_select(cfg, "market.languages"),
        cache_dir=_select(cfg, "paths.cache_dir"),
        datasets_dir=_select(cfg, "paths.datasets_dir"),
        experiment=_select(cfg, "experiment"),
    )


def checkpoint_context(checkpoint: str | Path) -> RunContext:
    """The run config of `<run dir>/checkpoints/x.ckpt` (or of `<run dir>/x.ckpt`); empty when there is none."""
    from omegaconf import OmegaConf

    path = Path(checkpoint).resolve()
    for run_dir in (path.parent.parent, path.parent):
        config = run_dir / HYDRA_CONFIG
        if config.is_file():
            return context_from_config(OmegaConf.load(config), run_dir)
    return RunContext()


def selector_dir(context: RunContext) -> Path:
    from mtic.models.selector import SELECTOR_DIR  # torch: only when a selector is needed

    path = context.run_dir / SELECTOR_DIR if context.run_dir else None
    if path is None or not path.is_dir():
        raise ExportError(f"the selected_concat view needs the run's trained selector (<run dir>/{SELECTOR_DIR}), not "
                          "found next to this checkpoint; export a single-turn or naive-concat model, or keep the run "
                          "directory intact (pipeline=export: pipeline.selector=<its directory>)")
    return path


def selector_for(context: RunContext, path: str | Path | None = None) -> Any:
    """The run's trained selector (PyTorch), for the selected_concat view: from `path` or <run dir>/selector."""
    from mtic.models.selector import load_selector

    try:
        return load_selector(path or selector_dir(context))
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None


def bundle_path(bundle: str, cache_dir: str | None = None, datasets_dir: str | None = None) -> Path:
    """A bundle spec (a directory or `demo:<market>`) -> a bundle directory."""
    from mtic.data.sources import resolve_bundle
    from mtic.hub.registry import cache_root

    return resolve_bundle(bundle, cache_dir or str(cache_root()), datasets_dir)


def load_for_serving(checkpoint: str | Path, view: str | ViewSpec | None = None, cache_dir: str | None = None,
                     context: RunContext | None = None, selector: str | Path | None = None,
                     ) -> tuple[RunContext, ViewSpec, Any, Any]:
    """(run context, view, HTC model, selector or None) of a checkpoint. The context defaults to the checkpoint's
    run config, the view to the context's, the selector (selected_concat) to <run dir>/selector."""
    from mtic.models.checkpoint_io import read_checkpoint
    from mtic.models.htc import HTC

    state = read_checkpoint(checkpoint)  # a missing, empty or corrupt file is named first: `<file>: <reason>`
    context = context or checkpoint_context(checkpoint)
    spec = ViewSpec(view) if isinstance(view, str) else (view or context.view)
    if spec is None:
        raise ExportError(f"{checkpoint}: no run config (<run dir>/.hydra/config.yaml) tells the view this model "
                          f"was trained with; pass --view (mtic export) or view= (Python): {' | '.join(VIEW_KINDS)}")
    model = HTC.from_state(state, checkpoint, cache_dir=cache_dir)
    trained_selector = selector_for(context, selector) if spec.needs_selector else None
    return context, spec, model, trained_selector
