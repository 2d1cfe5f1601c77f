"""Issue 23: above `data.encode_lazily_above` examples the datamodule encodes on access (mtic/inputs/lazy_dataset.py)
instead of up front: the same items and batches as the eager path, the same seeded subsample, and no Python object
per bundle row held by the lazy dataset. A stateless word tokenizer (ids from a hash, not from the order words are
first seen) makes eager and lazy encodings comparable."""
from __future__ import annotations

import gc
import random
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_views import WordTokenizer
from torch.utils.data import DataLoader

from mtic.data.arrow_cache import ARROW_ABOVE_ENV
from mtic.data.arrow_rows import ArrowRows
from mtic.dataset_factories.synthetic import write_synthetic_bundle
from mtic.eval.distributed import EXAMPLE_INDEX
from mtic.inputs.chat import ChatEncoder
from mtic.inputs.datamodule import EncodedDataset, LengthGroupedBatchSampler, MTICDataModule
from mtic.inputs.encoding import ClassificationEncoder
from mtic.inputs.lazy_dataset import ExampleIndex, LazyEncodedDataset
from mtic.inputs.views import ChatView, LastQueryView, NaiveConcatView, View


class HashTokenizer(WordTokenizer):
    """Whitespace words -> ids by CRC32: the same ids whatever order texts are encoded in."""

    def __call__(self, text: str, add_special_tokens: bool = True, truncation: bool = False,
                 max_length: int | None = None) -> dict[str, list[int]]:
        ids = [zlib.crc32(word.encode()) % 30_000 + 3 for word in text.split()]
        if truncation and max_length and len(ids) > max_length:
            ids = ids[-max_length:] if self.truncation_side == "left" else ids[:max_length]
        return {"input_ids": ids}


def _module(bundle: Path, view: View, **kw: Any) -> MTICDataModule:
    dm = MTICDataModule(bundle, view=view, batch_size=4, eval_batch_size=3, **kw)
    tok = HashTokenizer()
    encoder = (ChatEncoder(tok, label_of=lambda intent: intent.replace("_", " ")) if isinstance(view, ChatView)
               else ClassificationEncoder(tok, dm.taxonomy))
    dm.set_encoder(encoder, pad_token_id=tok.pad_token_id)
    return dm


def _pair(bundle: Path, view: View, **kw: Any) -> tuple[MTICDataModule, MTICDataModule]:
    """(eager, lazy) datamodules of the same settings, set up for fit and test."""
    eager, lazy = _module(bundle, view, **kw), _module(bundle, view, encode_lazily_above=0, **kw)
    for dm in (eager, lazy):
        dm.setup(None)
    return eager, lazy


def _items(data: Any) -> list[dict[str, Any]]:
    return [data[i] for i in range(len(data))]


def _same_batches(first: DataLoader, second: DataLoader) -> None:
    pairs = list(zip(first, second, strict=True))
    assert pairs
    for one, other in pairs:
        assert one.keys() == other.keys()
        for key, value in one.items():
            assert torch.equal(value, other[key]) if isinstance(value, torch.Tensor) else value == other[key], key


SETTINGS = {
    "prefixes": (LastQueryView(), {}),
    "whole_sessions_chat": (ChatView(), {"expand_prefixes": False}),
    "subsampled": (NaiveConcatView(), {"max_train_examples": 5, "seed": 3}),
    "pooled_valid_cut": (NaiveConcatView(), {"valid_sessions": ["train", "single_turn"], "max_eval_examples": 2}),
    "sessions_only": (ChatView(), {"train_single_turn": False, "valid_sessions": "test"}),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_lazy_items_and_batches_are_the_eager_ones(tiny_bundle: Path, name: str) -> None:
    view, kw = SETTINGS[name]
    eager, lazy = _pair(tiny_bundle, view, **kw)
    for split in ("train", "valid", "test"):
        assert isinstance(eager.datasets[split], EncodedDataset)
        assert isinstance(lazy.datasets[split], LazyEncodedDataset)
        assert _items(lazy.datasets[split]) == _items(eager.datasets[split]), split
        _same_batches(eager._eval_loader(split), lazy._eval_loader(split))
    # the same batch sampler over both datasets gives the same (collated) batches
    sampler = LengthGroupedBatchSampler(eager.datasets["train"].lengths(), batch_size=4, seed=7, mega_factor=2)
    epochs = []
    for dm in (eager, lazy):
        sampler.epoch = 0
        epochs.append(list(DataLoader(dm.datasets["train"], batch_sampler=sampler, collate_fn=dm.collator)))
    _same_batches(iter(epochs[0]), iter(epochs[1]))


def test_lazy_train_loader_is_seeded_and_covers_every_example(tiny_bundle: Path) -> None:
    """The lazy training loader (batches grouped by the character-length proxy): every example once per epoch,
    the same batches for the same seed."""
    epochs = []
    for _ in range(2):
        dm = _module(tiny_bundle, LastQueryView(), encode_lazily_above=0)
        dm.setup("fit")
        epochs.append([batch[EXAMPLE_INDEX].tolist() for batch in dm.train_dataloader()])
    assert epochs[0] == epochs[1]
    assert sorted(i for batch in epochs[0] for i in batch) == list(range(11))
    lengths = dm.datasets["train"].lengths()
    assert isinstance(lengths, np.ndarray) and lengths.dtype == np.int32 and len(lengths) == 11
    assert lengths.tolist() == [len(dm.datasets["train"].example(i).text) for i in range(11)]


def test_subsample_draws_what_the_eager_path_draws() -> None:
    index = ExampleIndex(np.arange(100, 200, dtype=np.int64), np.arange(100, dtype=np.int32) % 3)
    picked = index.subsample(17, seed=5)
    rows = random.Random(5).sample(list(zip(index.session.tolist(), index.prefix.tolist())), 17)
    assert list(zip(picked.session.tolist(), picked.prefix.tolist())) == rows
    assert index.subsample(None, 5) is index and index.subsample(100, 5) is index


def test_threshold_switches_and_rejects_bad_values(tiny_bundle: Path) -> None:
    dm = _module(tiny_bundle, LastQueryView(), encode_lazily_above=10)  # 11 training examples, 1 valid, 3 test
    dm.setup(None)
    assert isinstance(dm.datasets["train"], LazyEncodedDataset)
    assert all(isinstance(dm.datasets[split], EncodedDataset) for split in ("valid", "test"))
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="encode_lazily_above"):
            MTICDataModule(tiny_bundle, view=LastQueryView(), encode_lazily_above=bad)


@pytest.mark.parametrize("data", ["naive_concat", "chat"])
def test_config_passes_the_key(tiny_bundle: Path, data: str) -> None:
    """data.encode_lazily_above is in every data config (conf/data/_base.yaml) and reaches the datamodule."""
    from hydra.utils import instantiate
    from test_overrides import _compose

    assert _compose("+experiment=baseline_naive", f"data={data}").data.encode_lazily_above == 200_000
    cfg = _compose("+experiment=baseline_naive", f"data={data}", "data.encode_lazily_above=0")
    assert instantiate(cfg.data, bundle_dir=str(tiny_bundle)).encode_lazily_above == 0


@pytest.fixture
def arrow_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MTIC_CACHE", str(tmp_path / "cache"))


def test_lazy_over_arrow_rows_is_eager_over_lists(tmp_path: Path, arrow_cache: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same synthetic bundle read as lists (eager) and as memory-mapped ArrowRows (lazy, its example index
    read from Arrow columns): the same items in every split."""
    root = write_synthetic_bundle(tmp_path / "synthetic", n_sessions=1500, n_queries=300, n_intents=12, seed=4)
    eager = _module(root, NaiveConcatView(), max_train_examples=900, seed=2)
    monkeypatch.setenv(ARROW_ABOVE_ENV, "0")
    lazy = _module(root, NaiveConcatView(), max_train_examples=900, seed=2, encode_lazily_above=0)
    assert isinstance(lazy.bundle.sessions["train"], ArrowRows) and isinstance(eager.bundle.sessions["train"], list)
    for dm in (eager, lazy):
        dm.setup(None)
    for split in ("train", "valid", "test"):
        assert isinstance(lazy.datasets[split], LazyEncodedDataset)
        assert _items(lazy.datasets[split]) == _items(eager.datasets[split]), split


def _anonymous_rss_mb() -> float | None:
    """Resident anonymous memory (the heap; memory-mapped file pages excluded), Linux only."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.is_file() else []
    kb = [int(line.split()[1]) for line in lines if line.startswith("RssAnon:")]
    return kb[0] / 1024 if kb else None


def test_big_arrow_bundle_builds_a_lazy_datamodule_without_row_objects(tmp_path: Path, arrow_cache: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """50 k synthetic sessions through Arrow, above the threshold: setting up every split, the length proxy and
    a training batch leave fewer new Python objects than a tenth of the rows (a list of the rows' Session or
    ViewExample objects, or of their encodings, adds several per row) and little heap."""
    root = write_synthetic_bundle(tmp_path / "big", n_sessions=50_000, n_queries=5000, n_intents=50, seed=1)
    monkeypatch.setenv(ARROW_ABOVE_ENV, "0")
    dm = _module(root, NaiveConcatView(), encode_lazily_above=2000)  # valid, test: ~2.4 k sessions each
    rows = len(dm.bundle.single_turn) + sum(len(dm.bundle.sessions[split]) for split in ("train", "valid", "test"))
    gc.collect()
    objects, heap = len(gc.get_objects()), _anonymous_rss_mb()
    dm.setup(None)
    train = dm.datasets["train"]
    assert isinstance(train, LazyEncodedDataset) and len(train) > 50_000
    assert all(isinstance(dm.datasets[split], LazyEncodedDataset) for split in ("valid", "test"))
    assert len(train.lengths()) == len(train)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    gc.collect()
    grown = len(gc.get_objects()) - objects
    assert grown < rows / 10, (grown, rows)
    if heap is not None:  # eager: ~115 MiB here
        assert _anonymous_rss_mb() - heap < 40
    held = [part.rows for part in train.chain.parts]
    assert all(isinstance(part, ArrowRows) for part in held)
    assert train.index.session.nbytes + train.index.prefix.nbytes == 12 * len(train)
