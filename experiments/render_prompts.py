"""Render the four CLARA prompt variants for one real session, exactly as the pipelines build them.

    python experiments/render_prompts.py [--market sg] [--k 3] [--max-demos 3] [--seed 0]

The config is composed as for `python run.py +experiment=lara_sg prompt=<variant>`; the labeller comes from
`mtic.pipelines.clara.build_labeler` (market embedder, demo index, retriever, template, labels, matcher) with a
scripted LLM in place of the model, and every prompt goes through `SessionLabeler.label` (demo ordering,
`PromptTemplate.render`, answer reading). The session is drawn (seeded) among the test sessions with 2 to
`--max-turns` turns whose gold intent is among the retrieved candidates. Writes `experiments/reports/prompts.md`.
"""
from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from mtic.clara.labeler import SessionLabeler
from mtic.clara.llm import LLMRequest, LLMResponse, backend_mode
from mtic.clara.llm.local import choice_texts, plain_prompt_text, resolve_answer_end
from mtic.clara.prompts import RenderedPrompt
from mtic.clara.retrieval import Demo, Retriever
from mtic.clara.self_consistency import order_names, orderings
from mtic.data.bundle import read_bundle
from mtic.data.schema import Session
from mtic.data.taxonomy import Taxonomy
from mtic.hub.registry import load_sentence_embedder
from mtic.pipelines.clara import build_labeler, voting
from mtic.pipelines.train_eval import bundle_dir_of

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
VARIANTS = ("p", "p_symbolic", "p_prepend", "p_formatted")
DEFAULT_OUT = ROOT / "experiments" / "reports" / "prompts.md"


class ScriptedLLM:
    """Stands in for the LLM: records the requests of `SessionLabeler.label` and returns the answers queued."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[LLMRequest] = []
        self.answers: list[LLMResponse] = []

    identity = property(lambda self: {"backend": "scripted"})
    params = property(lambda self: {})

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self.requests.extend(requests)
        out, self.answers = self.answers[: len(requests)], self.answers[len(requests) :]
        return out


@dataclass
class Example:
    """One variant rendered for the session: the prompt, its score-mode choices and how answers are read."""

    variant: str
    description: str
    rendered: RenderedPrompt
    prompt_text: str
    continuations: list[str]
    labels: dict[str, str]
    score_answer: dict[str, Any]
    generate_answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Rendering:
    """The session, its retrieved demos (retrieval order) and one `Example` per variant."""

    market: str
    embedder: str
    settings: dict[str, Any]
    session: Session
    demos: list[Demo]
    order: str
    examples: list[Example]


def compose_config(prompt: str, market: str, k: int, max_demos: int, seed: int,
                   overrides: Sequence[str] = ()) -> DictConfig:
    """The config of `python run.py +experiment=lara_sg market=<market> prompt=<prompt> ...`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "+experiment=lara_sg", f"market={market}", f"prompt={prompt}", f"seed={seed}",
            f"pipeline.retrieval.k={k}", f"pipeline.retrieval.max_demos={max_demos}", *overrides])


def pick_session(sessions: Sequence[Session], retriever: Retriever, seed: int, max_turns: int) -> Session:
    """A seeded draw among sessions of 2..max_turns turns with a gold target, preferring those whose gold
    intent is among >= 2 retrieved candidate intents (so every answer form can be shown)."""
    eligible = [s for s in sessions if 2 <= len(s.turns) <= max_turns and s.target]
    if not eligible:
        raise SystemExit(f"error: no session with 2 to {max_turns} turns and a gold target in this split")
    found = retriever.retrieve([s.queries for s in eligible])
    good = [s for s, demos in zip(eligible, found)
            if s.target in {d.intent for d in demos} and len({d.intent for d in demos}) >= 2]
    pool = good or eligible
    return pool[random.Random(seed).randrange(len(pool))]


def generate_texts(example_answer: str, label: str, symbolic: bool, structured: bool) -> list[str]:
    """Free-text answers a model might write in generate mode: the demo form continuing the pattern, a sloppy
    form, and no answer."""
    if symbolic:
        sloppy = f"The code is {example_answer}."
    elif structured:
        sloppy = "Sure! Here it is: {'intent': '" + label.lower() + "'}"
    else:
        sloppy = f"{label.lower()[:-1]}."  # a typo: gestalt matching
    return [f" {example_answer}\n\nQuery: ...", sloppy, "I am not sure."]


def _answer(record: dict[str, Any]) -> dict[str, Any]:
    answer = record["answers"][0]
    return {"status": answer["status"], "intent": answer["intent"], "method": answer["method"]}


def render_variant(labeler: SessionLabeler, llm: ScriptedLLM, session: Session, demos: list[Demo], cfg: DictConfig,
                   ) -> Example:
    """The first ordering's prompt of `session` as `SessionLabeler.label` builds it, and the reading of a
    score-mode answer (the gold intent) and of a few generate-mode texts."""
    template = labeler.template
    ordered = orderings(demos, labeler.n_orders, labeler.seed, session.id)[0]
    rendered = template.render(ordered, session.queries, labeler.labels)
    gold = session.target
    k = rendered.intents.index(gold) if gold in rendered.intents else 0
    label = labeler.labels[rendered.intents[k]]
    llm.answers = [LLMResponse(rendered.request.choices[k], choice=k)]
    score = _answer(labeler.label([session])[0])
    generated = []
    for text in generate_texts(rendered.request.choices[k], label, template.symbolic, template.structured):
        llm.answers = [LLMResponse(text)]
        generated.append((text, _answer(labeler.label([session])[0])))
    if any(request != rendered.request for request in llm.requests):
        raise RuntimeError("SessionLabeler.label sent another prompt than the one rendered here")
    chat = bool(cfg.llm.get("chat_template", False))
    answer_end = resolve_answer_end(str(cfg.llm.get("answer_end", "auto")), chat)
    return Example(template.name, template.description, rendered, plain_prompt_text(rendered.request),
                   choice_texts(rendered.request, answer_end), labeler.labels, score, generated)


def render_examples(market: str = "sg", k: int = 3, max_demos: int = 3, seed: int = 0, split: str = "test",
                    max_turns: int = 3, overrides: Sequence[str] = (), variants: Sequence[str] = VARIANTS,
                    ) -> Rendering:
    """Every variant rendered for one session of `market` (see the module docstring)."""
    configs = {v: compose_config(v, market, k, max_demos, seed, overrides) for v in variants}
    first = configs[variants[0]]
    bundle = read_bundle(bundle_dir_of(first))
    taxonomy = Taxonomy.from_intents(bundle.intents)
    retrieval = OmegaConf.to_container(first.pipeline.retrieval, resolve=True)
    embedder = load_sentence_embedder(retrieval["embedder"], first.paths.cache_dir)
    session, demos, examples = None, [], []
    for cfg in configs.values():
        pipe = cfg.pipeline
        vote = voting(pipe.self_consistency, pipe.sc_orders, pipe.sc_seed)
        llm = ScriptedLLM(backend_mode(str(cfg.llm.decode)))
        labeler = build_labeler(cfg, bundle, taxonomy, retrieval, OmegaConf.to_container(pipe.labels, resolve=True),
                                OmegaConf.to_container(pipe.matcher), vote, llm=llm, embedder=embedder)
        if session is None:
            session = pick_session(bundle.require_sessions(split), labeler.retriever, seed, max_turns)
            demos = labeler.retriever.retrieve([session.queries])[0]
        examples.append(render_variant(labeler, llm, session, demos, cfg))
    assert session is not None
    settings = {"k": retrieval["k"], "max_demos": retrieval["max_demos"], "split": split, "seed": seed,
                "labels": first.labels.get("target"), "llm": f"{first.llm.backend} {first.llm.model}"}
    return Rendering(market, str(retrieval["embedder"]), settings, session, demos, order_names(1)[0], examples)


def _cell(text: Any) -> str:
    return "`" + repr(text).replace("|", "\\|") + "`" if isinstance(text, str) else f"`{text}`"


def _read(answer: dict[str, Any]) -> str:
    return f"{answer['status']}, intent `{answer['intent']}`" + (f" ({answer['method']})" if answer["method"] else "")


def to_markdown(r: Rendering, command: str) -> str:
    """The report: the session and demos, then per variant the prompt and how its answers are read."""
    s = r.session
    gold_label = r.examples[0].labels.get(s.target or "", "")
    origin = (f"Generated by `{command}`: the config of `python run.py +experiment=lara_sg market={r.market} "
              "prompt=<variant>`, the pipelines' `build_labeler` (retriever, template, labels, matcher) and "
              "`SessionLabeler.label`, with a scripted LLM instead of the model.")
    about = (f"Session `{s.id}` of the {r.market} `{r.settings['split']}` split (drawn with seed "
             f"{r.settings['seed']}), gold intent `{s.target}` (label \"{gold_label}\"), labels "
             f"`{r.settings['labels']}`. Demos: the {r.embedder} retrieval, k={r.settings['k']} per query, at most "
             f"{r.settings['max_demos']} demos; prompts show them in the `{r.order}` ordering (closest demo last; "
             "CLARA's self-consistency adds `descending` and seeded `random` orderings).")
    turns = [f"| {n} | {_cell(t.text)} | {f'`{t.intent}`' if t.intent else '–'} |"
             for n, t in enumerate(s.turns, start=1)]
    demos = [f"| {_cell(d.text)} | `{d.intent}` | {d.score:.3f} |" for d in r.demos]
    lines = ["# CLARA prompts, rendered", "", origin, "", about, "",
             "| turn | query | gold intent |", "|---:|:---|:---|", *turns, "",
             "| demo (retrieval order) | intent | similarity |", "|:---|:---|---:|", *demos, ""]
    shown = (f"The prompt as the local backend (`{r.settings['llm']}`, no chat template) reads it; the model "
             "continues after the last line:")
    score = ("Score decoding (`llm.decode=score`, default): the LLM ranks these continuations, one per candidate intent "
             "(the demos' intents), by log-likelihood; the best is the answer.")
    for ex in r.examples:
        reader = "the symbol map" if ex.rendered.symbols else "the label matcher (exact, gestalt)"
        generate = ("Greedy decoding (`llm.decode=greedy`): free text after the prompt, read by the "
                    f"template's parser and then {reader}:")
        choices = [f"| {_cell(text)} | `{intent}`{' (gold)' if intent == s.target else ''} | {ex.labels[intent]} |"
                   for text, intent in zip(ex.continuations, ex.rendered.intents)]
        lines += [f"## `{ex.variant}`", "", ex.description, "", shown, "", "```text", ex.prompt_text, "```", "",
                  score, "", "| continuation | intent | label |", "|:---|:---|:---|", *choices, "",
                  f"Read: the LLM choosing the gold continuation -> {_read(ex.score_answer)}.", "",
                  generate, "", "| generated text | read as |", "|:---|:---|",
                  *[f"| {_cell(text)} | {_read(answer)} |" for text, answer in ex.generate_answers], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--market", default="sg")
    parser.add_argument("--k", type=int, default=3, help="demos retrieved per query")
    parser.add_argument("--max-demos", type=int, default=3, help="demos per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (e.g. labels=original)")
    args = parser.parse_args(argv)
    rendering = render_examples(args.market, args.k, args.max_demos, args.seed, args.split, args.max_turns,
                                args.overrides)
    command = "python experiments/render_prompts.py " + " ".join(
        [f"--market {args.market}", f"--k {args.k}", f"--max-demos {args.max_demos}", f"--seed {args.seed}",
         *([f"--split {args.split}"] if args.split != "test" else []), *args.overrides])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(rendering, command) + "\n", encoding="utf-8")
    print(f"[mtic] prompts of session {rendering.session.id}: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
