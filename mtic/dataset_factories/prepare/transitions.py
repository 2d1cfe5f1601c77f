"""The intent-transition model that crafts sessions for the single-turn benchmarks (xSID, Banking77), from SGD.

`SGD_TRANSITIONS` is `estimate_from_bundle` on the full SGD bundle (default converter options, seed 0), printed
by `python -m mtic.dataset_factories.prepare.transitions <sgd bundle dir>` (tests check it against the real data):
- stay / switch within the domain / switch away: consecutive labelled user turns of the train dialogues; NONE
  turns count as unlabelled, so they break the chain instead of being a switch;
- session lengths: user turns of the valid + test sessions (dialogues cut at their target turn);
- first intent: not transferred (a crafted split draws it from its own pool's intent frequencies);
- p_followup: the craft default (xSID and Banking77 have no follow-up texts, so it has no effect).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from mtic.data.bundle import Bundle, read_bundle
from mtic.data.schema import Session, Turn
from mtic.data.taxonomy import Taxonomy
from mtic.dataset_factories.craft import TransitionModel, estimate_transitions

NONE_ID = "NONE"
SGD = "sgd"
SGD_LENGTH_COUNTS: dict[int, int] = {
    1: 470, 2: 480, 3: 451, 4: 440, 5: 376, 6: 344, 7: 275, 8: 211, 9: 157, 10: 90, 11: 62, 12: 35, 13: 31,
    14: 5, 15: 6, 16: 3, 17: 2,
}
SGD_TRANSITIONS = TransitionModel(
    p_stay=0.8244,
    p_switch_within=0.0915,
    p_switch_away=0.0841,
    length_dist={n: c / sum(SGD_LENGTH_COUNTS.values()) for n, c in SGD_LENGTH_COUNTS.items()},
)


def estimate_from_bundle(bundle: Bundle) -> TransitionModel:
    """Transitions of a bundle's labelled train sessions (NONE = unlabelled), lengths of its valid+test sessions
    (train sessions when it has none), no first-intent distribution."""
    taxonomy = Taxonomy.from_intents(bundle.intents)
    train = [Session(s.id, tuple(Turn(t.text, None if t.intent == NONE_ID else t.intent) for t in s.turns))
             for s in bundle.require_sessions("train")]
    model = estimate_transitions(train, taxonomy.parent_path, intents=[i for i in taxonomy.ids if i != NONE_ID])
    evals = [s for split in ("valid", "test") for s in bundle.sessions.get(split, [])] or train
    counts = Counter(len(s.turns) for s in evals)
    total = sum(counts.values())
    return TransitionModel(model.p_stay, model.p_switch_within, model.p_switch_away,
                           {n: c / total for n, c in sorted(counts.items())})


def length_counts(bundle: Bundle) -> dict[int, int]:
    """Turn counts of the valid+test sessions (what `SGD_LENGTH_COUNTS` holds)."""
    evals = [s for split in ("valid", "test") for s in bundle.sessions.get(split, [])]
    return dict(sorted(Counter(len(s.turns) for s in evals).items()))


def load_transitions(spec: str) -> TransitionModel:
    """`sgd` = SGD_TRANSITIONS; anything else is a bundle directory with labelled train sessions to estimate from."""
    return SGD_TRANSITIONS if spec == SGD else estimate_from_bundle(read_bundle(spec))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mtic.dataset_factories.prepare.transitions <sgd bundle dir>", file=sys.stderr)
        return 2
    bundle = read_bundle(Path(args[0]))
    model = estimate_from_bundle(bundle)
    print(f"p_stay={model.p_stay:.4f} p_switch_within={model.p_switch_within:.4f} p_switch_away={model.p_switch_away:.4f}")
    print(f"SGD_LENGTH_COUNTS = {length_counts(bundle)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
