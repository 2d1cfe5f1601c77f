"""Prompt templates (conf/prompt/*.yaml): rendering of every variant and robust answer parsing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtic.clara.labeler import ANSWER_OK, EMPTY, GARBAGE, UNMATCHED, SessionLabeler
from mtic.clara.llm import LLMResponse
from mtic.clara.prompts import PromptTemplate, fill, load_prompt, parse_structured, symbol
from mtic.clara.retrieval import Demo

PROMPT_DIR = Path(__file__).resolve().parents[1] / "conf" / "prompt"
VARIANTS = ("p", "p_symbolic", "p_prepend", "p_formatted")
LABELS = {"cancel": "Cancel Order", "refund": "Refund Status", "track": "Track Parcel"}
DEMOS = [Demo("i want to cancel", "cancel", 0.9), Demo("where is my refund", "refund", 0.7),
         Demo("cancel my order pls", "cancel", 0.6)]
SESSION = ["where is my parcel", "ok and the refund?"]


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_renders(name):
    template = load_prompt(PROMPT_DIR / f"{name}.yaml")
    assert template.name == name
    rendered = template.render(DEMOS, SESSION, LABELS)
    user = rendered.request.user
    assert "{" not in user.replace('{"intent"', "")  # no unfilled placeholder
    for demo in DEMOS:
        assert demo.text in user
    assert SESSION[-1] in user and SESSION[0] in user
    assert rendered.intents == ("cancel", "refund")  # first appearance order
    assert len(rendered.request.choices) == 2
    if template.symbolic:
        assert "Cancel Order" not in user and rendered.symbol_map == {"A": "cancel", "B": "refund"}
        assert rendered.request.choices == ("A", "B")
    else:
        assert "Cancel Order" in user
    if template.structured:
        assert json.loads(rendered.request.choices[0]) == {"intent": "Cancel Order"}


def test_demo_order_is_kept():
    template = load_prompt(PROMPT_DIR / "p.yaml")
    user = template.render(DEMOS[::-1], SESSION, LABELS).request.user
    assert user.index("cancel my order pls") < user.index("i want to cancel")


def test_prepend_puts_history_before_the_query():
    template = load_prompt(PROMPT_DIR / "p_prepend.yaml")
    user = template.render(DEMOS, SESSION, LABELS).request.user
    assert user.rstrip().endswith(f"Context: {SESSION[0]}\nQuery: {SESSION[1]}")
    single = template.render(DEMOS, ["just one"], LABELS).request.user
    assert "Context: (none)\nQuery: just one" in single


def test_fill_leaves_other_braces_and_values_alone():
    assert fill('{"intent": "{label}"}', ("label",), label="{x}") == '{"intent": "{x}"}'
    with pytest.raises(KeyError):
        fill("{a}", ("b",), a=1)
    assert [symbol(k) for k in (0, 25, 26, 27)] == ["A", "Z", "AA", "AB"]


@pytest.mark.parametrize("text,expected", [
    ('{"intent": "Refund Status"}', "Refund Status"),
    ('```json\n{"intent": "Refund Status"}\n```', "Refund Status"),
    ("Sure! {'intent': 'Refund Status'} hope it helps", "Refund Status"),
    ('{"label": ["Refund Status"]}', "Refund Status"),
    ('{"Intent": "Refund Status",}', "Refund Status"),
    ('intent: "Refund Status"', "Refund Status"),
    ("{not json at all", None),
    ("", None),
])
def test_structured_parsing(text, expected):
    assert parse_structured(text) == expected


def test_parse_statuses():
    plain = load_prompt(PROMPT_DIR / "p.yaml")
    assert plain.parse(None).status == EMPTY
    assert plain.parse("   ").status == EMPTY
    assert plain.parse("Intent: Refund Status\nbecause...").value == "Refund Status"
    assert plain.parse("...").status == GARBAGE
    formatted = load_prompt(PROMPT_DIR / "p_formatted.yaml")
    assert formatted.parse("I think refund").status == GARBAGE
    symbolic = load_prompt(PROMPT_DIR / "p_symbolic.yaml")
    assert symbolic.parse("B.").value == "B"


class _NoLLM:
    mode = "generate"
    identity = property(lambda self: {"backend": "none"})
    params = property(lambda self: {})

    def complete(self, requests):  # pragma: no cover - never called here
        raise AssertionError


def test_labeler_reads_answers_without_crashing():
    labeler = SessionLabeler(None, load_prompt(PROMPT_DIR / "p_symbolic.yaml"), LABELS, _NoLLM())  # type: ignore[arg-type]
    rendered = labeler.template.render(DEMOS, SESSION, LABELS)
    read = lambda text: labeler.read("ascending", rendered, LLMResponse(text))
    assert read("B").intent == "refund" and read("B").status == ANSWER_OK
    assert read("The code is A.").intent == "cancel"
    assert read("Z").status == UNMATCHED  # a symbol that was not shown
    assert read("").status == EMPTY
    assert labeler.read("x", rendered, LLMResponse(None, status="failed", error="timeout")).status == "failed"
    plain = SessionLabeler(None, load_prompt(PROMPT_DIR / "p.yaml"), LABELS, _NoLLM())  # type: ignore[arg-type]
    rendered = plain.template.render(DEMOS, SESSION, LABELS)
    assert plain.read("a", rendered, LLMResponse("refund status.")).intent == "refund"
    assert plain.read("a", rendered, LLMResponse("Pizza delivery")).status == UNMATCHED
    assert plain.read("a", rendered, LLMResponse("Track Parcel")).intent == "track"  # any label, not only candidates
    assert plain.read("a", rendered, LLMResponse("x", choice=1)).intent == "refund"  # score mode


def test_template_needs_name_and_text():
    with pytest.raises(ValueError):
        PromptTemplate.from_config({"name": "x"})


def _render_script():
    import importlib.util
    import sys

    if "render_prompts" in sys.modules:
        return sys.modules["render_prompts"]
    path = PROMPT_DIR.parents[1] / "experiments" / "render_prompts.py"
    spec = importlib.util.spec_from_file_location("render_prompts", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_prompts"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_render_script_shows_session_and_demos_and_hides_labels_when_symbolic(tiny_bundle):
    script = _render_script()
    rendering = script.render_examples(k=2, max_demos=3, overrides=[f"paths.data_dir={tiny_bundle}",
                                                                    "market.encoder=tiny-bert"])
    session = rendering.session
    assert len(session.turns) >= 2 and rendering.demos
    assert [ex.variant for ex in rendering.examples] == list(VARIANTS)
    for ex in rendering.examples:
        text = ex.prompt_text
        assert session.queries[-1] in text
        for demo in rendering.demos:
            assert demo.text in text
        demo_labels = {ex.labels[d.intent] for d in rendering.demos}
        if ex.variant == "p_symbolic":
            assert not [label for label in demo_labels if label in text]
            assert ex.score_answer["method"] == "score" and ex.generate_answers[1][1]["method"] == "symbol"
        else:
            assert all(label in text for label in demo_labels)
    report = script.to_markdown(rendering, "cmd")
    assert report.count("```text") == len(VARIANTS)
