"""Validation of the composed Hydra config: wrong values and missing keys get one clear message.

The allowed values are owned by the code that uses them (symbol tuning's decoders, the chat encoder, the HTC,
the CLARA LLM backends, the label targets) and imported from there (the models' lists from their torch-free
`*_constants` modules, so that importing this module, and so every `mtic` command, stays fast); this module owns
no vocabulary."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from mtic.clara.llm.base import DECODES as LLM_DECODES
from mtic.hub.constants import BACKBONE_KINDS
from mtic.inputs.chat import LOSS_ON
from mtic.labels.targets import TARGET_KINDS
from mtic.models.htc_constants import LEVEL_DECODINGS
from mtic.models.rollout_constants import DECODES, HISTORIES

RENAMED_KEYS = {
    "llm.mode": f"llm.decode ({' | '.join(LLM_DECODES)})",
    "summary_llm.mode": f"summary_llm.decode ({' | '.join(LLM_DECODES)})",
    "model.decoding": f"model.level_decoding ({' | '.join(LEVEL_DECODINGS)})",
}
"""Keys that were renamed: setting the old one is a one-line error naming the new one."""
OPTIONAL_GROUPS = ("llm", "prompt", "sweep", "launcher", "corpus")
"""Groups listed as null in conf/config.yaml's defaults: chosen with `group=option`, not appended with `+`."""


class ConfigError(ValueError):
    """A config value is missing or not allowed; the message names the key and the allowed values."""


@dataclass(frozen=True)
class Rule:
    key: str
    choices: Sequence[Any] | None = None
    kind: type | tuple[type, ...] | None = None
    required: bool = True
    minimum: float | None = None
    """A number: the smallest allowed value (`positive` excludes it); a bool is no number."""
    positive: bool = False


RULES: tuple[Rule, ...] = (
    Rule("experiment", kind=str),
    Rule("seed", kind=int),
    Rule("market.name", kind=str),
    Rule("market.languages", kind=list),
    Rule("market.bundle", kind=str),
    Rule("paths.cache_dir", kind=str),
    Rule("backbone.name", kind=str),
    Rule("backbone.kind", choices=BACKBONE_KINDS),
    Rule("labels.target", choices=TARGET_KINDS, required=False),
    Rule("labels.cross_lingual", kind=bool, required=False),
    Rule("model.decode", choices=DECODES, required=False),
    Rule("model.history", choices=HISTORIES, required=False),
    Rule("model.loss_on", choices=LOSS_ON, required=False),
    Rule("model.level_decoding", choices=LEVEL_DECODINGS, required=False),
    Rule("llm.decode", choices=LLM_DECODES, required=False),
    Rule("summary_llm.decode", choices=LLM_DECODES, required=False),
    Rule("pipeline._target_", kind=str),
    Rule("pipeline.resume", kind=str, required=False),  # auto | never | a checkpoint file (train_eval.resume_point)
    # numbers, checked before any data or model is loaded (issue 22): a typo is one line, not a late traceback
    Rule("trainer.max_epochs", kind=int, required=False, minimum=-1),
    Rule("trainer.max_steps", kind=int, required=False, minimum=-1),
    Rule("trainer.accumulate_grad_batches", kind=int, required=False, minimum=1),
    Rule("trainer.gradient_clip_val", kind=(int, float), required=False, minimum=0),
    Rule("data.batch_size", kind=int, required=False, minimum=1),
    Rule("data.eval_batch_size", kind=int, required=False, minimum=1),
    Rule("model.lr", kind=(int, float), required=False, minimum=0, positive=True),
    Rule("model.head_lr", kind=(int, float), required=False, minimum=0, positive=True),
    Rule("model.max_length", kind=int, required=False, minimum=1),
)

_MISSING = object()
_UNRESOLVED = object()


def _get(cfg: DictConfig, dotted: str) -> Any:
    """The value at `dotted`; _MISSING when absent; _UNRESOLVED when it interpolates a key that is absent (that key's
    own rule reports it: `market.name` follows `market.bundle`)."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        try:
            node = node[part]
        except InterpolationKeyError:
            return _UNRESOLVED
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=False)
    return node


LLM_PIPELINES = ("mtic.pipelines.clara.clara", "mtic.pipelines.clara.lara")
"""The pipelines that prompt an LLM: the only readers of the `llm` and `prompt` groups."""
CORPUS_PIPELINES = ("mtic.pipelines.pretrain.run",)
"""The pipelines that train on a general chat corpus: the only readers of the `corpus` group."""


def unread_groups(cfg: DictConfig) -> list[str]:
    """Groups set in the config that nothing of this run reads (an override that would be silently ignored).

    `labels` is read by a model that interpolates it (`model.labels`, symbol tuning) or by an LLM pipeline
    (`pipeline.labels`); `llm` and `prompt` by the LLM pipelines only; `corpus` by pipeline=pretrain only. HTC
    experiments compose no labels."""
    pipeline = cfg.get("pipeline") or {}
    llm_pipeline = pipeline.get("_target_") in LLM_PIPELINES
    problems = []
    if cfg.get("labels") is not None and "labels" not in (cfg.get("model") or {}) and "labels" not in pipeline:
        problems.append(f"'labels' is set but experiment '{cfg.get('experiment')}' reads no label text (its model "
                        f"{(cfg.get('model') or {}).get('_target_')} predicts intent ids): drop labels=")
    for group in ("llm", "prompt"):
        if cfg.get(group) is not None and not llm_pipeline:
            problems.append(f"'{group}' is set but pipeline {pipeline.get('_target_')} prompts no LLM: drop {group}= "
                            "(the LLM pipelines are +experiment=lara | clara | lara_pl)")
    if cfg.get("corpus") is not None and pipeline.get("_target_") not in CORPUS_PIPELINES:
        problems.append(f"'corpus' is set but pipeline {pipeline.get('_target_')} trains on no chat corpus: drop "
                        "corpus= (general-chat pre-training is +experiment=pretrain_chat)")
    return problems


def renamed_key_message(key: str) -> str | None:
    """The one-line message for a renamed key (`llm.mode` ...), None for any other key."""
    new = RENAMED_KEYS.get(key.lstrip("+~"))
    return f"'{key.lstrip('+~')}' was renamed: use {new}" if new else None


def old_override_message(arg: str) -> str | None:
    """The one-line message for a command-line override in an old form (a renamed key, `+sweep=...` for an
    optional group that the root defaults now list), None for any other."""
    key, _, value = arg.partition("=")
    if key.startswith("+") and not key.startswith("++") and key[1:] in OPTIONAL_GROUPS:
        return f"'{key[1:]}' is in the root defaults (null until chosen): use {key[1:]}={value}, without '+'"
    return renamed_key_message(key)


def refuse_renamed_keys(cfg: DictConfig) -> None:
    """ConfigError (one line) when the config sets a key under its old name."""
    for key in RENAMED_KEYS:
        if _get(cfg, key) is not _MISSING:
            raise ConfigError(renamed_key_message(key))


def validate_config(cfg: DictConfig, rules: Sequence[Rule] = RULES) -> None:
    """Raise ConfigError for a renamed key (one line), for the first missing required key or disallowed value
    (all problems listed), and for config groups that nothing of the run reads (`unread_groups`)."""
    refuse_renamed_keys(cfg)
    problems = unread_groups(cfg)
    for rule in rules:
        value = _get(cfg, rule.key)
        if value is _UNRESOLVED:
            continue
        if value is _MISSING or value is None:
            if rule.required:
                problems.append(f"missing required key '{rule.key}'")
            continue
        if rule.choices is not None and value not in rule.choices:
            problems.append(f"'{rule.key}' is {value!r}; allowed values: {', '.join(map(str, rule.choices))}")
        numeric = rule.minimum is not None
        if rule.kind is not None and (not isinstance(value, rule.kind) or (numeric and isinstance(value, bool))):
            names = rule.kind.__name__ if isinstance(rule.kind, type) else "/".join(k.__name__ for k in rule.kind)
            problems.append(f"'{rule.key}' must be of type {names}, got {type(value).__name__} ({value!r})")
        elif numeric and not (value > rule.minimum if rule.positive else value >= rule.minimum):
            problems.append(f"'{rule.key}' must be {'>' if rule.positive else '>='} {rule.minimum:g}, got {value!r}")
    if len(problems) == 1:
        raise ConfigError(f"invalid config: {problems[0]}")  # one problem, one line
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
