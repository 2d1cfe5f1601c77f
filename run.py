"""mtic entry point: `python run.py +experiment=st_sg` (see README). Hydra composes conf/, mtic runs it."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from mtic.cli_errors import friendly_errors
    from mtic.pipelines import run

    with friendly_errors():
        return run(cfg)


if __name__ == "__main__":
    main()
