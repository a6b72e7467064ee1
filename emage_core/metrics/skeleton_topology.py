"""Skeleton topology of the FGD encoder: edges, edge neighbourhoods, chain pooling.

Pure functions on parent lists; nothing here touches torch. The encoder treats a skeleton as a list
of *edges* (bones), not joints: edge 0 is a virtual edge from the root to an extra joint J (so the
root's own rotation has a bone to live on), edge i >= 1 is (parent(i), i). Joint ids inside an edge
are the skeleton's own (local) indices.

The constants derived here (convolution masks and pooling matrices) are also stored in the
released weights; deriving them lets us build the model without the SMPL-X file and check the
derivation against the released manifest (sum and sha256 per tensor).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Edge = tuple[int, int]

__all__ = [
    "Edge", "PoolPlan", "build_edges", "edge_distances", "edge_neighbours", "edge_chains",
    "plan_pooling", "conv_mask", "pooling_matrix",
]


def build_edges(parents: Sequence[int]) -> list[Edge]:
    """(J,) parents (root negative) -> J edges: (0, J) virtual root edge, then (parent(i), i)."""
    n = len(parents)
    return [(0, n)] + [(int(parents[i]), i) for i in range(1, n)]


def edge_distances(edges: Sequence[Edge]) -> np.ndarray:
    """(E, E) int graph distance between edges; two edges are adjacent when they share a joint.

    Unreachable pairs get a large value (the reference's 100000), never an issue on a tree.
    """
    n = len(edges)
    by_joint: dict[int, list[int]] = {}
    for e, (a, b) in enumerate(edges):
        by_joint.setdefault(a, []).append(e)
        by_joint.setdefault(b, []).append(e)
    dist = np.full((n, n), 100000, dtype=np.int64)
    for src in range(n):  # BFS from every edge; E is tiny (<= 55)
        dist[src, src] = 0
        queue = deque([src])
        while queue:
            e = queue.popleft()
            for joint in edges[e]:
                for f in by_joint[joint]:
                    if dist[src, f] > dist[src, e] + 1:
                        dist[src, f] = dist[src, e] + 1
                        queue.append(f)
    return dist


def edge_neighbours(edges: Sequence[Edge], max_dist: int) -> list[list[int]]:
    """Per edge, the sorted edge ids within ``max_dist`` (itself included)."""
    dist = edge_distances(edges)
    return [np.flatnonzero(row <= max_dist).tolist() for row in dist]


def edge_chains(edges: Sequence[Edge]) -> list[list[int]]:
    """Cut the edge tree into chains, in the reference's order.

    Walk depth first from joint 0, children in edge-id order. A chain ends on arriving at a
    branching joint (more than two incident edges, joint 0 excepted: the root never closes a
    chain) or at an end effector (one incident edge). The order of the chains fixes the order of
    the pooled edges, hence of the next layer's channels, so it must match exactly.
    """
    degree: dict[int, int] = {}
    for a, b in edges:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    children: dict[int, list[int]] = {}
    for e, (a, _) in enumerate(edges):
        children.setdefault(a, []).append(e)

    chains: list[list[int]] = []
    # explicit stack of (joint reached, chain so far); children pushed reversed = recursive preorder
    stack: list[tuple[int, list[int]]] = [(0, [])]
    while stack:
        joint, chain = stack.pop()
        if joint != 0 and degree[joint] > 2:
            chains.append(chain)
            chain = []
        if degree[joint] == 1:
            chains.append(chain)
            continue
        for e in reversed(children.get(joint, [])):
            stack.append((edges[e][1], chain + [e]))
    return chains


@dataclass(frozen=True)
class PoolPlan:
    """How one pooling step merges edges.

    groups: per output edge, the input edge ids averaged into it.
    new_edges: the pooled topology (empty for the last layer, whose output topology is unused).
    """

    groups: tuple[tuple[int, ...], ...]
    new_edges: tuple[Edge, ...]
    n_edges: int

    @property
    def reduces(self) -> bool:
        """Whether pooling changes the edge count (the reference only inserts it then)."""
        return len(self.groups) != self.n_edges


def plan_pooling(edges: Sequence[Edge], last: bool = False) -> PoolPlan:
    """Mean-pool consecutive edge pairs within each chain.

    An odd-length chain keeps its first edge alone; the rest merge pairwise, the merged edge
    running from the first one's parent joint to the second one's child joint. ``last`` (the
    encoder's final layer) averages whole chains instead and produces no new topology.
    """
    groups: list[tuple[int, ...]] = []
    new_edges: list[Edge] = []
    for chain in edge_chains(edges):
        if last:
            groups.append(tuple(chain))
            continue
        if len(chain) % 2 == 1:
            groups.append((chain[0],))
            new_edges.append(tuple(edges[chain[0]]))
            chain = chain[1:]
        for a, b in zip(chain[0::2], chain[1::2]):
            groups.append((a, b))
            new_edges.append((edges[a][0], edges[b][1]))
    return PoolPlan(tuple(groups), tuple(new_edges), len(edges))


def conv_mask(neighbours: Sequence[Sequence[int]], c_in: int, c_out: int, kernel_size: int) -> np.ndarray:
    """(E*c_out, E*c_in, K) float32 0/1: output rows of edge e see the channels of its neighbourhood."""
    n = len(neighbours)
    mask = np.zeros((n * c_out, n * c_in, kernel_size), dtype=np.float32)
    for e, nb in enumerate(neighbours):
        cols = (np.asarray(nb)[:, None] * c_in + np.arange(c_in)[None, :]).ravel()
        mask[e * c_out:(e + 1) * c_out, cols, :] = 1.0
    return mask


def pooling_matrix(groups: Sequence[Sequence[int]], n_edges: int, channels: int) -> np.ndarray:
    """(G*c, E*c) float32: row (g, k) averages channel k of the edges in group g."""
    w = np.zeros((len(groups) * channels, n_edges * channels), dtype=np.float32)
    k = np.arange(channels)
    for g, members in enumerate(groups):
        for e in members:
            w[g * channels + k, e * channels + k] = 1.0 / len(members)
    return w
