"""LLM backends: the answer cache (a re-run costs no backend call) and the local backend's batching."""
from __future__ import annotations

import pytest

from mtic.clara.llm import AnswerCache, CachedLLM, LLMRequest, LLMResponse, cache_key


class CountingLLM:
    """Answers the first choice (or echoes); counts every request it really answers; fails 'poison' prompts."""

    mode = "score"

    def __init__(self, model: str = "m") -> None:
        self.model = model
        self.calls = 0

    @property
    def identity(self):
        return {"backend": "counting", "model": self.model}

    @property
    def params(self):
        return {"decode": "score"}

    def complete(self, requests):
        self.calls += len(requests)
        return [LLMResponse(None, "failed", error="boom") if "poison" in r.user
                else LLMResponse(r.choices[0], choice=0, scores=(0.0,) * len(r.choices)) for r in requests]


REQUESTS = [LLMRequest("sys", f"q{k}", "Intent:", ("A", "B")) for k in range(5)]


def test_rerun_hits_the_cache(tmp_path):
    backend = CountingLLM()
    llm = CachedLLM(backend, AnswerCache(tmp_path / "c.sqlite"))
    first = llm.complete(REQUESTS + REQUESTS[:2])  # duplicates inside one call are asked once
    assert backend.calls == 5
    assert [a.choice for a in first] == [0] * 7
    again = CachedLLM(backend, AnswerCache(tmp_path / "c.sqlite"))  # a new process would reopen the file
    second = again.complete(REQUESTS)
    assert backend.calls == 5
    assert all(a.cached for a in second) and [a.text for a in second] == [a.text for a in first[:5]]
    assert again.stats.snapshot()["cache_hits"] == 5


def test_key_depends_on_model_prompt_and_params(tmp_path):
    request = REQUESTS[0]
    base = cache_key({"model": "a"}, {"t": 0}, request)
    assert base == cache_key({"model": "a"}, {"t": 0}, request)
    assert base != cache_key({"model": "b"}, {"t": 0}, request)
    assert base != cache_key({"model": "a"}, {"t": 1}, request)
    assert base != cache_key({"model": "a"}, {"t": 0}, LLMRequest("sys", "q0", "Intent:", ("A", "C")))
    llm_a = CachedLLM(CountingLLM("a"), AnswerCache(tmp_path / "c.sqlite"))
    llm_b = CachedLLM(CountingLLM("b"), AnswerCache(tmp_path / "c.sqlite"))
    llm_a.complete(REQUESTS[:1])
    llm_b.complete(REQUESTS[:1])
    assert llm_b.backend.calls == 1  # another model never reads model a's answers


def test_failures_are_not_cached(tmp_path):
    backend = CountingLLM()
    llm = CachedLLM(backend, AnswerCache(tmp_path / "c.sqlite"))
    poison = LLMRequest("", "poison", "", ("A",))
    assert llm.complete([poison])[0].status == "failed"
    assert llm.complete([poison])[0].status == "failed"
    assert backend.calls == 2
    assert len(llm.cache) == 0


@pytest.fixture(scope="module")
def tiny_local():
    from mtic.clara.llm.local import LocalLLM

    return LocalLLM("tiny-llama", mode="score", batch_size=4, max_new_tokens=4)


def test_local_score_batched_equals_one_at_a_time(tiny_local):
    requests = [LLMRequest("You classify.", "where is my parcel " * (k + 1), "Intent:",
                           ("Track Parcel", "Cancel Order", "Refund", "Cancel Order Now")[: 2 + k % 3]) for k in range(6)]
    tiny_local.batch_size = 4
    batched = tiny_local.complete(requests)
    tiny_local.batch_size = 1
    single = tiny_local.complete(requests)
    for request, a, b in zip(requests, batched, single):
        assert a.choice == b.choice and a.text == request.choices[a.choice]
        assert max(abs(x - y) for x, y in zip(a.scores, b.scores)) < 1e-3


def test_local_generate_batched_equals_one_at_a_time(tiny_local):
    tiny_local.mode = "generate"
    try:
        requests = [LLMRequest("", "hello " * (k + 1), "Intent:") for k in range(3)]
        tiny_local.batch_size = 3
        batched = [a.text for a in tiny_local.complete(requests)]
        tiny_local.batch_size = 1
        assert batched == [a.text for a in tiny_local.complete(requests)]
    finally:
        tiny_local.mode = "score"


def test_label_proposer_is_the_local_llm_generating(tiny_local):
    """Label compression's LLM proposer (labels.compress_llm) is this backend generating greedily: one request per
    title, its answer a candidate; a scoring backend is refused."""
    from mtic.data.schema import Intent
    from mtic.data.taxonomy import Taxonomy
    from mtic.labels.chooser import LabelChooser
    from mtic.labels.compress import DEFAULT_LLM_PROMPT

    tax = Taxonomy.from_intents([Intent("track", "Ask where my parcel is right now", ("Logistics", "Track")),
                                 Intent("refund", "Ask when the refund arrives", ("Payment", "Refund"))])
    chooser = LabelChooser(proposers=["extractive", "llm"], compress_llm=tiny_local)
    with pytest.raises(ValueError, match="must generate text"):
        chooser._llm_proposals(tax, tax.ids, english=False)  # tiny_local scores by default
    tiny_local.mode = "generate"
    try:
        proposals = chooser._llm_proposals(tax, tax.ids, english=False)
        for intent_id in tax.ids:
            alone = LLMRequest(system="", user=DEFAULT_LLM_PROMPT.format(title=tax.title(intent_id)))
            assert proposals[intent_id] == [tiny_local.complete([alone])[0].text]
    finally:
        tiny_local.mode = "score"
