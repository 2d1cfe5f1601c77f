"""Prompt templates (conf/prompt/*.yaml) rendered with retrieved demos and a session, and answer parsing.

Templates use `{name}` placeholders; only the names below are replaced, so other braces (JSON examples) stay.
  template: {demos} {session} {history} {query} {labels}   (the user message)
  demo:     {text} {answer}                                 (one demo line)
  turn:     {n} {text}                                      (one line of {session})
  answer:   {label} {symbol}                                (how an answer is written, in demos and score mode)
`symbolic` templates show a symbol (A, B, ...) instead of each intent's label; `structured` ones expect a JSON
answer such as {"intent": "..."} that `parse_structured` reads robustly.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtic.clara.llm import LLMRequest
from mtic.clara.retrieval import Demo

TEMPLATE_FIELDS = ("demos", "session", "history", "query", "labels")
DEMO_FIELDS = ("text", "answer")
TURN_FIELDS = ("n", "text")
ANSWER_FIELDS = ("label", "symbol")
STRUCTURED_KEYS = ("intent", "label", "intent_label", "answer", "intent_title")
SYMBOL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# answer statuses (see `ParsedAnswer`)
OK, EMPTY, GARBAGE = "ok", "empty", "garbage"

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_KEY_VALUE = re.compile(r"[\"']?(?:" + "|".join(STRUCTURED_KEYS) + r")[\"']?\s*[:=]\s*[\"']([^\"'\n}]+)", re.IGNORECASE)
_SYMBOL_TOKEN = re.compile(r"(?<![A-Za-z])[A-Z]{1,2}(?![A-Za-z])")
_LEAD = re.compile(r"^\s*(?:intent(?:\s+label)?|label|answer|code)\s*[:：-]\s*", re.IGNORECASE)
_EDGE = " \t\r\n\"'`*.,;:!?()[]<>"


def fill(pattern_text: str, allowed: Sequence[str], /, **values: Any) -> str:
    """Replace `{name}` for the allowed names only, in one pass (a value's own braces are never expanded);
    any other brace is left as written."""
    unknown = set(values) - set(allowed)
    if unknown:
        raise KeyError(f"unknown placeholders {sorted(unknown)}")
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, allowed)) + r")\}")
    return pattern.sub(lambda m: str(values.get(m.group(1), m.group(0))), pattern_text)


def symbol(k: int) -> str:
    """A, B, ..., Z, AA, AB, ... for the k-th intent of a prompt."""
    n, out = len(SYMBOL_ALPHABET), ""
    k += 1
    while k:
        k, r = divmod(k - 1, n)
        out = SYMBOL_ALPHABET[r] + out
    return out


@dataclass(frozen=True)
class ParsedAnswer:
    """What an LLM answered: `value` = the label or symbol text (None unless status is 'ok')."""

    value: str | None
    status: str


def parse_structured(text: str) -> str | None:
    """The intent named by a JSON-ish answer: fenced or bare objects, single quotes, extra prose, lists."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in candidates:
        for obj in _json_objects(chunk):
            value = _intent_value(obj)
            if value:
                return value
    found = _KEY_VALUE.search(text)
    return found.group(1).strip() if found else None


def _json_objects(text: str) -> list[Any]:
    """Every balanced {...} substring that parses as JSON (single quotes tried as a fallback)."""
    objects, depth, start = [], 0, None
    for k, ch in enumerate(text):
        if ch == "{":
            depth, start = depth + 1, k if depth == 0 else start
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                raw = text[start : k + 1]
                for attempt in (raw, raw.replace("'", '"'), re.sub(r",\s*}", "}", raw)):
                    try:
                        objects.append(json.loads(attempt))
                        break
                    except json.JSONDecodeError:
                        continue
    return objects


def _intent_value(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        if str(key).strip().lower() in STRUCTURED_KEYS:
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt ready for a backend plus what is needed to read its answer.

    `intents[k]` is the intent of `request.choices[k]` (the answer text scored in score mode);
    `symbols` maps each symbol shown to its intent (symbolic templates only).
    """

    request: LLMRequest
    intents: tuple[str, ...]
    symbols: tuple[tuple[str, str], ...] = ()

    @property
    def symbol_map(self) -> dict[str, str]:
        return dict(self.symbols)


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt variant (a conf/prompt/*.yaml file); see the module docstring for the placeholders."""

    name: str
    template: str
    demo: str = "Query: {text}\nIntent: {answer}"
    turn: str = "{n}. {text}"
    answer: str = "{label}"
    answer_prefix: str = ""
    system: str = ""
    symbolic: bool = False
    structured: bool = False
    demo_separator: str = "\n\n"
    history_separator: str = " | "
    no_history: str = "(none)"
    label_separator: str = "; "
    description: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> PromptTemplate:
        """From a plain mapping (an OmegaConf node converted to a dict); unknown keys go to `extra`."""
        known = set(cls.__dataclass_fields__) - {"extra"}
        data = {k: v for k, v in cfg.items() if k in known}
        missing = {"name", "template"} - set(data)
        if missing:
            raise ValueError(f"a prompt config needs {sorted(missing)}")
        return cls(**data, extra={k: v for k, v in cfg.items() if k not in known and not str(k).startswith("_")})

    # -- rendering -----------------------------------------------------------------------------------
    def render(self, demos: Sequence[Demo], queries: Sequence[str], labels: Mapping[str, str]) -> RenderedPrompt:
        """The prompt for a session (`queries`, oldest first) with `demos` in the given order.

        The candidate intents are the demos' intents in order of first appearance; `labels` gives each
        intent's label text.
        """
        if not queries:
            raise ValueError("a session needs at least one query")
        intents = tuple(dict.fromkeys(d.intent for d in demos))
        missing = [i for i in intents if i not in labels]
        if missing:
            raise KeyError(f"no label for intents {missing[:5]}")
        symbols = {intent: symbol(k) for k, intent in enumerate(intents)} if self.symbolic else {}
        answer_of = {i: self.answer_text(labels[i], symbols.get(i, "")) for i in intents}
        demo_text = self.demo_separator.join(
            fill(self.demo, DEMO_FIELDS, text=d.text, answer=answer_of[d.intent]) for d in demos
        )
        shown = [symbols[i] for i in intents] if self.symbolic else [labels[i] for i in intents]
        history = self.history_separator.join(queries[:-1]) if len(queries) > 1 else self.no_history
        session = "\n".join(fill(self.turn, TURN_FIELDS, n=n, text=q) for n, q in enumerate(queries, start=1))
        user = fill(self.template, TEMPLATE_FIELDS, demos=demo_text, session=session, history=history,
                    query=queries[-1], labels=self.label_separator.join(shown))
        request = LLMRequest(system=self.system.strip(), user=user.strip(), answer_prefix=self.answer_prefix,
                             choices=tuple(answer_of[i] for i in intents))
        return RenderedPrompt(request, intents, tuple((s, i) for i, s in symbols.items()))

    def answer_text(self, label: str, symbol_text: str = "") -> str:
        """How the answer naming one intent is written (demo answers, score-mode continuations)."""
        return fill(self.answer, ANSWER_FIELDS, label=label, symbol=symbol_text)

    # -- parsing -------------------------------------------------------------------------------------
    def parse(self, text: str | None) -> ParsedAnswer:
        """The label/symbol in an answer; never raises: 'empty' or 'garbage' when nothing usable is there."""
        if text is None or not str(text).strip():
            return ParsedAnswer(None, EMPTY)
        text = str(text).strip()
        if self.answer_prefix and text.lower().startswith(self.answer_prefix.strip().lower()):
            text = text[len(self.answer_prefix.strip()) :]
        if self.structured:
            value = parse_structured(text)
            if value is None:
                return ParsedAnswer(None, GARBAGE)
        else:
            lines = [line for line in text.splitlines() if line.strip()]
            value = _LEAD.sub("", lines[0]).strip(_EDGE) if lines else ""
        value = value.strip(_EDGE)
        if self.symbolic and not _SYMBOL_TOKEN.search(value):
            return ParsedAnswer(None, GARBAGE)  # which shown symbol it names is decided by the labeller
        return ParsedAnswer(value, OK) if value else ParsedAnswer(None, GARBAGE)


def load_prompt(path_or_cfg: Any) -> PromptTemplate:
    """A template from a YAML file path, a mapping or an OmegaConf node."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(path_or_cfg, DictConfig):
        return PromptTemplate.from_config(OmegaConf.to_container(path_or_cfg, resolve=True))  # type: ignore[arg-type]
    if isinstance(path_or_cfg, Mapping):
        return PromptTemplate.from_config(path_or_cfg)
    import yaml

    with open(path_or_cfg, encoding="utf-8") as handle:
        return PromptTemplate.from_config(yaml.safe_load(handle))
