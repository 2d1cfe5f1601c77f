"""General-chat pre-training (`+experiment=pretrain_chat`, `corpus=jsonl | hub`): the corpus format and its errors,
the reply-only loss mask, the selected LoRA merged, and symbol tuning starting from exactly the merged weights.
(The in-domain `pretrain_sg` runs end to end with the tiny LM on every bundle variant in test_bundle_variants.py.)"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from mtic.cli_errors import friendly_errors
from mtic.data.chat_corpus import Conversation, HubChatCorpus, JsonlChatCorpus
from mtic.data.errors import BundleError, CorpusError
from mtic.inputs.encoding import IGNORE_INDEX

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_RUN = ["backbone=tiny-llama", "logger=none", "callbacks.progress=null", "data.batch_size=4"]
PARAM = "model.layers.0.self_attn.q_proj.weight"  # a LoRA-adapted base weight
CHAT = [  # one conversation per layout, with a system prompt and a trailing unanswered user message
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "where is my parcel?"},
                  {"role": "assistant", "content": "It ships today."}, {"role": "user", "content": "thanks!"},
                  {"role": "assistant", "content": "You are welcome."}, {"role": "user", "content": "bye"}]},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "where is my parcel?"},
                       {"from": "gpt", "value": "It ships today."}, {"from": "human", "value": "thanks!"},
                       {"from": "gpt", "value": "You are welcome."}, {"from": "human", "value": "bye"}]},
]
EXPECTED = Conversation((("where is my parcel?", "It ships today."), ("thanks!", "You are welcome.")), "Be brief.")


def _compose(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _corpus(n: int) -> list[dict]:
    topics = ["parcel", "refund", "order", "voucher", "delivery", "payment"]
    return [{"messages": [{"role": "user", "content": f"tell me about the {topics[k % 6]} ({k})"},
                          {"role": "assistant", "content": f"The {topics[k % 6]} is on its way, case {k}."}]}
            if k % 2 else
            {"conversations": [{"from": "human", "value": f"my {topics[k % 6]} is late"},
                               {"from": "gpt", "value": f"Sorry about the {topics[k % 6]}: it arrives tomorrow."}]}
            for k in range(n)]


# --------------------------------------------------------------------------- the format
def test_both_layouts_read_as_the_same_conversation(tmp_path: Path) -> None:
    corpus = JsonlChatCorpus(str(_write(tmp_path / "chat.jsonl", CHAT)))
    assert corpus.conversations() == [EXPECTED, EXPECTED]
    assert JsonlChatCorpus(corpus.path, max_conversations=1).conversations() == [EXPECTED]


@pytest.mark.parametrize(("row", "words"), [
    ('{"messages": [', "malformed JSON"),
    ({"text": "hello"}, "no 'messages' (role/content) or 'conversations' (from/value) list"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "message 1: 'role' is 'bot'"),
    ({"conversations": [{"from": "gpt", "value": "hi"}]}, "message 1 is a assistant message where a user message"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "message 2 is a user message"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
     "message 2: 'content' must be a non-empty string"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "message 2 is a system"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
])
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path: Path, row: Any, words: str) -> None:
    path = _write(tmp_path / "chat.jsonl", [CHAT[0], row])
    with pytest.raises(CorpusError) as err:
        JsonlChatCorpus(str(path)).conversations()
    assert str(err.value).startswith(f"{path}:2: ") and words in str(err.value) and "\n" not in str(err.value)


def test_load_dataset_reads_the_same_conversations_and_names_a_bad_row(tmp_path: Path) -> None:
    path, cache = _write(tmp_path / "chat.json", CHAT), str(tmp_path / "hf")
    assert HubChatCorpus("json", split="train", data_files=str(path), cache_dir=cache).conversations() == [
        EXPECTED, EXPECTED]
    assert HubChatCorpus(str(path), cache_dir=cache).conversations() == [EXPECTED, EXPECTED]  # one local data file
    bad = _write(tmp_path / "bad.json", [CHAT[0], {"messages": [{"role": "user", "content": "no reply"}]}])
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(bad))}\[train\]:2: no assistant message"):
        HubChatCorpus("json", data_files=str(bad), cache_dir=cache).conversations()
    with pytest.raises(BundleError, match=r"^json: cannot load the dataset \(split train\)"):
        HubChatCorpus("json", data_files=str(tmp_path / "absent.json"), cache_dir=cache).conversations()


# --------------------------------------------------------------------------- the loss mask
def test_only_the_replies_carry_loss_in_the_vicuna_transcript() -> None:
    from mtic.hub.registry import load_causal_lm
    from mtic.inputs.chat import chat_format
    from mtic.inputs.conversations import ConversationEncoder

    _, tok = load_causal_lm("tiny-llama")
    row = ConversationEncoder(tok, chat_format("vicuna"), max_length=512)(EXPECTED)
    assert row is not None
    text = tok.decode(row["input_ids"])
    assert "Be brief. USER: where is my parcel? ASSISTANT: It ships today.</s>USER: thanks! ASSISTANT:" in text
    assert "bye" not in text and "chat between a curious user" not in text  # own system prompt; no trailing turn
    targets = tok.decode([t for t in row["labels"] if t != IGNORE_INDEX])
    assert targets == " It ships today.</s> You are welcome.</s>"
    short = ConversationEncoder(tok, chat_format("vicuna"), max_length=8)(EXPECTED)
    assert short is None  # the first reply starts after 8 tokens: no loss, left out (and counted by the datamodule)


# --------------------------------------------------------------------------- wiring and errors before any model
def test_corpus_is_refused_where_nothing_reads_it_and_needs_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from mtic.config_schema import ConfigError, validate_config
    from mtic.pipelines import run

    with pytest.raises(ConfigError, match="'corpus' is set but pipeline mtic.pipelines.train_eval.run trains on no chat corpus"):
        validate_config(_compose("+experiment=st_sg", "corpus=jsonl", "corpus.path=x.jsonl"))
    monkeypatch.setattr("mtic.hub.registry.resolve_model", lambda *_, **__: pytest.fail("a model was loaded"))
    bad = _write(tmp_path / "chat.jsonl", [CHAT[0], CHAT[1], {"messages": []}])
    for overrides, said in [((), "error: the chat corpus needs corpus.path"),
                            ((f"corpus.path={bad}",), f"error: {bad}:3: no assistant message")]:
        cfg = _compose("+experiment=pretrain_chat", *TINY_RUN, f"paths.run_dir={tmp_path / 'run'}", *overrides)
        with pytest.raises(SystemExit) as stop, friendly_errors():
            run(cfg)
        errors = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(errors) == 1 and errors[0].startswith(said), errors


# --------------------------------------------------------------------------- end to end
def _merged_from(checkpoint: Path, lora: dict) -> dict[str, torch.Tensor]:
    """The base weights with the LoRA of `checkpoint` merged in, computed here from scratch."""
    from mtic.models.checkpoint_io import read_checkpoint
    from mtic.models.pretrain import DomainPretrainLM

    model = DomainPretrainLM("tiny-llama", lora=lora)
    model.load_state_dict(read_checkpoint(checkpoint)["state_dict"])
    return model.model.merge_and_unload().state_dict()


def test_pretrain_on_a_chat_corpus_merges_the_selected_lora_and_symbol_tuning_starts_from_it(
        tmp_path: Path, tiny_bundle: Path) -> None:
    from safetensors.torch import load_file

    from mtic.hub.registry import load_causal_lm
    from mtic.pipelines import run
    from mtic.pipelines.train_eval import build_components

    corpus, run_dir = _write(tmp_path / "chat.jsonl", _corpus(12)), tmp_path / "run"
    # two epochs; the checkpoint callback keeps the epoch of HIGHEST val/loss, so that the selected epoch (the first)
    # is not the last one and merging the weights left in memory (those of the second epoch) would be caught
    cfg = _compose("+experiment=pretrain_chat", *TINY_RUN, f"corpus.path={corpus}", f"paths.run_dir={run_dir}",
                   "trainer.max_epochs=2", "callbacks.checkpoint.mode=max", "callbacks.early_stopping=null",
                   "pipeline.corpus_data.valid_share=0.25", "model.lr=0.01", "logger=csv")
    run(cfg)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["corpus"]["conversations"] == {"valid": 3, "train": 9} and record["corpus"]["source"] == "jsonl"
    assert record["selection"]["used"] == ["corpus.held_out"] and "val/loss" in record["metrics"]
    validated = [line.split(",")[0] for line in next(run_dir.rglob("metrics.csv")).read_text().splitlines()[1:]]
    best = run_dir / "checkpoints" / "best.ckpt"
    assert validated == ["0", "1"] and torch.load(best, weights_only=True)["epoch"] == 0
    assert record["merged_checkpoint"] == str(best)

    merged_dir = run_dir / "merged"
    merged = load_file(str(next(merged_dir.glob("*.safetensors"))))
    base = load_causal_lm("tiny-llama")[0].state_dict()
    lora = dict(cfg.model.lora)
    assert not torch.equal(merged[PARAM], base[PARAM])  # pre-training changed the weights
    assert torch.allclose(merged[PARAM], _merged_from(best, lora)[PARAM], atol=1e-6)  # ... those of the best epoch

    st = _compose("+experiment=st", f"backbone.name={merged_dir}", f"paths.data_dir={tiny_bundle}", "labels=original",
                  "model.match_embedder=null", "logger=none", f"paths.run_dir={tmp_path / 'st'}")
    _, model = build_components(st)
    loaded = model.model.get_base_model().state_dict()  # LoRA-wrapped: the frozen weight sits in `base_layer`
    assert torch.equal(loaded[PARAM.replace(".weight", ".base_layer.weight")], merged[PARAM])
