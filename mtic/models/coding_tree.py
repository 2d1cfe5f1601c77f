"""HiTIN-style coding tree of a label hierarchy, built by greedy structural-entropy minimisation.

The graph is the label hierarchy itself: one vertex per label node of every level (global index = level offset +
class id, root level first), one edge per parent-child link. A coding tree of height k has these vertices as its
leaves (layer 0) and a single root (layer k). Its structural entropy (Li & Pan, 2016) is

    H^T(G) = - sum_{a != root} g_a / vol(G) * log2(vol(a) / vol(parent(a)))

with vol(a) the summed degree of the leaves under a and g_a the number of edges leaving that subtree.

Construction (after HiTIN's "merge, then grow to height k"): start from the one-layer tree (root -> all leaves);
grow one layer at a time until the height is k. A new layer is inserted either under the root ("root-down": the
root's children are grouped) or under every bottom node ("leaf-up": the leaves of each bottom node are grouped),
whichever lowers the entropy more. Grouping wraps every unit in its own new node (free: the entropy is
unchanged) and then greedily applies the merge operator to the pair of adjacent groups whose merge lowers the
entropy most, until no merge lowers it; a move phase (single units change group, Louvain-style) then escapes some
of the greedy merges' local optima, and the two alternate until neither helps. When nothing lowers it (e.g. a flat taxonomy, whose graph has no edges)
the new layer is all single wrappers, so every leaf always sits at depth exactly k (HiTIN's "fill").
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mtic.data.taxonomy import Taxonomy

Edge = tuple[int, int]
EPS = 1e-12


@dataclass
class CodingTree:
    """A coding tree stored bottom-up: `parents[i][j]` is the layer-(i+1) parent of node j of layer i.

    Layer 0 holds the label nodes (global label index), layer `height` the root alone. `history` is the
    structural entropy after every applied operator, starting with the one-layer tree.
    """

    parents: list[list[int]]
    entropy: float
    history: list[float] = field(default_factory=list)

    @property
    def height(self) -> int:
        return len(self.parents)

    @property
    def layer_sizes(self) -> list[int]:
        """Number of nodes of every layer, leaves first, root (1) last."""
        return [len(self.parents[0])] + [max(p) + 1 for p in self.parents]

    def ancestors(self) -> list[list[int]]:
        """`ancestors()[i][v]`: the layer-i ancestor of leaf v (layer 0 is the leaf itself)."""
        out = [list(range(len(self.parents[0])))]
        for layer in self.parents:
            out.append([layer[a] for a in out[-1]])
        return out


# --------------------------------------------------------------------------- graph and entropy
def label_offsets(taxonomy: Taxonomy) -> list[int]:
    """Global index of the first class of every level (level 0 = root level)."""
    offsets, total = [], 0
    for n in taxonomy.num_classes:
        offsets.append(total)
        total += n
    return offsets


def hierarchy_graph(taxonomy: Taxonomy) -> tuple[int, list[Edge]]:
    """(number of label nodes, parent-child edges) of the taxonomy, in global label indices."""
    offsets = label_offsets(taxonomy)
    edges = [
        (offsets[level] + child, offsets[level - 1] + parent)
        for level in range(1, taxonomy.depth)
        for child, parent in enumerate(taxonomy.parents[level])
    ]
    return sum(taxonomy.num_classes), edges


def _degrees(num_nodes: int, edges: Sequence[Edge]) -> list[float]:
    deg = [0.0] * num_nodes
    for u, v in edges:
        deg[u] += 1.0
        deg[v] += 1.0
    return deg


def _xlog(g: float, vol: float, parent_vol: float) -> float:
    """g * log2(vol / parent_vol), with 0 for a subtree no edge leaves (g = 0)."""
    return 0.0 if g <= 0 else g * math.log2(vol / parent_vol)


def _layer_stats(parents: list[list[int]], num_nodes: int, edges: Sequence[Edge]) -> tuple[list[list[float]], list[list[float]]]:
    """(vol, g) of every node of every layer, layer 0 first."""
    deg = _degrees(num_nodes, edges)
    anc = CodingTree(parents, 0.0).ancestors() if parents else [list(range(num_nodes))]
    vols, cuts = [], []
    for layer, owner in enumerate(anc):
        size = num_nodes if layer == 0 else max(parents[layer - 1]) + 1
        vol, cut = [0.0] * size, [0.0] * size
        for v in range(num_nodes):
            vol[owner[v]] += deg[v]
        for u, v in edges:
            if owner[u] != owner[v]:
                cut[owner[u]] += 1.0
                cut[owner[v]] += 1.0
        vols.append(vol)
        cuts.append(cut)
    return vols, cuts


def structural_entropy(parents: list[list[int]], num_nodes: int, edges: Sequence[Edge]) -> float:
    """Structural entropy of the graph (num_nodes, edges) under the coding tree `parents` (bottom-up layers).

    0 for a graph without edges. `parents=[]` is not a tree; the one-layer tree is `[[0] * num_nodes]`.
    """
    total = 2.0 * len(edges)
    if total == 0:
        return 0.0
    vols, cuts = _layer_stats(parents, num_nodes, edges)
    h = 0.0
    for layer in range(len(parents)):  # every layer below the root
        for node, parent in enumerate(parents[layer]):
            h -= _xlog(cuts[layer][node], vols[layer][node], vols[layer + 1][parent])
    return h / total


# --------------------------------------------------------------------------- merge and move operators
# Under a parent of volume V_P, a group G of sibling units (a new node whose children are the units) adds
#   cost(G) = -g_G log2(vol_G / V_P) + s_G log2(vol_G),   s_G = sum of the units' cuts
# to vol(G) x entropy, up to a constant that does not depend on the grouping; a group is (vol, cut, s).
Group = tuple[float, float, float]


def _cost(group: Group, parent_vol: float) -> float:
    vol, cut, inner = group
    return (-cut * math.log2(vol / parent_vol) if cut > 0 else 0.0) + (inner * math.log2(vol) if inner > 0 else 0.0)


def _merge_phase(groups: dict[int, Group], links: dict[int, dict[int, float]], members: dict[int, list[int]],
                 parent_vol: float, next_id: int, deltas: list[float]) -> int:
    """Merge operator, greedily: always the adjacent pair whose merge lowers the entropy most. Returns next id."""
    heap = []
    for a, neighbours in links.items():
        for b, w in neighbours.items():
            if a < b:
                merged = (groups[a][0] + groups[b][0], groups[a][1] + groups[b][1] - 2 * w, groups[a][2] + groups[b][2])
                heap.append((_cost(merged, parent_vol) - _cost(groups[a], parent_vol) - _cost(groups[b], parent_vol), a, b))
    heapq.heapify(heap)
    while heap:
        delta, a, b = heapq.heappop(heap)
        if a not in groups or b not in groups:  # stale: one side was merged already
            continue
        if delta >= -EPS:
            break
        w = links[a][b]
        (va, ga, sa), (vb, gb, sb) = groups.pop(a), groups.pop(b)
        c, next_id = next_id, next_id + 1
        groups[c] = (va + vb, ga + gb - 2 * w, sa + sb)
        members[c] = members.pop(a) + members.pop(b)
        joined: dict[int, float] = {}
        for old in (a, b):
            for other, weight in links.pop(old).items():
                links[other].pop(old)
                if other not in (a, b):
                    joined[other] = joined.get(other, 0.0) + weight
        links[c] = joined
        for other, weight in joined.items():
            links[other][c] = weight
            merged = (groups[c][0] + groups[other][0], groups[c][1] + groups[other][1] - 2 * weight,
                      groups[c][2] + groups[other][2])
            d = _cost(merged, parent_vol) - _cost(groups[c], parent_vol) - _cost(groups[other], parent_vol)
            heapq.heappush(heap, (d, min(c, other), max(c, other)))
        deltas.append(delta)
    return next_id


def _move_phase(vol: Sequence[float], cut: Sequence[float], adj: list[dict[int, float]], group_of: list[int],
                groups: dict[int, Group], parent_vol: float, deltas: list[float]) -> bool:
    """Move operator (local refinement): move single units to a neighbouring group while that lowers the entropy."""
    moved = False
    for u in range(len(vol)):
        a = group_of[u]
        w_to: dict[int, float] = {}
        for v, w in adj[u].items():
            w_to[group_of[v]] = w_to.get(group_of[v], 0.0) + w
        va, ga, sa = groups[a]
        a_minus = (va - vol[u], ga - cut[u] + 2 * w_to.get(a, 0.0), sa - cut[u])
        leave = (_cost(a_minus, parent_vol) if a_minus[0] > EPS else 0.0) - _cost(groups[a], parent_vol)
        best, target = -EPS, None
        for b, w in w_to.items():
            if b != a:
                vb, gb, sb = groups[b]
                b_plus = (vb + vol[u], gb + cut[u] - 2 * w, sb + cut[u])
                delta = leave + _cost(b_plus, parent_vol) - _cost(groups[b], parent_vol)
                if delta < best:
                    best, target = delta, b
        if target is None:
            continue
        vb, gb, sb = groups[target]
        groups[target] = (vb + vol[u], gb + cut[u] - 2 * w_to[target], sb + cut[u])
        if a_minus[0] > EPS or any(g == a for k, g in enumerate(group_of) if k != u):
            groups[a] = a_minus
        else:
            del groups[a]
        group_of[u] = target
        deltas.append(best)
        moved = True
    return moved


def greedy_groups(
    vol: Sequence[float], cut: Sequence[float], weights: dict[Edge, float], parent_vol: float, max_rounds: int = 20
) -> tuple[list[int], list[float]]:
    """Group sibling units under a parent of volume `parent_vol` (one new node per group).

    Units are given by their volume and cut; `weights[(a, b)]` is the edge weight between units a and b. Every
    unit starts in its own group; merge phases (greedy merge operator) alternate with move phases (single units
    change group) until neither lowers the entropy. Returns (group of every unit, numbered 0.. in order of the
    first unit; entropy change x vol(G) of every applied operator, all negative).
    """
    n = len(vol)
    adj: list[dict[int, float]] = [{} for _ in range(n)]
    for (a, b), w in weights.items():
        if a != b and w > 0:
            adj[a][b] = adj[a].get(b, 0.0) + w
            adj[b][a] = adj[b].get(a, 0.0) + w
    group_of, deltas = list(range(n)), []
    for _ in range(max_rounds):
        members: dict[int, list[int]] = {}
        for u, g in enumerate(group_of):
            members.setdefault(g, []).append(u)
        groups: dict[int, Group] = {}
        links: dict[int, dict[int, float]] = {g: {} for g in members}
        for g, units in members.items():
            inner = sum(cut[u] for u in units)
            internal = sum(w for u in units for v, w in adj[u].items() if group_of[v] == g)  # each edge twice
            groups[g] = (sum(vol[u] for u in units), inner - internal, inner)
            for u in units:
                for v, w in adj[u].items():
                    if group_of[v] != g:
                        links[g][group_of[v]] = links[g].get(group_of[v], 0.0) + w
        _merge_phase(groups, links, members, parent_vol, n + max(group_of) + 1, deltas)
        for g, units in members.items():
            for u in units:
                group_of[u] = g
        if not _move_phase(vol, cut, adj, group_of, groups, parent_vol, deltas):
            break
    order = {g: k for k, g in enumerate(dict.fromkeys(group_of))}
    return [order[g] for g in group_of], deltas


# --------------------------------------------------------------------------- growing the tree
def _unit_weights(owner: dict[int, int] | Sequence[int], edges: Sequence[Edge]) -> dict[Edge, float]:
    """Edge weight between units (`owner[v]` = unit of vertex v; vertices missing from a dict owner are skipped)."""
    weights: dict[Edge, float] = {}
    for u, v in edges:
        if isinstance(owner, dict) and (u not in owner or v not in owner):
            continue
        a, b = owner[u], owner[v]
        if a != b:
            key = (min(a, b), max(a, b))
            weights[key] = weights.get(key, 0.0) + 1.0
    return weights


def _root_down(parents: list[list[int]], num_nodes: int, edges: Sequence[Edge]) -> tuple[list[list[int]], list[float]]:
    """Insert a layer under the root by grouping the root's children."""
    vols, cuts = _layer_stats(parents, num_nodes, edges)
    top = len(parents) - 1  # the layer of the root's children
    owner = CodingTree(parents, 0.0).ancestors()[top]
    group, deltas = greedy_groups(vols[top], cuts[top], _unit_weights(owner, edges), vols[-1][0])
    return parents[:top] + [group, [0] * (max(group) + 1)], deltas


def _leaf_up(parents: list[list[int]], num_nodes: int, edges: Sequence[Edge]) -> tuple[list[list[int]], list[float]]:
    """Insert a layer between the leaves and their parents by grouping the leaves of every bottom node."""
    vols, cuts = _layer_stats(parents, num_nodes, edges)
    bottom = parents[0]
    under: list[list[int]] = [[] for _ in range(max(bottom) + 1)]
    inside: list[list[Edge]] = [[] for _ in under]  # edges within each bottom node
    for v, p in enumerate(bottom):
        under[p].append(v)
    for u, v in edges:
        if bottom[u] == bottom[v]:
            inside[bottom[u]].append((u, v))
    leaf_layer, new_parent, deltas = [0] * num_nodes, [], []
    for p, leaves in enumerate(under):
        local = {v: k for k, v in enumerate(leaves)}
        weights = _unit_weights(local, inside[p])
        group, d = greedy_groups([vols[0][v] for v in leaves], [cuts[0][v] for v in leaves], weights, vols[1][p])
        base = len(new_parent)
        for k, v in enumerate(leaves):
            leaf_layer[v] = base + group[k]
        new_parent += [p] * (max(group) + 1)
        deltas += d
    return [leaf_layer, new_parent] + parents[1:], deltas


def build_coding_tree(num_nodes: int, edges: Sequence[Edge], height: int) -> CodingTree:
    """The coding tree of height `height` (>= 1) whose leaves are the `num_nodes` graph vertices (see module doc)."""
    if height < 1:
        raise ValueError(f"coding tree height must be >= 1, got {height}")
    if num_nodes < 1:
        raise ValueError("a coding tree needs at least one leaf")
    total = 2.0 * len(edges)
    parents = [[0] * num_nodes]
    entropy = structural_entropy(parents, num_nodes, edges)
    history = [entropy]
    while len(parents) < height:
        candidates = [_root_down(parents, num_nodes, edges)]
        if len(parents) > 1:  # at height 1 both operators are the same
            candidates.append(_leaf_up(parents, num_nodes, edges))
        parents, deltas = min(candidates, key=lambda c: sum(c[1]))
        for d in deltas:
            entropy += d / total if total else 0.0
            history.append(entropy)
    return CodingTree(parents, structural_entropy(parents, num_nodes, edges), history)


def taxonomy_coding_tree(taxonomy: Taxonomy, height: int) -> CodingTree:
    """The coding tree of a taxonomy's label hierarchy (leaves = every label node, global label index)."""
    num_nodes, edges = hierarchy_graph(taxonomy)
    return build_coding_tree(num_nodes, edges, height)
