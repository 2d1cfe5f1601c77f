"""One LightningDataModule for every model: a bundle, a view, and the model's encoder."""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from mtic.data.bundle import Bundle, read_bundle, read_sessions
from mtic.data.schema import Session, SingleTurnQuery
from mtic.data.taxonomy import Taxonomy
from mtic.eval.distributed import EXAMPLE_INDEX
from mtic.eval.supervision import SINGLE_TURN, Supervision, sessions_source
from mtic.inputs.crafted import CraftFromSingleTurn
from mtic.inputs.data_plan import (
    CARVED_VALID_SHARE,
    CRAFTED_SOURCE,
    EMPTY_VALIDATION,
    NO_SESSIONS,
    PSEUDO_PREFIX,
    SINGLE_TURN_SOURCE,
    ValidationPlan,
    is_file_source,
    require_data,
    resolve_validation,
    source_list,
    source_name,
)
from mtic.inputs.encoding import Encoder, PadCollator
from mtic.inputs.lazy_dataset import ExampleIndex, LazyEncodedDataset, RowPart, SessionChain, query_positions
from mtic.inputs.views import View, ViewExample, labelled_prefixes

log = logging.getLogger("mtic")
__all__ = ["CARVED_VALID_SHARE", "NO_SESSIONS", "PSEUDO_PREFIX", "SINGLE_TURN_SOURCE", "MTICDataModule",
           "config_supervision", "planned_supervision", "source_list"]


class EncodedDataset(Dataset):
    """Examples encoded once, up front (the data sets are small; encoding per epoch would be waste). Each item
    carries its position (`EXAMPLE_INDEX`): under DDP the test predictions of all ranks are de-duplicated by it."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.rows[index], EXAMPLE_INDEX: index}

    def lengths(self) -> list[int]:
        return [len(r["input_ids"]) for r in self.rows]


class LengthGroupedBatchSampler(BatchSampler):
    """Shuffled batches of similar length: sort inside random mega-batches, then shuffle the batches.

    The batches hold the indices `sampler` yields: all of the dataset by default; under DDP Lightning rebuilds
    this sampler with a DistributedSampler in its place (PyTorch's BatchSampler interface), which yields this
    rank's share, padded so that every rank runs the same number of batches. Each yielded index is in exactly one
    batch per epoch. A numpy array of lengths is kept as it is (a lazy dataset's: no Python int per example)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_factor: int = 32,
                 sampler: Sampler[int] | Sequence[int] | None = None) -> None:
        super().__init__(range(len(lengths)) if sampler is None else sampler, batch_size, drop_last=False)
        self.lengths = lengths if isinstance(lengths, np.ndarray) else list(lengths)
        self.seed = seed
        self.mega = batch_size * mega_factor
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(self.sampler)
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.mega):
            chunk = sorted(order[start : start + self.mega], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size


class EncodedDataModule(pl.LightningDataModule):
    """Examples encoded once by the model's encoder (`datasets` per split, filled by `setup`), in batches padded
    to their longest row: training batches shuffled (of similar lengths when `group_by_length`), evaluation
    batches in order. Base of the bundle's datamodule and of a general chat corpus's (corpus_datamodule.py)."""

    def __init__(self, batch_size: int, eval_batch_size: int, group_by_length: bool, num_workers: int, seed: int
                 ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.seed = seed
        self.encoder: Encoder | None = None
        self.collator: PadCollator | None = None
        self.datasets: dict[str, EncodedDataset | LazyEncodedDataset] = {}

    def set_encoder(self, encoder: Encoder, pad_token_id: int) -> None:
        """Install the model's encoder (it owns the tokenizer) and reset encoded data."""
        self.encoder = encoder
        self.collator = PadCollator(pad_token_id=pad_token_id)
        self.datasets = {}

    def train_dataloader(self) -> DataLoader:
        data = self.datasets["train"]
        if self.group_by_length:
            sampler = LengthGroupedBatchSampler(data.lengths(), self.batch_size, seed=self.seed)
            return DataLoader(data, batch_sampler=sampler, collate_fn=self.collator, num_workers=self.num_workers)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, collate_fn=self.collator, num_workers=self.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, collate_fn=self.collator, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")


def planned_supervision(train_single_turn: bool, train_sessions: str, valid_sessions: str | Sequence[str]
                        ) -> Supervision:
    """The label sources of a data config (a valid split counts as read even if the bundle lacks it): what a
    pipeline checks against `label_free` before any compute."""
    train = [SINGLE_TURN] if train_single_turn else []
    if train_sessions != NO_SESSIONS:
        train.append(source_name(train_sessions))
    selection = [source_name(s) for s in source_list(valid_sessions) if s != NO_SESSIONS]
    return Supervision(train=train, selection=selection, evaluation=[sessions_source("test")])


def config_supervision(data: Any) -> Supervision:
    """`planned_supervision` of a `data` config node (the datamodule's own defaults for absent keys)."""
    return planned_supervision(data.get("train_single_turn", True), data.get("train_sessions", "train"),
                               data.get("valid_sessions", "valid"))


class MTICDataModule(EncodedDataModule):
    """Feeds any mtic LightningModule from a bundle.

    The `view` turns sessions into examples (chat transcript, last query, naive or selected concatenation);
    the `encoder`, supplied by the LightningModule through `set_encoder`, turns examples into token ids.
    Training data = labelled single-turn queries (as one-turn sessions) + labelled sessions (`train_sessions`).
    Validation data (early stopping, checkpoint choice) = `valid_sessions`. A sessions source is a bundle split
    name ('train', 'valid'), 'single_turn' (valid only: the single-turn queries of the valid split), 'crafted'
    (train only: sessions `crafting` chains out of the single-turn training queries), a path to a sessions JSONL
    (the user's labels), 'pseudo:<path>' (a JSONL labelled by a model), or 'none'; `valid_sessions` may list
    several sources, whose sessions are pooled.
    `supervision()` names the label sources these settings read (mtic/eval/supervision.py).
    A split of more than `encode_lazily_above` examples (counted before `max_train_examples`) is encoded on access
    (`LazyEncodedDataset`, mtic/inputs/lazy_dataset.py: the sources chained by index, a numpy index of examples, no
    Python object per row); at most that many are encoded once, up front (`EncodedDataset`). 0: always lazily.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        view: View,
        eval_view: View | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        train_single_turn: bool = True,
        train_sessions: str = "train",
        valid_sessions: str | Sequence[str] = "valid",
        expand_prefixes: bool = True,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        group_by_length: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        crafting: CraftFromSingleTurn | None = None,
        encode_lazily_above: int = 200_000,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, group_by_length, num_workers, seed)
        if isinstance(encode_lazily_above, bool) or not isinstance(encode_lazily_above, int) or encode_lazily_above < 0:
            raise ValueError("data.encode_lazily_above must be a number of examples >= 0 (0: always lazily), got "
                             f"{encode_lazily_above!r}")
        self.encode_lazily_above = encode_lazily_above
        self.bundle: Bundle = read_bundle(bundle_dir)
        self.taxonomy = Taxonomy.from_intents(self.bundle.intents)
        self.view = view
        self.eval_view = eval_view or view
        self.train_single_turn = train_single_turn
        self.train_sessions = train_sessions
        self.valid_sessions = valid_sessions
        self.expand_prefixes = expand_prefixes
        self.max_train_examples = max_train_examples
        self.max_eval_examples = max_eval_examples
        self.crafting = crafting or CraftFromSingleTurn(seed=seed)
        self._single_turn_parts: tuple[np.ndarray, np.ndarray] | None = None  # positions in bundle.single_turn
        self._validation: ValidationPlan | None = None
        self.training_fallback: str | None = None   # set by `plan`: what trains when a configured source is absent

    # -- sessions per stage -------------------------------------------------------------------------
    def training_sessions(self) -> list[Session]:
        """Sessions the model trains on, single-turn queries included as one-turn sessions."""
        return list(self.training_chain())

    def training_chain(self) -> SessionChain:
        """`training_sessions` chained by index (no copy of the sources)."""
        parts = []
        if self._trains_on_single_turn():
            parts.append(RowPart(self.bundle.single_turn, self._single_turn_positions()[0], "single-"))
        if self.train_sessions != NO_SESSIONS:
            parts.append(RowPart(self._session_source(self.train_sessions)))
        chain = SessionChain(parts)
        if not len(chain):
            raise ValueError("no training data: enable train_single_turn or set train_sessions")
        return chain

    def _trains_on_single_turn(self) -> bool:
        """`train_single_turn`, unless the bundle has no single-turn training queries (then the sessions alone
        train, as `plan` checks and says)."""
        return self.train_single_turn and len(query_positions(self.bundle.single_turn, "train")) > 0

    def _session_source(self, source: str, require_target: bool = False) -> Sequence[Session]:
        if source == CRAFTED_SOURCE:  # from the training queries only (the carved valid ones are held out)
            return self.crafting(self._single_turn_split()[0], self.taxonomy)
        path = Path(source.removeprefix(PSEUDO_PREFIX))
        if is_file_source(source):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: sessions file not found")
            return read_sessions(path, set(self.taxonomy.ids), require_target=require_target)
        return self.bundle.require_sessions(source)

    def _single_turn_split(self) -> tuple[list[SingleTurnQuery], list[SingleTurnQuery]]:
        """(training, validation) single-turn queries (see `_single_turn_positions`)."""
        return tuple([self.bundle.single_turn[int(k)] for k in part] for part in self._single_turn_positions())

    def _single_turn_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions in `bundle.single_turn` of the (training, validation) queries. Without a 'valid' split in
        single_turn.jsonl, a seeded `CARVED_VALID_SHARE` of the training queries is held out for validation (and
        leaves training), once."""
        if self._single_turn_parts is None:
            train = query_positions(self.bundle.single_turn, "train")
            valid = query_positions(self.bundle.single_turn, "valid")
            if not len(valid) and self.validation_plan().carve:
                order = list(range(len(train)))
                random.Random(self.seed).shuffle(order)
                held = np.zeros(len(train), bool)
                held[order[: max(1, round(CARVED_VALID_SHARE * len(train)))]] = True
                valid, train = train[held], train[~held]
                log.warning("single_turn.jsonl has no 'valid' split: %d of its training queries (%.0f %%, seed %d) "
                            "select the model instead", len(valid), 100 * CARVED_VALID_SHARE, self.seed)
            self._single_turn_parts = (train, valid)
        return self._single_turn_parts

    def validation_plan(self) -> ValidationPlan:
        """Where model selection reads from, with the bundle's fallbacks (mtic/inputs/data_plan.py)."""
        if self._validation is None:
            self._validation = resolve_validation(self.bundle, self.valid_sessions)
        return self._validation

    def _valid_sources(self) -> list[str]:
        """The validation sources actually read (see `validation_plan`)."""
        return list(self.validation_plan().used)

    def plan(self, where: str, fit: bool = True, test: bool = True, test_without: str | None = None
             ) -> ValidationPlan:
        """Check, before any model loads, that the data a fit / test needs exists (one-line errors naming the file
        and the override), then fix and say (log) the validation source; no validation session at all means no
        model selection. `test_without`: the override that skips testing, named in the error."""
        data = {"train_single_turn": self.train_single_turn, "train_sessions": self.train_sessions}
        self.training_fallback = require_data(self.bundle, data, where, fit, test, test_without)
        if self.training_fallback:
            log.warning("[mtic] %s", self.training_fallback)
        plan = self.validation_plan()
        if fit:
            size = len(self.evaluation_chain("valid")) if plan.selects else 0
            if plan.selects and size == 0:
                plan = replace(plan, used=(), carve=False, fallback=EMPTY_VALIDATION)
            self._validation = plan = replace(plan, valid_size=size)
        return plan

    def evaluation_sessions(self, split: str) -> Sequence[Session]:
        """Test sessions (or any bundle split), or the validation sessions of `valid_sessions` for 'valid' (the
        sessions of every listed source, pooled, as a list)."""
        if split == "valid":
            return list(self.evaluation_chain(split))
        sessions = self.bundle.require_sessions(split)
        return sessions[: self.max_eval_examples] if self.max_eval_examples else sessions

    def evaluation_chain(self, split: str) -> SessionChain:
        """`evaluation_sessions` chained by index (no copy of the sources)."""
        if split != "valid":
            return SessionChain([RowPart(self.evaluation_sessions(split))])
        parts = [RowPart(self.bundle.single_turn, self._single_turn_positions()[1], "valid-")
                 if source == SINGLE_TURN_SOURCE else RowPart(self._session_source(source, require_target=True))
                 for source in self._valid_sources()]
        chain = SessionChain(parts)
        return chain.head(self.max_eval_examples) if self.max_eval_examples else chain

    def supervision(self) -> Supervision:
        """The label sources training and validation read with these settings (nothing is loaded)."""
        return planned_supervision(self._trains_on_single_turn(), self.train_sessions,
                                   self._valid_sources() or NO_SESSIONS)

    def train_examples(self, chain: SessionChain | None = None) -> list[ViewExample]:
        """The training examples (views of the training sessions, or of `chain`), subsampled to
        `max_train_examples` (seeded)."""
        examples = []
        for session in self.training_chain() if chain is None else chain:
            parts = labelled_prefixes(session) if self.expand_prefixes else [session]
            examples += [self.view(p) for p in parts if p.target is not None or not self.expand_prefixes]
        if self.max_train_examples and len(examples) > self.max_train_examples:
            examples = random.Random(self.seed).sample(examples, self.max_train_examples)
        return examples

    # -- Lightning hooks ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.encoder is None:
            raise RuntimeError("call set_encoder(model encoder) before using the datamodule")
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = self._train_dataset()
        for split in ("valid", "test"):
            wanted = stage in (None, "fit", "validate") if split == "valid" else stage in (None, "test", "predict")
            if wanted and split not in self.datasets:
                self.datasets[split] = self._evaluation_dataset(split)

    def encodes_lazily(self, examples: int) -> bool:
        """Whether a split of `examples` examples is encoded on access (`encode_lazily_above`)."""
        return examples > self.encode_lazily_above

    def _train_dataset(self) -> EncodedDataset | LazyEncodedDataset:
        chain = self.training_chain()
        index = ExampleIndex.of(chain, self.expand_prefixes)
        if not self.encodes_lazily(len(index)):
            return EncodedDataset([self.encoder(e) for e in self.train_examples(chain)])
        log.info("[mtic] %d training examples: encoded on access (data.encode_lazily_above=%d)", len(index),
                 self.encode_lazily_above)
        return LazyEncodedDataset(chain, index.subsample(self.max_train_examples, self.seed), self.view, self.encoder)

    def _evaluation_dataset(self, split: str) -> EncodedDataset | LazyEncodedDataset:
        chain = self.evaluation_chain(split)
        if not self.encodes_lazily(len(chain)):
            return EncodedDataset([self.encoder(self.eval_view(s)) for s in chain])
        return LazyEncodedDataset(chain, ExampleIndex.of(chain, expand_prefixes=False), self.eval_view, self.encoder)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
