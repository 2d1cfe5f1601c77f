"""mtic entry point: `python run.py +experiment=st_sg` (see README). Hydra composes conf/, mtic runs it."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ENV_HINT = ("secrets never go on the command line (they would be kept in .hydra/overrides.yaml, the shell history "
            "and the W&B run metadata): put them in environment variables, e.g. OPENAI_API_KEY (llm.api_key_env "
            "names it) or MTIC_LLM_URL with llm.base_url='${oc.env:MTIC_LLM_URL}'")


def refuse_renamed_overrides(argv: list[str]) -> None:
    """Exit 2 with one line when a command-line override has an old form (llm.mode=, model.decoding=, +sweep=):
    Hydra would otherwise stop without naming the new one."""
    from mtic.config_schema import old_override_message

    for arg in argv:
        why = None if arg.startswith("-") or "=" not in arg else old_override_message(arg)
        if why:
            print(f"error: {why}", file=sys.stderr)
            raise SystemExit(2)


def refuse_secret_overrides(argv: list[str]) -> None:
    """Exit 2 with one line when a command-line override carries a secret (a secret-looking key such as
    +extra.api_key=..., or credentials in a value such as a URL with user:password@)."""
    from mtic.eval.results import secret_override

    for arg in argv:
        why = None if arg.startswith("-") else secret_override(arg)
        if why:
            print(f"error: command-line override {arg.partition('=')[0]}=***: {why}; {ENV_HINT}", file=sys.stderr)
            raise SystemExit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from mtic.cli_errors import friendly_errors
    from mtic.eval.results import redact_logs, redact_yaml_file
    from mtic.pipelines import run

    redact_logs("", "httpx", "httpcore", "openai", "mtic")  # run.log / console: no credentials in any line
    output_subdir = HydraConfig.get().output_subdir
    if output_subdir:  # a secret from a config file or an env interpolation Hydra resolved: masked in .hydra/
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            redact_yaml_file(Path(HydraConfig.get().runtime.output_dir) / output_subdir / name)
    with friendly_errors():
        return run(cfg)


if __name__ == "__main__":
    refuse_secret_overrides(sys.argv[1:])
    refuse_renamed_overrides(sys.argv[1:])
    main()
