"""The global head of the HTC: HiTIN-style message passing over the coding tree of the label hierarchy.

The text vector H is projected to one embedding per label node (a linear map to N x node_dim, as in HiAGM/HiTIN's
text propagation), then every layer of the coding tree is computed bottom-up GIN-style: the sum of a node's
children -> MLP -> LayerNorm -> ReLU. Every layer (leaves included) is read out by pooling its nodes, the
read-outs are concatenated, and a linear layer classifies into the logits of ALL label nodes, split per level.
Parent sums are dense matrix products with fixed 0/1 assignment matrices (ONNX-friendly, deterministic).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtic.models.coding_tree import CodingTree

READOUTS = ("sum", "mean")


def assignment_matrices(tree: CodingTree) -> list[torch.Tensor]:
    """`M[i]` (layer i+1 size x layer i size): 1 where the layer-i node is a child of the layer-(i+1) node."""
    out = []
    for layer in tree.parents:
        m = torch.zeros(max(layer) + 1, len(layer))
        m[torch.tensor(layer), torch.arange(len(layer))] = 1.0
        out.append(m)
    return out


class HiTINHead(nn.Module):
    """Coding-tree message passing from a text vector to per-level logits over all label nodes.

    `num_classes[l]` classes at level l; the leaves of `tree` are the label nodes in global order (level
    offsets, root level first), so `sum(num_classes)` must equal the number of leaves.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: Sequence[int],
        tree: CodingTree,
        node_dim: int = 64,
        dropout: float = 0.1,
        readout: str = "sum",
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.num_classes = list(num_classes)
        self.num_labels = sum(self.num_classes)
        if tree.layer_sizes[0] != self.num_labels:
            raise ValueError(f"coding tree has {tree.layer_sizes[0]} leaves, the taxonomy {self.num_labels} label nodes")
        self.node_dim = node_dim
        self.readout = readout
        self.leaf_proj = nn.Linear(input_dim, self.num_labels * node_dim)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(node_dim, node_dim), nn.ReLU(), nn.Linear(node_dim, node_dim))
            for _ in range(tree.height)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(node_dim) for _ in range(tree.height))
        for k, m in enumerate(assignment_matrices(tree)):  # derived from the taxonomy: not saved in checkpoints
            self.register_buffer(f"assign_{k}", m, persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear((tree.height + 1) * node_dim, self.num_labels)

    @property
    def height(self) -> int:
        return len(self.mlps)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(1) if self.readout == "sum" else x.mean(1)

    def node_states(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings of every layer, (batch, layer size, node_dim), leaves first."""
        x = self.leaf_proj(h).view(h.shape[0], self.num_labels, self.node_dim)
        states = [x]
        for k in range(self.height):
            agg = torch.matmul(getattr(self, f"assign_{k}"), x)  # sum of the children of every parent
            x = torch.relu(self.norms[k](self.mlps[k](agg)))
            states.append(x)
        return states

    def forward(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Per-level logits [(batch, num_classes[l]) for l in levels] from text vectors (batch, input_dim)."""
        pooled = torch.cat([self._pool(x) for x in self.node_states(h)], dim=-1)
        logits = self.classifier(self.dropout(pooled))
        return list(logits.split(self.num_classes, dim=-1))
