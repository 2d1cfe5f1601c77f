"""The cached turn-by-turn rollout equals re-encoding the whole transcript at every turn (tiny Llama)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.views import ChatView
from mtic.labels.targets import LabelSet
from mtic.models.kv_cache import select_rows
from mtic.models.label_scoring import score_continuations
from mtic.models.rollout import LabelScorer
from mtic.models.session_cache import SessionCache
from mtic.models.symbol_tuning import SymbolTuningLM

SESSIONS = [
    [("where is my parcel", "track"), ("still nothing", "track"), ("ok cancel it then", "cancel")],
    [("refund please", "refund")],
    [("hi", None), ("my order never came", "track"), ("can I get my money back", "refund"), ("thanks", "refund")],
    [("cancel my order", "cancel"), ("and the refund?", "refund")],
]


def _model(bundle: Path, **kw) -> SymbolTuningLM:
    torch.manual_seed(0)
    dm = MTICDataModule(bundle, view=ChatView(), batch_size=4)
    labels = LabelSet.from_taxonomy(dm.taxonomy, target="compressed")
    model = SymbolTuningLM("tiny-llama", dm.taxonomy, labels, match_embedder=None, **kw)
    return model.eval()


def _reference(model: SymbolTuningLM, session, decode: str, history: str) -> str:
    """The textbook rollout: a fresh prompt with the whole transcript at every decoded turn, one session alone."""
    answers: list[str | None] = []
    text = ""
    for step, (_, gold) in enumerate(session):
        last = step == len(session) - 1
        if not last and history != "rollout":
            answers.append(model.labels.label_of(gold) if history == "gold" and gold else None)
            continue
        prompt = model.encoder.prompt_ids([q for q, _ in session[: step + 1]], answers)
        if decode == "score":
            scores = score_continuations(model.model, prompt, model.label_answers, model.pad_token_id)
            text = model.labels.label_of(model.label_intents[int(scores.argmax())])
        else:
            ids = torch.tensor([prompt])
            out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=model.hparams.max_new_tokens, pad_token_id=model.pad_token_id,
                                       eos_token_id=model.tokenizer.eos_token_id)
            text = model.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
        answers.append(text)
    return text


@pytest.mark.parametrize("decode", ["greedy", "score"])
@pytest.mark.parametrize("history", ["rollout", "gold", "none"])
def test_cached_rollout_equals_reencoding(tiny_bundle: Path, decode: str, history: str) -> None:
    model = _model(tiny_bundle, decode=decode, history=history, max_new_tokens=5)
    with torch.no_grad():
        fast = [r["output"] for r in model.predict_sessions(SESSIONS)]
        slow = [_reference(model, s, decode, history) for s in SESSIONS]
    assert fast == slow


def test_transcripts_past_max_length_are_truncated_as_in_training(tiny_bundle: Path) -> None:
    model = _model(tiny_bundle, decode="score", max_length=40)
    long = [SESSIONS[2] + SESSIONS[0]]
    with torch.no_grad():
        assert [r["output"] for r in model.predict_sessions(long)] == [_reference(model, long[0], "score", "rollout")]


def test_session_cache_feeds_equal_one_pass(tiny_bundle: Path) -> None:
    """Chunks fed one after another (with padding holes between them) give the logits of the whole sequence."""
    model = _model(tiny_bundle)
    a, b = list(range(5, 17)), list(range(30, 37))
    cache = SessionCache(model.model, model.pad_token_id, 2)
    with torch.no_grad():
        cache.feed([a[:3], b[:5]])
        cache.feed([a[3:10], b[5:6]])
        got = cache.feed([a[10:], b[6:]])
        for row, seq in enumerate([a, b]):
            want = model.model(input_ids=torch.tensor([seq])).logits[0, -1].log_softmax(-1)
            assert torch.allclose(got[row], want, atol=1e-4)
    assert cache.lengths.tolist() == [len(a), len(b)]


def test_select_rows_copies_a_row_subset_and_leaves_the_cache_alone(tiny_bundle: Path) -> None:
    """Feeding a row subset (later branch-and-bound rounds) equals feeding those rows of the full cache."""
    model = _model(tiny_bundle)
    prompts = [[11, 12, 13], [14, 15], [16, 17, 18, 19]]
    with torch.no_grad():
        cache = SessionCache(model.model, model.pad_token_id, len(prompts))
        cache.feed(prompts)
        keys = [layer.keys.clone() for layer in cache.cache.layers]
        index = torch.tensor([2, 0])
        sub = SessionCache(model.model, model.pad_token_id, 2)
        sub.cache, sub.mask, sub.lengths = select_rows(cache.cache, index), cache.mask[index], cache.lengths[index]
        got = sub.step([20, 21])
        want = cache.step([21, None, 20])[[2, 0]]
    assert torch.allclose(got, want, atol=1e-4)
    assert all(torch.equal(k, layer.keys[:, :, : k.shape[2]]) for k, layer in zip(keys, cache.cache.layers))


def test_branch_and_bound_finds_the_exact_argmax(tiny_bundle: Path) -> None:
    """Many labels of different lengths: the pruned search picks what scoring every label picks, on every prompt."""
    model = _model(tiny_bundle)
    rng = random.Random(0)
    vocab = model.tokenizer.vocab_size
    eos = model.tokenizer.eos_token_id
    # labels share first tokens so bounds tie and later rounds are needed
    answers = [[rng.choice([7, 8, 9, rng.randrange(10, vocab)])] + [rng.randrange(10, vocab) for _ in range(rng.randrange(0, 4))] + [eos]
               for _ in range(40)]
    scorer = LabelScorer(answers, [f"label {j}" for j in range(len(answers))], first_round=2, max_round=3)
    prompts = [[rng.randrange(10, vocab) for _ in range(rng.randrange(3, 12))] for _ in range(12)]
    with torch.no_grad():
        cache = SessionCache(model.model, model.pad_token_id, len(prompts))
        first = cache.feed(prompts)
        width = cache.width
        pruned = scorer(cache, first, [False] * len(prompts))
        assert cache.width == width and cache.cache.get_seq_length() == width  # scoring leaves the cache as it was
        full = scorer(cache, first, [True] * len(prompts))
        for prompt, p, f in zip(prompts, pruned, full):
            brute = score_continuations(model.model, prompt, answers, model.pad_token_id)
            assert p.label == f.label == int(brute.argmax())
            assert abs(p.score - float(brute.max())) < 1e-4
            assert p.probs is None and abs(sum(f.probs.values()) - float(brute.softmax(-1).topk(5).values.sum())) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("decode", ["greedy", "score"])
def test_cached_rollout_equals_reencoding_on_gemma3(tiny_bundle: Path, decode: str) -> None:
    """Gemma 3 has sliding-window layers: the rollout keeps a plain full cache and stays exact."""
    dm = MTICDataModule(tiny_bundle, view=ChatView(), batch_size=4)
    labels = LabelSet.from_taxonomy(dm.taxonomy, target="compressed")
    model = SymbolTuningLM("gemma3-270m", dm.taxonomy, labels, match_embedder=None, decode=decode,
                           max_new_tokens=5).eval()
    with torch.no_grad():
        assert [r["output"] for r in model.predict_sessions(SESSIONS)] == [_reference(model, s, decode, "rollout")
                                                                           for s in SESSIONS]
