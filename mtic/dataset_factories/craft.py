"""Craft multi-turn sessions from single-turn queries with an intent transition model.

A session is a Markov chain over intents. Its first intent comes from `TransitionModel.first_intent`; every
later turn either STAYS on the intent, SWITCHES WITHIN the category (another intent with the same parent
path, i.e. `path[:-1]`) or switches AWAY (an intent of another category). A stay turn uses one of the
intent's context-dependent follow-ups ("still nothing") with probability `p_followup`, otherwise another
self-contained query. Fallbacks when a move is impossible: within -> away when the intent has no sibling,
away -> within when every intent shares one category, and stay when the taxonomy has a single intent.
`estimate_transitions` is the maximum-likelihood inverse of this generator, fallbacks included.

`craft_splits` keeps the evaluation side leak-free: every turn of a valid/test session (history included) is a
held-out query or an evaluation-side follow-up that no training-side text equals (after `normalise_text`):
each intent's follow-ups are split between the two sides (`split_followups`), and an intent without a fresh
held-out query is left out of the valid/test sessions rather than filled with training queries.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mtic.data.schema import Session, Turn, normalise_text

ParentOf = Callable[[str], tuple]

STAY, WITHIN, AWAY = "stay", "within", "away"
PROB_TOLERANCE = 1e-6
DEFAULT_P_FOLLOWUP = 0.5
DEFAULT_EVAL_FOLLOWUP_SHARE = 0.4
MIN_EVAL_FOLLOWUP_SHARE = 0.3
DEFAULT_EVAL_FOLLOWUP_POOL_SHARE = 1 / 3  # of each intent's follow-up texts, reserved for valid/test sessions
MAX_FORCED_ATTEMPTS = 1000
SPLIT_PREFIXES = {"train": "train", "unlabeled": "unl", "valid": "valid", "test": "test"}


def _check_prob(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_distribution(name: str, dist: Mapping, key_ok: Callable[[object], bool], key_desc: str) -> None:
    if not dist:
        raise ValueError(f"{name} must not be empty")
    for key, value in dist.items():
        if not key_ok(key):
            raise ValueError(f"{name} keys must be {key_desc}, got {key!r}")
        _check_prob(f"{name}[{key!r}]", value)
    total = sum(dist.values())
    if abs(total - 1.0) > PROB_TOLERANCE:
        raise ValueError(f"{name} must sum to 1, got {total:.6f}")


@dataclass
class TransitionModel:
    """How intents follow each other in a session (see the module docstring for the semantics).

    `first_intent`: id -> probability of the first turn's intent (None = uniform over the intents crafted from);
    `length_dist`: number of turns -> probability; `p_followup`: share of STAY turns that use a follow-up text.
    """

    p_stay: float = 0.45
    p_switch_within: float = 0.30
    p_switch_away: float = 0.25
    length_dist: dict[int, float] = field(default_factory=lambda: {1: 0.15, 2: 0.35, 3: 0.30, 4: 0.15, 5: 0.05})
    first_intent: dict[str, float] | None = None
    p_followup: float = DEFAULT_P_FOLLOWUP

    def __post_init__(self) -> None:
        for name in ("p_stay", "p_switch_within", "p_switch_away", "p_followup"):
            _check_prob(name, getattr(self, name))
        total = self.p_stay + self.p_switch_within + self.p_switch_away
        if abs(total - 1.0) > PROB_TOLERANCE:
            raise ValueError(f"p_stay + p_switch_within + p_switch_away must sum to 1, got {total:.6f}")
        _check_distribution(
            "length_dist", self.length_dist, lambda k: isinstance(k, int) and not isinstance(k, bool) and k >= 1,
            "turn counts >= 1",
        )
        if self.first_intent is not None:
            _check_distribution("first_intent", self.first_intent, lambda k: isinstance(k, str) and k != "", "intent ids")

    @property
    def mean_turns(self) -> float:
        return sum(n * p for n, p in self.length_dist.items())

    def to_json(self) -> dict:
        return {
            "p_stay": self.p_stay,
            "p_switch_within": self.p_switch_within,
            "p_switch_away": self.p_switch_away,
            "length_dist": {str(k): v for k, v in sorted(self.length_dist.items())},
            "first_intent": None if self.first_intent is None else dict(sorted(self.first_intent.items())),
            "p_followup": self.p_followup,
        }


def _neighbours(intent_ids: Iterable[str], parent_of: ParentOf) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Sorted siblings (same parent path) and intents of other categories, for every intent."""
    ids = sorted(set(intent_ids))
    parents = {i: tuple(parent_of(i)) for i in ids}
    siblings = {i: [j for j in ids if j != i and parents[j] == parents[i]] for i in ids}
    others = {i: [j for j in ids if parents[j] != parents[i]] for i in ids}
    return siblings, others


def estimate_transitions(
    sessions: Iterable[Session],
    parent_of: ParentOf,
    intents: Iterable[str] | None = None,
    p_followup: float = DEFAULT_P_FOLLOWUP,
    default: TransitionModel | None = None,
) -> TransitionModel:
    """Maximum-likelihood transition model from labelled sessions.

    Only pairs of consecutive turns that are both labelled count as transitions (an unlabelled turn breaks the
    chain); session lengths count every turn; the first-intent distribution uses labelled first turns.
    `intents` is the full intent set (default: the intents seen), needed to know which moves were possible:
    from an intent without siblings a switch is always "away" (the generator's fallback), so the within/away
    split is estimated from the intents where both moves were possible. Quantities the labels cannot show
    (`p_followup`; the transition split when no informative pair is seen) come from the arguments / `default`.
    """
    sessions = list(sessions)
    default = default or TransitionModel(p_followup=p_followup)
    lengths = Counter(len(s.turns) for s in sessions if s.turns)
    if not lengths:
        raise ValueError("estimate_transitions needs at least one non-empty session")
    firsts = Counter(s.turns[0].intent for s in sessions if s.turns and s.turns[0].intent is not None)
    seen = {t.intent for s in sessions for t in s.turns if t.intent is not None}
    siblings, others = _neighbours(set(intents or ()) | seen, parent_of)
    parents = {i: tuple(parent_of(i)) for i in siblings}
    n_pairs = n_stay = n_moves = 0
    n_within_full = n_away_full = 0
    for session in sessions:
        for prev, cur in zip(session.turns, session.turns[1:]):
            if prev.intent is None or cur.intent is None:
                continue
            n_pairs += 1
            can_within, can_away = bool(siblings[prev.intent]), bool(others[prev.intent])
            if not (can_within or can_away):
                continue  # a single-intent taxonomy: every move is a stay, nothing to learn
            if cur.intent == prev.intent:
                n_stay += 1
            else:
                n_moves += 1
                if can_within and can_away:
                    if parents[cur.intent] == parents[prev.intent]:
                        n_within_full += 1
                    else:
                        n_away_full += 1
    if n_pairs == 0 and max(lengths) > 1:
        raise ValueError("no pair of consecutive labelled turns: transitions cannot be estimated from these sessions")
    if n_stay + n_moves == 0:  # only one-turn sessions, or a single-intent taxonomy
        p_stay, p_within, p_away = default.p_stay, default.p_switch_within, default.p_switch_away
    else:
        p_stay = n_stay / (n_stay + n_moves)
        if n_within_full + n_away_full:
            share_within = n_within_full / (n_within_full + n_away_full)
        else:
            moving = default.p_switch_within + default.p_switch_away
            share_within = default.p_switch_within / moving if moving else 0.5
        p_within = (1.0 - p_stay) * share_within
        p_away = 1.0 - p_stay - p_within
    total_len = sum(lengths.values())
    total_first = sum(firsts.values())
    return TransitionModel(
        p_stay=p_stay,
        p_switch_within=p_within,
        p_switch_away=max(p_away, 0.0),
        length_dist={n: c / total_len for n, c in sorted(lengths.items())},
        first_intent={i: c / total_first for i, c in sorted(firsts.items())} if total_first else None,
        p_followup=p_followup,
    )


def _pool(texts: Iterable[str] | None) -> list[str]:
    """Deduplicated, sorted pool so that the input order never changes the result."""
    return sorted({t for t in (texts or ()) if t and t.strip()})


def _pick(rng: random.Random, pool: Sequence[str], used: set[str]) -> str:
    """A text of `pool` not used yet in this session when possible."""
    fresh = [t for t in pool if t not in used]
    return rng.choice(fresh or list(pool))


def _first_intent_table(model: TransitionModel, ids: list[str]) -> tuple[list[str], list[float]]:
    if model.first_intent is None:
        return ids, [1.0] * len(ids)
    known = set(ids)
    choices = [i for i in sorted(model.first_intent) if i in known and model.first_intent[i] > 0]
    if not choices:
        raise ValueError("first_intent gives no probability to any intent that has queries")
    return choices, [model.first_intent[i] for i in choices]


def craft_sessions(
    model: TransitionModel,
    queries_by_intent: Mapping[str, Sequence[str]],
    followups_by_intent: Mapping[str, Sequence[str]],
    parent_of: ParentOf,
    n_sessions: int,
    seed: int | str,
    id_prefix: str,
    last_turn_followup_share: float | None = None,
) -> list[Session]:
    """Craft `n_sessions` labelled sessions (every turn carries its intent), deterministic given `seed`.

    `last_turn_followup_share`, when given, makes exactly round(share * n_sessions) sessions end with a
    follow-up (a stay turn; those sessions get >= 2 turns, their length drawn from `length_dist` restricted to
    >= 2) and makes every other session end with a self-contained query, so the share is exact.
    """
    if n_sessions < 0:
        raise ValueError(f"n_sessions must be >= 0, got {n_sessions}")
    pools = {i: _pool(q) for i, q in queries_by_intent.items()}
    ids = sorted(i for i, p in pools.items() if p)
    if not ids:
        raise ValueError("craft_sessions needs at least one intent with a self-contained query")
    followups = {i: _pool(followups_by_intent.get(i)) for i in ids}
    siblings, others = _neighbours(ids, parent_of)
    first_ids, first_weights = _first_intent_table(model, ids)
    lengths = sorted(model.length_dist)
    long_lengths = [n for n in lengths if n >= 2 and model.length_dist[n] > 0]
    rng = random.Random(seed)

    forced: set[int] = set()
    if last_turn_followup_share is not None:
        _check_prob("last_turn_followup_share", last_turn_followup_share)
        n_forced = round(last_turn_followup_share * n_sessions)
        if n_forced and not any(followups[i] for i in ids):
            raise ValueError("last_turn_followup_share > 0 but no intent has follow-up texts")
        forced = set(rng.sample(range(n_sessions), n_forced))

    def next_intent(cur: str) -> str:
        kind = rng.choices((STAY, WITHIN, AWAY), (model.p_stay, model.p_switch_within, model.p_switch_away))[0]
        if kind == WITHIN and not siblings[cur]:
            kind = AWAY
        if kind == AWAY and not others[cur]:
            kind = WITHIN if siblings[cur] else STAY
        if kind == STAY:
            return cur
        return rng.choice(siblings[cur] if kind == WITHIN else others[cur])

    def chain(n_turns: int) -> list[str]:
        intents = [rng.choices(first_ids, first_weights)[0]]
        while len(intents) < n_turns:
            intents.append(next_intent(intents[-1]))
        return intents

    sessions = []
    for index in range(n_sessions):
        is_forced = index in forced
        if is_forced:
            n_turns = rng.choices(long_lengths, [model.length_dist[n] for n in long_lengths])[0] if long_lengths else 2
            for _ in range(MAX_FORCED_ATTEMPTS):
                intents = chain(n_turns - 1)
                if followups[intents[-1]]:
                    break
            else:
                raise ValueError("could not end a session with a follow-up: too few intents have follow-up texts")
            intents.append(intents[-1])
        else:
            intents = chain(rng.choices(lengths, [model.length_dist[n] for n in lengths])[0])
        used: set[str] = set()
        turns = []
        for k, intent in enumerate(intents):
            last = k == len(intents) - 1
            stay = k > 0 and intent == intents[k - 1]
            use_followup = rng.random() < model.p_followup and stay and bool(followups[intent])
            if last_turn_followup_share is not None and last:
                use_followup = is_forced
            text = _pick(rng, followups[intent] if use_followup else pools[intent], used)
            used.add(text)
            turns.append(Turn(text, intent))
        sessions.append(Session(id=f"{id_prefix}-{index:05d}", turns=tuple(turns)))
    return sessions


def strip_history(session: Session) -> Session:
    """Keep only the last turn's label (the evaluation target)."""
    turns = tuple(Turn(t.text) for t in session.turns[:-1]) + (session.turns[-1],)
    return Session(id=session.id, turns=turns)


def followup_share(sessions: Sequence[Session], followups_by_intent: Mapping[str, Sequence[str]]) -> float | None:
    """Share of sessions whose last turn is one of its target intent's follow-up texts (None when empty)."""
    if not sessions:
        return None
    hits = sum(1 for s in sessions if s.target is not None and s.last.text in set(followups_by_intent.get(s.target, ())))
    return hits / len(sessions)


def split_followups(
    followups_by_intent: Mapping[str, Sequence[str]],
    eval_share: float = DEFAULT_EVAL_FOLLOWUP_POOL_SHARE,
    seed: int | str = 0,
    reserved: Iterable[str] = (),
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split each intent's follow-up texts into a training side and a disjoint evaluation side.

    A text that several intents use (after `normalise_text`), or that is `reserved` (already a training-side
    text, e.g. a training query), stays on the training side only. Of each intent's other texts,
    round(eval_share * n) go to the evaluation side (n = the intent's distinct normalised follow-ups; capped so the
    intent keeps at least one training follow-up), drawn by a seeded shuffle per intent, so the split does not
    depend on the input order. Returns (training side, evaluation side), each intent -> sorted texts.
    """
    _check_prob("eval_share", eval_share)
    pools = {i: _pool(texts) for i, texts in followups_by_intent.items()}
    owners: dict[str, set[str]] = {}
    for intent, pool in pools.items():
        for text in pool:
            owners.setdefault(normalise_text(text), set()).add(intent)
    blocked = {normalise_text(t) for t in reserved}
    train_side: dict[str, list[str]] = {}
    eval_side: dict[str, list[str]] = {}
    for intent in sorted(pools):
        pool = pools[intent]
        keys = sorted({normalise_text(t) for t in pool})  # spelling variants of one text move together
        exclusive = [k for k in keys if len(owners[k]) == 1 and k not in blocked]
        n_eval = min(round(eval_share * len(keys)), len(exclusive), max(len(keys) - 1, 0))
        random.Random(f"{seed}/followups/{intent}").shuffle(exclusive)
        chosen = set(exclusive[:n_eval])
        eval_side[intent] = [t for t in pool if normalise_text(t) in chosen]
        train_side[intent] = [t for t in pool if normalise_text(t) not in chosen]
    return train_side, eval_side


@dataclass
class CraftedSplits:
    """The session files of a bundle plus the gold labels of the unlabelled sessions.

    `eval_excluded_intents`: intents left out of the valid/test sessions because none of their held-out
    queries is new (every one is a training-side text); `eval_dropped_texts`: distinct held-out texts left out
    because a training-side text equals them; `train_followups` / `eval_followups`: the follow-up
    texts each side drew from (disjoint).
    """

    train: list[Session]
    unlabeled: list[Session]
    unlabeled_gold: list[Session]
    valid: list[Session]
    test: list[Session]
    eval_excluded_intents: list[str] = field(default_factory=list)
    eval_dropped_texts: int = 0
    train_followups: dict[str, list[str]] = field(default_factory=dict)
    eval_followups: dict[str, list[str]] = field(default_factory=dict)

    def bundle_sessions(self) -> dict[str, list[Session]]:
        """The standard session files (non-empty splits only); the gold labels are not among them."""
        rows = {"train": self.train, "unlabeled": self.unlabeled, "valid": self.valid, "test": self.test}
        return {split: sessions for split, sessions in rows.items() if sessions}


def check_disjoint(training: Iterable[Session], evaluation: Iterable[Session], extra_training: Iterable[str] = ()) -> None:
    """Raise ValueError when an evaluation turn (any position) is, after `normalise_text`, a training-side text."""
    seen = {normalise_text(t) for t in extra_training}
    seen.update(normalise_text(t.text) for s in training for t in s.turns)
    leaked = sorted({t.text for s in evaluation for t in s.turns if normalise_text(t.text) in seen})
    if leaked:
        raise ValueError(f"{len(leaked)} evaluation text(s) also on the training side, e.g. {leaked[:3]}")


def craft_splits(
    model: TransitionModel,
    train_pool: Mapping[str, Sequence[str]],
    eval_pool: Mapping[str, Sequence[str]],
    followups_by_intent: Mapping[str, Sequence[str]],
    parent_of: ParentOf,
    *,
    n_train: int,
    n_unlabeled: int,
    n_valid: int,
    n_test: int,
    seed: int = 0,
    eval_followup_share: float = DEFAULT_EVAL_FOLLOWUP_SHARE,
    eval_followups_by_intent: Mapping[str, Sequence[str]] | None = None,
    single_turn_texts: Iterable[str] = (),
    eval_followup_pool_share: float = DEFAULT_EVAL_FOLLOWUP_POOL_SHARE,
) -> CraftedSplits:
    """Craft train / unlabeled / valid / test sessions whose evaluation texts never appear on the training side.

    Training side = `train_pool`, `single_turn_texts` and the training follow-ups; train and unlabeled sessions
    draw from it. Follow-ups: with `eval_followups_by_intent` None, `followups_by_intent` is split by
    `split_followups` (`eval_followup_pool_share` of each intent's texts to the evaluation side; shared texts and
    training texts stay on the training side); when given, `followups_by_intent` is the training side and the
    given mapping the evaluation side. Valid and test sessions draw every turn from `eval_pool` and the
    evaluation follow-ups, minus every training-side text (compared after `normalise_text`). An intent left
    with no held-out query is excluded from the valid/test sessions (listed in `eval_excluded_intents`, never
    replaced by training queries); none left at all is a ValueError. Valid and test share the held-out pool,
    keep only the last turn's label, and end with a follow-up in exactly `eval_followup_share` of sessions.
    Each split has its own random stream derived from `seed`.
    """
    single_turn_texts = list(single_turn_texts)
    query_texts = [t for pool in train_pool.values() for t in pool] + single_turn_texts
    if eval_followups_by_intent is None:
        train_followups, eval_followups = split_followups(followups_by_intent, eval_followup_pool_share, seed,
                                                          reserved=query_texts)
    else:
        train_followups = {i: _pool(texts) for i, texts in followups_by_intent.items()}
        eval_followups = {i: _pool(texts) for i, texts in eval_followups_by_intent.items()}
    training_side = {normalise_text(t) for t in query_texts}
    training_side |= {normalise_text(t) for pool in train_followups.values() for t in pool}

    def fresh(texts: Iterable[str]) -> list[str]:
        return _pool(t for t in texts if normalise_text(t) not in training_side)

    held_out: dict[str, list[str]] = {}
    excluded = []
    dropped = 0
    for intent in sorted(set(train_pool) | set(eval_pool)):
        held_out[intent] = fresh(eval_pool.get(intent, ()))
        dropped += len(_pool(eval_pool.get(intent, ()))) - len(held_out[intent])
        if not held_out[intent]:
            excluded.append(intent)
    eval_followups = {i: fresh(texts) for i, texts in eval_followups.items() if held_out.get(i)}
    if n_valid + n_test and not any(held_out.values()):
        raise ValueError("no intent has a held-out query that is not on the training side: cannot craft valid/test")

    def run(split: str, pool: Mapping[str, Sequence[str]], follow: Mapping[str, Sequence[str]], n: int,
            share: float | None) -> list[Session]:
        return craft_sessions(model, pool, follow, parent_of, n, f"{seed}/{split}", SPLIT_PREFIXES[split], share)

    gold = run("unlabeled", train_pool, train_followups, n_unlabeled, None)
    train = run("train", train_pool, train_followups, n_train, None)
    valid = [strip_history(s) for s in run("valid", held_out, eval_followups, n_valid, eval_followup_share)]
    test = [strip_history(s) for s in run("test", held_out, eval_followups, n_test, eval_followup_share)]
    check_disjoint([*train, *gold], [*valid, *test], extra_training=query_texts)
    return CraftedSplits(
        train=train,
        unlabeled=[s.unlabeled() for s in gold],
        unlabeled_gold=gold,
        valid=valid,
        test=test,
        eval_excluded_intents=excluded,
        eval_dropped_texts=dropped,
        train_followups={i: t for i, t in train_followups.items() if t},
        eval_followups={i: t for i, t in eval_followups.items() if t},
    )

