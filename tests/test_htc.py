"""HTC: coding tree (structural entropy), every head for depth 1/2/3, the switches, overfitting, checkpoints."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.encoding import IGNORE_INDEX
from mtic.inputs.views import NaiveConcatView
from mtic.models.coding_tree import (
    build_coding_tree,
    greedy_groups,
    hierarchy_graph,
    structural_entropy,
    taxonomy_coding_tree,
)
from mtic.models.hitin import HiTINHead
from mtic.models.htc import HTC, LocalHeads, leaf_paths
from mtic.models.label_attention import LabelAttention

ENCODER = "tiny-bert"


def make_taxonomy(depth: int, branching: int = 3, seed: int = 0) -> Taxonomy:
    """A random taxonomy of `depth` levels (uneven branching) with one intent per leaf."""
    rng = random.Random(seed)
    paths: list[tuple[str, ...]] = [()]
    for level in range(depth):
        paths = [p + (f"L{level}-{k}-{'.'.join(p)}",) for p in paths for k in range(rng.randint(1, branching) + (level == 0))]
    return Taxonomy([Intent(id=f"i{k}", title=f"intent {k}", path=p) for k, p in enumerate(paths)])


def check_tree(tree, num_nodes: int, height: int) -> None:
    assert tree.height == height
    sizes = tree.layer_sizes
    assert sizes[0] == num_nodes and sizes[-1] == 1
    for layer, parents in enumerate(tree.parents):  # every node of the next layer has at least one child
        assert sorted(set(parents)) == list(range(sizes[layer + 1]))


# --------------------------------------------------------------------------- coding tree
@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("height", [1, 2, 3, 4])
def test_coding_tree_entropy_decreases_and_shape(depth: int, height: int) -> None:
    taxonomy = make_taxonomy(depth, seed=depth)
    n, edges = hierarchy_graph(taxonomy)
    assert n == sum(taxonomy.num_classes) and len(edges) == n - taxonomy.num_classes[0]
    tree = build_coding_tree(n, edges, height)
    check_tree(tree, n, height)  # leaves are exactly the label nodes, the height is the bound
    assert all(b <= a + 1e-9 for a, b in zip(tree.history, tree.history[1:])), "every merge lowers the entropy"
    assert tree.history[-1] == pytest.approx(tree.entropy)
    assert tree.entropy == pytest.approx(structural_entropy(tree.parents, n, edges))
    if height >= 2:
        assert tree.entropy < tree.history[0]


def test_entropy_of_the_flat_tree_is_the_degree_entropy() -> None:
    edges = [(0, 1), (1, 2)]
    degree = [1, 2, 1]
    expected = -sum(d / 4 * torch.log2(torch.tensor(d / 4)).item() for d in degree)
    assert structural_entropy([[0, 0, 0]], 3, edges) == pytest.approx(expected)


def test_greedy_merging_finds_two_communities() -> None:
    # two categories (0, 4) with three children each, the categories linked: each star becomes one community
    edges = [(0, 1), (0, 2), (0, 3), (4, 5), (4, 6), (4, 7), (0, 4)]
    tree = build_coding_tree(8, edges, 2)
    assert tree.parents == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0]]
    # grouping ALL units of a parent adds a redundant node: no entropy gain, so no merge
    assert greedy_groups([2.0, 2.0], [1.0, 1.0], {(0, 1): 1.0}, 4.0) == ([0, 1], [])


def test_coding_tree_of_a_flat_taxonomy() -> None:
    taxonomy = make_taxonomy(1)
    tree = taxonomy_coding_tree(taxonomy, 3)
    check_tree(tree, taxonomy.num_classes[0], 3)
    assert tree.entropy == 0.0


# --------------------------------------------------------------------------- heads
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_head_shapes(depth: int) -> None:
    taxonomy = make_taxonomy(depth)
    batch, hidden, tokens = 4, 16, 7
    h = torch.randn(batch, hidden)
    tree = taxonomy_coding_tree(taxonomy, 2)
    for readout in ("sum", "mean"):
        out = HiTINHead(hidden, taxonomy.num_classes, tree, node_dim=8, readout=readout)(h)
        assert [tuple(x.shape) for x in out] == [(batch, c) for c in taxonomy.num_classes]
    for chain in (True, False):
        out = LocalHeads(hidden, taxonomy.num_classes, 12, chain=chain)(h)
        assert [tuple(x.shape) for x in out] == [(batch, c) for c in taxonomy.num_classes]
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[0, 3:] = 0
    attention = LabelAttention(hidden, taxonomy.num_classes, dim=8)
    states = torch.randn(batch, tokens, hidden)
    out = attention(states, mask)
    assert [tuple(x.shape) for x in out] == [(batch, c) for c in taxonomy.num_classes]
    weights = attention.attention(states, mask, depth - 1)
    assert torch.allclose(weights[0, :, 3:], torch.zeros(1)) and torch.allclose(weights.sum(-1), torch.ones(1))


def test_leaf_paths_follow_parents() -> None:
    taxonomy = make_taxonomy(3)
    for intent_id in taxonomy.leaf_intent_ids():
        ids = taxonomy.level_ids(intent_id)
        assert leaf_paths(taxonomy)[ids[-1]].tolist() == ids


@pytest.mark.parametrize(
    ("depth", "switches"),
    [(1, {}), (2, {}), (3, {}), (3, {"global_head": False}), (3, {"local_chain": False}),
     (1, {"label_attention": True}), (3, {"label_attention": True, "global_head": False, "local_chain": False})],
    ids=["depth1", "depth2", "depth3", "no_global", "no_chain", "attention_flat", "attention_only_local"],
)
def test_htc_forward_and_switches(depth: int, switches: dict) -> None:
    taxonomy = make_taxonomy(depth)
    model = HTC(ENCODER, taxonomy, tree_height=2, node_dim=8, **switches)
    assert (model.global_head is None) == (switches.get("global_head") is False)
    assert (model.label_attention is not None) == switches.get("label_attention", False)
    assert model.local.chain == switches.get("local_chain", True)
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    logits = model(ids, mask)
    assert [tuple(x.shape) for x in logits] == [(3, c) for c in taxonomy.num_classes]
    labels = torch.tensor([taxonomy.level_ids(taxonomy.ids[k % len(taxonomy)]) for k in range(3)])
    labels[0] = IGNORE_INDEX  # unlabelled rows do not count
    loss = model.loss(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0


def test_consistent_decoding_picks_the_best_path() -> None:
    intents = [Intent("a", "a", ("A", "a")), Intent("b", "b", ("B", "b")), Intent("c", "c", ("B", "c"))]
    model = HTC(ENCODER, Taxonomy(intents), tree_height=2, node_dim=8)
    # the leaf level prefers 'a' slightly, the root level is sure it is 'B' -> best path B > b or c
    logits = [torch.tensor([[-5.0, 5.0]]), torch.tensor([[1.0, 0.9, 0.0]])]
    model.hparams.level_decoding = "leaf"
    assert model.decode(logits)[0].tolist() == [0]
    model.hparams.level_decoding = "consistent"
    assert model.decode(logits)[0].tolist() == [1]
    with pytest.raises(ValueError, match="level_decoding must be one of"):
        HTC(ENCODER, Taxonomy(intents), level_decoding="beam")


# --------------------------------------------------------------------------- training
def _trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)


@torch.no_grad()
def _train_accuracy(model: HTC, dm: MTICDataModule) -> float:
    model.eval()
    hits = total = 0
    for batch in dm.train_dataloader():
        leaf, _ = model.decode(model(batch["input_ids"], batch["attention_mask"]))
        hits += int((leaf == batch["level_labels"][:, -1]).sum())
        total += len(leaf)
    return hits / total


def test_tiny_htc_overfits_and_checkpoints_round_trip(tiny_bundle: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    dm = MTICDataModule(tiny_bundle, view=NaiveConcatView(), batch_size=16)
    model = HTC(ENCODER, dm.taxonomy, tree_height=2, node_dim=16, dropout=0.0, lr=2e-3, head_lr=5e-3, warmup_ratio=0.0)
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    trainer = _trainer(40)
    trainer.fit(model, datamodule=dm)
    assert _train_accuracy(model, dm) == 1.0

    trainer.test(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"test/acc", "test/macro_f1", "test/acc_level1", "test/acc_level3"} <= set(metrics)
    assert len(model.test_outputs) == 3
    assert set(model.test_outputs[0]) == {"session_id", "target", "intent", "probability"}

    ckpt = tmp_path / "htc.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)  # nothing pickled: no tokenizer, no taxonomy object
    assert "taxonomy" not in raw["hyper_parameters"]
    restored = HTC.from_checkpoint(ckpt)
    batch = next(iter(dm.test_dataloader()))
    model.eval()
    with torch.no_grad():
        for a, b in zip(model(batch["input_ids"], batch["attention_mask"]), restored(batch["input_ids"], batch["attention_mask"])):
            assert torch.allclose(a, b, atol=1e-5)
    probs = restored.leaf_probabilities(["where is my parcel", "cancel my order pls"])
    assert probs.shape == (2, dm.taxonomy.num_classes[-1])
    assert restored.leaf_intents[int(probs[0].argmax())] == "track"


def test_frozen_embeddings_stay_out_of_checkpoints(tiny_bundle: Path, tmp_path: Path) -> None:
    dm = MTICDataModule(tiny_bundle, view=NaiveConcatView(), batch_size=16)
    model = HTC(ENCODER, dm.taxonomy, tree_height=2, node_dim=8, freeze_embeddings=True)
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    trainer = _trainer(2)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "frozen.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert "optimizer_states" not in raw  # weights only unless checkpoint_optimizer=true
    keys = raw["state_dict"]
    assert not any("word_embeddings" in k for k in keys) and any("encoder.layer" in k for k in keys)
    restored = HTC.from_checkpoint(ckpt)
    assert torch.equal(restored.local.out[-1].weight, model.local.out[-1].weight)
    # a checkpoint from before the rename carries `decoding`, not `level_decoding`: it loads with its setting
    hparams = raw["hyper_parameters"]
    hparams.pop("level_decoding")
    hparams["decoding"] = "consistent"
    assert HTC.from_state(raw, ckpt).hparams.level_decoding == "consistent"


def test_frozen_encoder_trains_only_the_heads_and_saves_them_alone(tmp_path: Path) -> None:
    """htc_recipe=fast: the encoder gives fixed features (eval mode, no gradient), the heads learn, and checkpoints
    hold the heads only (the encoder comes back from the registry)."""
    torch.manual_seed(0)
    taxonomy = make_taxonomy(2)
    model = HTC(ENCODER, taxonomy, tree_height=2, node_dim=8, freeze_encoder=True)
    model.train()
    assert not model.encoder.training and model.local.training  # no dropout inside the frozen encoder
    ids, mask = torch.randint(5, 100, (4, 7)), torch.ones(4, 7, dtype=torch.long)
    assert torch.equal(model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state,
                       model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    labels = torch.tensor([taxonomy.level_ids(taxonomy.ids[k]) for k in range(4)])
    loss = model.loss(model(ids, mask), labels)
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.local.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("encoder.") for n in trainable)
    checkpoint: dict = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("encoder.") for k in checkpoint["state_dict"])
    fresh = HTC(ENCODER, taxonomy, tree_height=2, node_dim=8, freeze_encoder=True)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert all(torch.equal(v, encoder_before[k]) for k, v in fresh.encoder.state_dict().items())
    assert torch.equal(fresh.local.out[0].weight, model.local.out[0].weight)
