"""Candidate intents from the fine-tuned single-turn HTC (LARA's "fine-tuned smaller model"): its top intents
for the last query of a session, whose closest demos then join the prompt (see `Retriever.candidates`).

Train it with `python run.py +experiment=baseline_single` and pass the checkpoint as
`pipeline.retrieval.candidates.checkpoint=<run dir>/checkpoints/<best>.ckpt`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtic.clara.retrieval import CandidateFn
from mtic.data.taxonomy import Taxonomy


def htc_candidates(checkpoint: str | Path, taxonomy: Taxonomy, cache_dir: str | None = None, top_k: int = 5,
                   batch_size: int = 64) -> CandidateFn:
    """A proposer `texts -> [[intent id, ...], ...]` (most probable first) from an HTC checkpoint."""
    from mtic.models.htc import HTC

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: single-turn HTC checkpoint not found "
                                "(pipeline.retrieval.candidates.checkpoint)")
    model = HTC.from_checkpoint(path, cache_dir=cache_dir)
    unknown = set(model.leaf_intents) - set(taxonomy.ids)
    if unknown:
        raise ValueError(f"{path}: the checkpoint was trained on other intents ({sorted(unknown)[:3]} ...)")

    def propose(texts: Sequence[str]) -> list[list[str]]:
        probs = model.leaf_probabilities(list(texts), batch_size=batch_size)
        k = min(top_k, probs.shape[1])
        return [[model.leaf_intents[i] for i in row] for row in probs.topk(k, dim=-1).indices.tolist()]

    return propose
