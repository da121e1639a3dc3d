"""NSReg: a normal-structure relation regulariser over a superpixel graph of the scene.

Reference
---------
[NSReg] Q. Wang, G. Pang, M. Salehi, X. Xia, C. Leckie, "Open-Set Graph Anomaly Detection via
        Normal Structure Regularisation", arXiv:2311.06835 (v5), Sec. 3: the normal-node-
        oriented relation generation, the relation modelling module and the joint objective
        ``L = L_AD + lambda * L_NSR``.

A supervised anomaly head fitted to seen anomalies over-fits them and maps unseen anomaly
types onto normal ones. NSReg adds a *normal structure regularisation* (NSR) term to the
supervised loss, built from the relations of labelled normal nodes to the other nodes of the
graph. Here the graph is a scene's superpixel graph::

    scene (B, C, H, W) --grid superpixels (cell x cell px, pure in label)--> nodes
    node feature  = mean barcode of the superpixel
    edges         = 4-neighbouring superpixels of the same scene

and the relations, each a pair of nodes with a target in [0, 1] (the paper's normal-node-
oriented relation generation; the published code samples them the same way: mala-lab/NSReg,
``runners/train_runner.py``, torch_geometric's ``structured_negative_sampling`` against any
node, ``nnu_alpha`` 0.8, ``lbl_lambda`` 1.0 in ``exp/config/mag_cs/train.yaml``)::

    connected normal     (adjacent superpixels, both normal)         -> 1
    unconnected normal   (two normal superpixels, not adjacent)      -> alpha (default 0.8)
    structured negative  (a normal superpixel of a connected pair
                          and a random non-adjacent superpixel)      -> 0

A relation module ``phi(r_i, r_j) = w . ((sigmoid(r_i) W) * sigmoid(r_j)) + b`` (a bilinear
fusion of the two *shared* representations, as the paper's relation modelling) predicts the
relation; ``L_NSR`` is the binary cross-entropy of ``sigmoid(phi)`` against the soft targets,
and the total loss is ``L_AD + lambda * L_NSR`` with ``lambda = 1``. The anomaly detector is
the plain linear BCE head (``L_AD``) on the same representation, scored per pixel, so the only
difference from :class:`~.anomaly_head.BCEAnomalyHead` is the regulariser: it forces normal
representations to encode *which* normal they are (neighbours vs. other normal materials vs.
anything else) instead of only "not a seen anomaly", a semantically rich normal region that an
unseen anomaly does not fall into as easily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.openset.anomaly_head import (
    AnomalyHead,
    AnomalyHeadDetector,
    AnomalyHeadTraining,
    fit_anomaly_head,
    scene_points,
)

__all__ = [
    "BilinearRelation",
    "NSRegAnomalyHead",
    "NormalStructureDetector",
    "SuperpixelGraph",
    "grid_superpixels",
    "superpixel_graph",
]


def grid_superpixels(height: int, width: int, cell: int) -> np.ndarray:
    """Square superpixels of ``cell`` x ``cell`` pixels: ids ``(H, W)`` int64, row-major."""
    if min(height, width, cell) < 1:
        raise ValueError(f"need height, width, cell >= 1; got {height}, {width}, {cell}")
    rows, cols = np.arange(height) // cell, np.arange(width) // cell
    return rows[:, None] * (-(-width // cell)) + cols[None, :]


@dataclass
class SuperpixelGraph:
    """Superpixel nodes of several scenes.

    Attributes
    ----------
    features : torch.Tensor, (n, C)
        Mean barcode of each node.
    labels : torch.Tensor, (n,) int64
        0 normal, 1 seen anomaly.
    edges : torch.Tensor, (E, 2) int64
        Pairs of adjacent nodes (i < j), same scene.
    """

    features: torch.Tensor
    labels: torch.Tensor
    edges: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def superpixel_graph(barcodes, anomaly_labels, cell: int = 4, purity: float = 0.8):
    """The superpixel graph of labelled scenes (see the module docstring).

    Parameters
    ----------
    barcodes : array_like, (B, C, H, W)
    anomaly_labels : array_like of int, (B, H, W)
        0 normal, 1 seen anomaly, -1 ignore.
    cell : int
        Superpixel side, pixels.
    purity : float
        A superpixel is kept when at least this fraction of its pixels share one label
        (0 or 1); it takes that label.

    Returns
    -------
    SuperpixelGraph
    """
    x = torch.as_tensor(np.asarray(barcodes), dtype=torch.float32)
    if x.ndim != 4:
        raise ValueError(f"barcodes must be (B, C, H, W); got {tuple(x.shape)}")
    channels = x.shape[1]
    points, labels = scene_points(x, anomaly_labels, channels)
    b, _, h, w = x.shape
    if not 0.5 < purity <= 1.0:
        raise ValueError(f"purity must be in (0.5, 1]; got {purity}")
    segments = torch.as_tensor(grid_superpixels(h, w, cell))
    per_scene = int(segments.max()) + 1
    ids = (segments[None] + per_scene * torch.arange(b)[:, None, None]).reshape(-1)
    count = b * per_scene
    totals = torch.zeros(count).index_add_(0, ids, torch.ones(len(ids)))
    sums = torch.zeros(count, channels).index_add_(0, ids, points)
    share = {
        value: torch.zeros(count).index_add_(0, ids, (labels == value).float()) / totals
        for value in (0, 1)
    }
    node_label = torch.full((count,), -1, dtype=torch.long)
    node_label[share[0] >= purity] = 0
    node_label[share[1] >= purity] = 1
    keep = node_label >= 0
    new_index = torch.full((count,), -1, dtype=torch.long)
    new_index[keep] = torch.arange(int(keep.sum()))
    rows, cols = -(-h // cell), -(-w // cell)
    grid = torch.arange(per_scene).reshape(rows, cols)
    pairs = torch.cat(
        [
            torch.stack([grid[:, :-1].reshape(-1), grid[:, 1:].reshape(-1)], 1),
            torch.stack([grid[:-1, :].reshape(-1), grid[1:, :].reshape(-1)], 1),
        ]
    )
    pairs = (pairs[None] + per_scene * torch.arange(b)[:, None, None]).reshape(-1, 2)
    edges = new_index[pairs]
    edges = edges[(edges >= 0).all(1)]
    return SuperpixelGraph(sums[keep] / totals[keep, None], node_label[keep], edges)


class BilinearRelation(nn.Module):
    """The relation module ``phi(r_i, r_j) = w . ((sigmoid(r_i) W) * sigmoid(r_j)) + b``.

    Parameters
    ----------
    embedding_dim : int
        ``D`` of the representations.
    """

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(embedding_dim, embedding_dim))
        self.linear = nn.Linear(embedding_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight)
        self.linear.reset_parameters()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Relation logits ``(P,)`` of representation pairs ``(P, D)``, ``(P, D)``."""
        fused = (torch.sigmoid(first) @ self.weight) * torch.sigmoid(second)
        return self.linear(fused).squeeze(-1)


class NSRegAnomalyHead(AnomalyHead):
    """Linear BCE anomaly head with NSReg's relation regulariser (module docstring).

    Parameters
    ----------
    in_channels, hidden, embedding_dim
        As :class:`~.anomaly_head.AnomalyHead`.
    unconnected_normal_target : float
        Relation target ``alpha`` of two normal superpixels that are not adjacent (0 < alpha
        < 1; the paper's default 0.8).
    weight : float
        ``lambda`` of ``L_AD + lambda * L_NSR``.
    relations_per_step : int
        Relations drawn per step (a third of each type).
    cell : int
        Superpixel side in pixels for :meth:`fit_scenes`.
    shape_normalise : bool
        As :class:`~.anomaly_head.AnomalyHead`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 64,
        embedding_dim: int = 16,
        unconnected_normal_target: float = 0.8,
        weight: float = 1.0,
        relations_per_step: int = 384,
        cell: int = 4,
        shape_normalise: bool = True,
    ):
        super().__init__(in_channels, hidden, embedding_dim, shape_normalise)
        if not 0.0 < unconnected_normal_target < 1.0 or weight < 0 or relations_per_step < 3:
            raise ValueError(
                "need 0 < unconnected_normal_target < 1, weight >= 0, relations_per_step >= 3; "
                f"got {unconnected_normal_target}, {weight}, {relations_per_step}"
            )
        self.linear = nn.Linear(embedding_dim, 1)
        self.relation = BilinearRelation(embedding_dim)
        self.unconnected_normal_target = float(unconnected_normal_target)
        self.weight, self.relations_per_step, self.cell = float(weight), relations_per_step, cell
        self.graph: SuperpixelGraph | None = None

    def logit(self, representation: torch.Tensor) -> torch.Tensor:
        return self.linear(representation).squeeze(-1)

    def relation_logit(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``phi(r_i, r_j)`` for representations ``(P, D)`` each: ``(P,)`` logits."""
        return self.relation(first, second)

    def sample_relations(self, generator: torch.Generator):
        """One step's relations: node pairs ``(P, 2)`` and targets ``(P,)``."""
        graph = self.graph
        third = self.relations_per_step // 3
        normal = torch.nonzero(graph.labels == 0).squeeze(1)
        both_normal = (graph.labels[graph.edges] == 0).all(1)
        connected = graph.edges[both_normal]
        pairs, targets = [], []
        key = connected[:, 0] * len(graph) + connected[:, 1]
        if len(connected):
            pick = torch.randint(len(connected), (third,), generator=generator)
            pairs.append(connected[pick])
            targets.append(torch.ones(third))
        first = normal[torch.randint(len(normal), (third,), generator=generator)]
        second = normal[torch.randint(len(normal), (third,), generator=generator)]
        adjacent = torch.zeros(third, dtype=torch.bool)
        if len(connected):
            low, high = torch.minimum(first, second), torch.maximum(first, second)
            adjacent = torch.isin(low * len(graph) + high, key)
        unconnected = ~adjacent & (first != second)
        pairs.append(torch.stack([first, second], 1)[unconnected])
        targets.append(torch.full((int(unconnected.sum()),), self.unconnected_normal_target))
        if len(connected):
            pick = torch.randint(len(connected), (third,), generator=generator)
            first = connected[pick, 0]
            second = torch.randint(len(graph), (third,), generator=generator)
            low, high = torch.minimum(first, second), torch.maximum(first, second)
            negative = ~torch.isin(low * len(graph) + high, key) & (first != second)
            pairs.append(torch.stack([first, second], 1)[negative])
            targets.append(torch.zeros(int(negative.sum())))
        return torch.cat(pairs), torch.cat(targets)

    def relation_loss(self, generator: torch.Generator) -> torch.Tensor:
        """``L_NSR``: BCE of the predicted relations against their targets (a scalar)."""
        pairs, targets = self.sample_relations(generator)
        device = self.input_mean.device
        features = self.graph.features.to(device)
        first = self.represent(features[pairs[:, 0].to(device)])
        second = self.represent(features[pairs[:, 1].to(device)])
        return F.binary_cross_entropy_with_logits(
            self.relation_logit(first, second), targets.to(device)
        )

    def regularisation(self, generator: torch.Generator) -> torch.Tensor:
        """``lambda * L_NSR``, added to the BCE loss at every training step."""
        return self.weight * self.relation_loss(generator)

    def fit(self, normal, anomalies, training=None):
        """Not available for NSReg: its relation regulariser needs the superpixel graph of
        labelled scenes, which loose points ``normal (N, C)`` and ``anomalies (M, C)`` do not
        carry. Use :meth:`fit_scenes` with barcodes ``(B, C, H, W)`` and anomaly labels
        ``(B, H, W)``.

        Raises
        ------
        ValueError
            Always, naming :meth:`fit_scenes`.
        """
        raise ValueError(
            "NSReg needs the superpixel graph of labelled scenes: call fit_scenes(barcodes "
            "(B, C, H, W), anomaly_labels (B, H, W)) instead of fit(normal, anomalies)"
        )

    def fit_scenes(self, barcodes, anomaly_labels, training: AnomalyHeadTraining | None = None):
        """Train on labelled scenes: pixel BCE plus the relation regulariser.

        Parameters
        ----------
        barcodes : array_like, (B, C, H, W)
        anomaly_labels : array_like of int, (B, H, W)
            0 normal, 1 seen anomaly, -1 ignore.
        training : AnomalyHeadTraining, optional

        Returns
        -------
        list of float
            The total loss at every step.
        """
        graph = superpixel_graph(barcodes, anomaly_labels, self.cell)
        if int((graph.labels == 0).sum()) < 2 or int((graph.labels == 1).sum()) < 1:
            raise ValueError(
                "the scenes' superpixel graph needs >= 2 normal and >= 1 anomalous pure "
                f"superpixels of {self.cell} x {self.cell} px; got "
                f"{int((graph.labels == 0).sum())} and {int((graph.labels == 1).sum())}"
            )
        points, labels = scene_points(barcodes, anomaly_labels, self.in_channels)
        self.graph = graph
        try:
            return fit_anomaly_head(self, points[labels == 0], points[labels == 1], training)
        finally:
            self.graph = None


class NormalStructureDetector(AnomalyHeadDetector):
    """NSReg's head (:class:`NSRegAnomalyHead`) beside a frozen segmenter (registry ``NSReg``).

    Extra options: ``unconnected_normal_target`` 0.8, ``weight`` 1.0, ``cell`` 4 (superpixel
    side, px).
    """

    method = "NSReg"
    head_class = NSRegAnomalyHead
    extra_defaults = {"unconnected_normal_target": 0.8, "weight": 1.0, "cell": 4}
