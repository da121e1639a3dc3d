"""ACT: adapting a pixel anomaly detector from labelled twin scenes to unlabelled captured
frames by anomaly-aware contrastive alignment.

Reference
---------
[ACT] Q. Wang, G. Pang, M. Salehi, W. Buntine, C. Leckie, "Cross-Domain Graph Anomaly
      Detection via Anomaly-aware Contrastive Alignment", AAAI 2023 (arXiv:2212.01096),
      Sec. 3: the source detector trained with the deviation loss, the joint optimisation of
      unsupervised contrastive learning on the target and anomaly-aware one-class alignment
      (optimal transport, Sinkhorn), then self-labelling-based deviation learning.
[DevNet] G. Pang, C. Shen, A. van den Hengel, "Deep Anomaly Detection with Deviation
      Networks", KDD 2019, eq. (3)-(4) (the deviation loss).
[AdaBN] Y. Li, N. Wang, J. Shi, X. Hou, J. Liu, "Adaptive Batch Normalization for Practical
      Domain Adaptation", Pattern Recognition 80 (2018), Sec. 3 (shared weights,
      domain-specific normalisation statistics).
[Sinkhorn] M. Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport",
      NeurIPS 2013, Algorithm 1 (here in the log domain).
[iForest] F. T. Liu, K. M. Ting, Z.-H. Zhou, "Isolation Forest", ICDM 2008 (the anomaly
      score s(x, n) = 2^(-E h(x) / c(n)), scikit-learn's ``IsolationForest``).

Source = twin scenes with pixel labels (known materials 0, seen anomalies 1); target =
captured frames of the same kind of scene, unlabelled, through *another* encoder (fabricated
filters, :mod:`hyplex.simulation.fabrication`), under another illuminant and with sensor
noise. The graph is the pixel grid: a pixel's input is its barcode's spectral shape and the
mean shape of its 3 x 3 neighbourhood (one GraphSAGE-mean hop)::

    stage 1 (source):   f_s, h_s  <-  deviation loss  L_dev(h_s(f_s(x)), y)        [DevNet]
    stage 2 (adapt):    f_t := copy of f_s whose input standardisation is moved to the
                        target (below), then trained with
        L_OT   = OT_eps( f_t(target pixels kept as normal), f_s(source *normal* batch) )
                                                                    one-class alignment
        L_con  = -log s(z_i . z_j+) - log s(-z_i . z_j-)                    target contrastive:
                 j+ a grid neighbour of i, j- a random pixel                (GraphSAGE unsup.)
        L_anom = L_dev(h_s(f_t(source batch)), y)                           stay anomaly-aware:
                 source anomalies keep deviating from the aligned normals (f_t's weights,
                 the *source's* standardisation: each domain keeps its own input
                 statistics, as AdaBN does [AdaBN])
        L = L_OT + L_con + L_anom
    stage 3 (self-labelling), as the reference code does it: an isolation forest [iForest]
        (500 trees) scores the adapted target embeddings f_t(x); pseudo-anomalies lie above
        mu + 2.5 sigma of its scores (at most the share ``q``, else the top ``q``),
        pseudo-normals below mu + 0.5 sigma (at most 25 %); f_t and a new head h_t are tuned
        with L_dev on balanced batches of them until the loss reaches 1 (the reference's early
        stop) or the step budget ends. The target's anomaly score is h_t(f_t(x)).

Two changes make the alignment *anomaly-aware* on the target side as well (the target holds
anomalies of unknown kinds and share, here ~14 % of its pixels):

* ``standardisation="gain"``: the target's per-feature standardisation is the source's times
  the ratio of the two domains' feature *medians*, ``(x' - r m) / (r s) = (x' / r - m) / s``
  (the captured camera multiplies each band by a gain, see :func:`captured_encoder`). AdaBN's
  mean/std of the target (``"moments"``) also absorbs the target's anomalies and its other
  material mix, which the median ratio largely ignores.
* ``alignment_trim=t`` (0.15): the source detector ranks the target pixels, the target's
  statistics are re-fitted on the lowest ``1 - t`` share (twice) and only those pixels are
  transported onto the source normals, so ``L_OT`` does not pull the likely anomalies into the
  normal cluster (uniform-marginal OT moves *all* the target mass).

What the reference code (QZ-WANG/ACT, ``runners/act_runner.py``, ``exp/sl/sl.py``,
``runners/sl_runner.py``) does differently is available as options and measured: its target
encoder starts from a reset (``target_init="reset"``) and takes one optimiser step per loss
at lr 1e-4 (``split_updates=True``, ``adapt_learning_rate=1e-4``); its stage 2 has no
``L_anom`` (``anomaly_aware_weight=0``). Development seeds 10-15 of the benchmark (target
AUROC, mean; ``.venv/bin/python benchmarks/openset.py --quick --first-seed 10 --seeds 6
--options '{"ACT": {...}}'`` with the detector's option names): before 0.620, no-shift
ceiling 0.741; this default 0.754; with ``"moments"`` 0.682; without the trim 0.732;
detector-ranked pseudo-labels (top ``q`` / lowest half) 0.740; without the early stop 0.709;
without stage 2's training (``adapt_steps=1``) 0.722; without ``L_con`` 0.696; without
``L_OT`` 0.749; without ``L_anom`` 0.675; without self-labelling 0.687; the reference's
reset / separate steps / lr 1e-4 / no ``L_anom`` 0.682.

On the 31-band test setting (one seed; ``OMP_NUM_THREADS=1 .venv/bin/python -m pytest -s -m
slow tests/models/openset/test_contrastive_alignment.py``) mean/std re-standardisation is the
better correction instead: before 0.614; re-standardised only, gain 0.701 / moments 0.737;
full ACT 0.722 (gain) / 0.739 (moments); without self-labelling 0.702.

``L_OT`` is the entropic optimal-transport cost ``<P, C>`` between the two batches (uniform
weights, squared Euclidean cost ``C``), with the plan ``P`` from log-domain Sinkhorn
iterations; its gradient with respect to the embeddings is that of ``<P, C>`` at fixed ``P``
(the envelope theorem), so ``P`` is computed without gradient. Only source *normals* enter the
alignment (one-class), since the target's anomalies are of unknown kinds and share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.openset.anomaly_head import AnomalyHead, representation_network
from hyplex.models.openset.scores import OpenSetDetector

__all__ = [
    "ACTAdapter",
    "ACTTraining",
    "CapturedDomainEncoder",
    "ContrastiveAlignmentDetector",
    "captured_encoder",
    "deviation_loss",
    "pixel_graph_inputs",
    "sinkhorn_cost",
    "sinkhorn_plan",
]


def sinkhorn_plan(
    cost: torch.Tensor,
    epsilon: float,
    iterations: int = 100,
    source_weights=None,
    target_weights=None,
) -> torch.Tensor:
    """Entropic optimal-transport plan by log-domain Sinkhorn iterations.

    Solves ``min_P <P, C> - epsilon H(P)`` subject to ``P 1 = a``, ``P^T 1 = b``.

    Parameters
    ----------
    cost : torch.Tensor, (n, m)
        Transport cost ``C``.
    epsilon : float
        Entropic regularisation (> 0), in the unit of ``cost``.
    iterations : int
        Sinkhorn iterations (each updates both dual potentials).
    source_weights, target_weights : torch.Tensor, (n,) and (m,), optional
        Marginals ``a`` and ``b`` (positive, each summing to 1); default uniform.

    Returns
    -------
    torch.Tensor, (n, m)
        The plan ``P = exp((f_i + g_j - C_ij) / epsilon)``.
    """
    if cost.ndim != 2 or epsilon <= 0 or iterations < 1:
        raise ValueError(
            f"need a cost matrix (n, m), epsilon > 0 and iterations >= 1; got shape "
            f"{tuple(cost.shape)}, epsilon={epsilon}, iterations={iterations}"
        )
    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)
    a = a if source_weights is None else torch.as_tensor(source_weights, dtype=cost.dtype)
    b = b if target_weights is None else torch.as_tensor(target_weights, dtype=cost.dtype)
    if a.shape != (n,) or b.shape != (m,):
        raise ValueError(f"marginals must have shapes ({n},) and ({m},)")
    log_a, log_b = a.log(), b.log()
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for _ in range(iterations):
        # f_i = eps log a_i - eps logsumexp_j((g_j - C_ij) / eps), then g likewise
        f = epsilon * log_a - epsilon * torch.logsumexp((g[None, :] - cost) / epsilon, dim=1)
        g = epsilon * log_b - epsilon * torch.logsumexp((f[:, None] - cost) / epsilon, dim=0)
    return torch.exp((f[:, None] + g[None, :] - cost) / epsilon)


def sinkhorn_cost(
    x: torch.Tensor, y: torch.Tensor, epsilon: float = 0.05, iterations: int = 100
) -> torch.Tensor:
    """Entropic OT cost ``<P, C>`` between point clouds ``x (n, D)`` and ``y (m, D)``.

    ``C`` is the squared Euclidean distance divided by its (detached) mean, so ``epsilon`` is
    relative to a typical cost; ``P`` is from :func:`sinkhorn_plan` and held fixed for the
    gradient. Returns a scalar.
    """
    cost = torch.cdist(x, y) ** 2
    scale = cost.detach().mean().clamp_min(1e-12)
    with torch.no_grad():
        plan = sinkhorn_plan(cost.detach() / scale, epsilon, iterations)
    return (plan * cost).sum()


def deviation_loss(scores: torch.Tensor, labels: torch.Tensor, margin: float = 5.0):
    """DevNet's deviation loss with a standard-normal reference (mean 0, std 1).

    ``dev = (s - mu_R) / sigma_R = s``; ``L = (1 - y) |dev| + y max(0, margin - dev)``,
    averaged. (DevNet draws 5000 reference scores from N(0, 1) per step; their mean and
    standard deviation are 0 and 1 up to sampling noise, used here exactly.)

    Parameters
    ----------
    scores : torch.Tensor, (N,)
    labels : torch.Tensor, (N,)
        1 = anomaly, 0 = normal.
    margin : float
        Confidence margin ``a`` of [DevNet] (5).
    """
    labels = labels.float()
    return ((1 - labels) * scores.abs() + labels * F.relu(margin - scores)).mean()


def pixel_graph_inputs(barcodes) -> tuple[torch.Tensor, tuple]:
    """Per-pixel inputs of the pixel-grid graph: ``(N, 2C)`` and the map shape ``(B, H, W)``.

    Each pixel's barcode shape ``x / mean(x)`` and the mean shape over its 3 x 3
    neighbourhood (edge pixels average over the neighbours that exist).
    """
    x = barcodes if isinstance(barcodes, torch.Tensor) else torch.as_tensor(np.asarray(barcodes))
    if x.ndim != 4:
        raise ValueError(f"barcodes must be maps (B, C, H, W); got {tuple(x.shape)}")
    x = x.float()
    shape = AnomalyHead.spectral_shape(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]))
    b, c, h, w = x.shape
    shape_map = shape.reshape(b, h, w, c).permute(0, 3, 1, 2)
    ones = torch.ones(1, 1, h, w)
    counts = F.avg_pool2d(ones, 3, 1, 1, count_include_pad=True)
    neighbourhood = F.avg_pool2d(shape_map, 3, 1, 1, count_include_pad=True) / counts
    neighbourhood = neighbourhood.permute(0, 2, 3, 1).reshape(-1, c)
    return torch.cat([shape, neighbourhood], 1), (b, h, w)


def sigma_selection(scores: torch.Tensor, a: float, max_share: float, outliers: bool):
    """Indices selected by a sigma threshold ``mu + a sigma`` on ``scores (N,)``: above it
    (``outliers``) or below it, at most ``max_share`` of ``N`` (the most extreme ones then)."""
    scores = scores.flatten()
    threshold = scores.mean() + a * scores.std()
    chosen = torch.nonzero(scores > threshold if outliers else scores < threshold).squeeze(1)
    limit = max(1, int(max_share * len(scores)))
    if len(chosen) > limit or len(chosen) == 0:
        chosen = torch.topk(scores, k=limit, largest=outliers).indices
    return chosen


class _Encoder(nn.Module):
    """Standardisation plus the shared MLP, on pixel-graph inputs ``(N, 2C)``."""

    def __init__(self, in_features: int, hidden: int, embedding_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.network = representation_network(in_features, hidden, embedding_dim)

    @torch.no_grad()
    def fit_standardisation(self, inputs: torch.Tensor) -> None:
        self.mean.copy_(inputs.mean(0))
        self.std.copy_(inputs.std(0).clamp_min(1e-4))

    @torch.no_grad()
    def fit_gain(self, inputs: torch.Tensor, reference_inputs: torch.Tensor, reference) -> None:
        """The reference domain's standardisation times a per-feature gain ``r``, the ratio
        of the two domains' medians: ``(x' - r m) / (r s) = (x' / r - m) / s``.

        Parameters
        ----------
        inputs : torch.Tensor, (N, F)
            This domain's pixel inputs (unitless spectral shapes).
        reference_inputs : torch.Tensor, (M, F)
            The reference domain's (source normal) pixel inputs.
        reference : _Encoder
            The reference encoder, whose ``mean`` and ``std`` (F,) are already fitted.
        """
        ratio = inputs.median(0).values / reference_inputs.median(0).values.clamp_min(1e-6)
        self.mean.copy_(reference.mean * ratio)
        self.std.copy_(reference.std * ratio.abs().clamp_min(1e-4))

    def forward(self, inputs: torch.Tensor, statistics: _Encoder | None = None) -> torch.Tensor:
        """Embeddings ``(N, D)`` of inputs ``(N, 2C)``, standardised with this encoder's
        statistics or with those of ``statistics`` (another domain's encoder)."""
        reference = self if statistics is None else statistics
        return self.network((inputs - reference.mean) / reference.std)


@dataclass(frozen=True)
class ACTTraining:
    """Settings of :class:`ACTAdapter` (steps of the three stages, batch, rates).

    Attributes
    ----------
    source_steps, adapt_steps, self_label_steps : int
    batch_size : int
        Pixels per batch (per domain).
    learning_rate : float
    sinkhorn_epsilon : float
        Relative entropic regularisation of the alignment.
    sinkhorn_iterations : int
        Sinkhorn iterations per step.
    alignment_weight, contrastive_weight, anomaly_aware_weight : float
        Weights of ``L_OT``, ``L_con`` and ``L_anom`` in stage 2 (1, 1 and 1).
    adapt_learning_rate : float
        Adam rate of stage 2 (smaller than the source's: the target encoder starts from the
        source's weights).
    target_init : {"source", "reset"}
        Stage 2 starts ``f_t`` from the source's weights or, as the reference code does,
        from freshly initialised ones.
    standardisation : {"gain", "moments"}
        How the target's input statistics are set: the source's times the ratio of the
        domains' feature medians, or the target's own mean and std (AdaBN).
    split_updates : bool
        One optimiser step for ``L_OT`` and another for ``L_con + L_anom`` (the reference
        code) instead of one step on their sum.
    alignment_trim : float
        Share of target pixels (ranked by the source detector) left out of the one-class
        alignment and of the target's statistics, in [0, 0.5).
    pseudo_labels : {"iforest", "detector"}
        Self-labelling from an isolation forest on the adapted embeddings with sigma
        thresholds (reference code), or from the source detector's ranking (top ``q``,
        lowest half).
    self_label_stop : float
        Self-labelling stops once its deviation loss is at most this (reference: 1; 0 runs
        all ``self_label_steps``).
    pseudo_anomaly_share : float
        Largest share ``q`` of target pixels taken as pseudo-anomalies in self-labelling.
    margin : float
        Deviation-loss margin.
    seed : int
    progress : bool
    """

    source_steps: int = 300
    adapt_steps: int = 200
    self_label_steps: int = 150
    batch_size: int = 256
    learning_rate: float = 2e-3
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 50
    pseudo_anomaly_share: float = 0.05
    margin: float = 5.0
    alignment_weight: float = 1.0
    contrastive_weight: float = 1.0
    adapt_learning_rate: float = 5e-4
    anomaly_aware_weight: float = 1.0
    target_init: str = "source"
    standardisation: str = "gain"
    split_updates: bool = False
    alignment_trim: float = 0.15
    pseudo_labels: str = "iforest"
    self_label_stop: float = 1.0
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        if min(self.source_steps, self.adapt_steps) < 1 or self.self_label_steps < 0:
            raise ValueError("ACTTraining needs source_steps, adapt_steps >= 1")
        if not 0 < self.pseudo_anomaly_share < 0.5 or self.batch_size < 4:
            raise ValueError("need 0 < pseudo_anomaly_share < 0.5 and batch_size >= 4")
        if self.standardisation not in ("gain", "moments"):
            raise ValueError(
                f"standardisation must be 'gain' or 'moments'; got {self.standardisation!r}"
            )
        if self.target_init not in ("source", "reset"):
            raise ValueError(f"target_init must be 'source' or 'reset'; got {self.target_init!r}")
        if self.pseudo_labels not in ("detector", "iforest"):
            raise ValueError(
                f"pseudo_labels must be 'detector' or 'iforest'; got {self.pseudo_labels!r}"
            )
        if not 0 <= self.alignment_trim < 0.5:
            raise ValueError(f"alignment_trim must be in [0, 0.5); got {self.alignment_trim}")
        if self.anomaly_aware_weight < 0 or self.self_label_stop < 0:
            raise ValueError("anomaly_aware_weight and self_label_stop must be >= 0")


class ACTAdapter(nn.Module):
    """Source detector plus its ACT adaptation to a target domain (module docstring).

    Parameters
    ----------
    in_channels : int
        Barcode length ``C``; both domains must have it.
    hidden, embedding_dim : int
        Sizes of the encoders' MLP.
    training : ACTTraining, optional
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 64,
        embedding_dim: int = 16,
        training: ACTTraining | None = None,
    ):
        super().__init__()
        if in_channels < 1 or hidden < 1 or embedding_dim < 1:
            raise ValueError("in_channels, hidden and embedding_dim must be >= 1")
        self.in_channels = int(in_channels)
        self.training_config = training or ACTTraining()
        self.source_encoder = _Encoder(2 * in_channels, hidden, embedding_dim)
        self.source_detector = nn.Linear(embedding_dim, 1)
        self.target_encoder = _Encoder(2 * in_channels, hidden, embedding_dim)
        self.target_detector = nn.Linear(embedding_dim, 1)
        self.register_buffer("adapted", torch.zeros((), dtype=torch.bool))

    def _inputs(self, barcodes, what: str):
        x = (
            barcodes
            if isinstance(barcodes, torch.Tensor)
            else torch.as_tensor(np.asarray(barcodes))
        )
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{what} must be barcode maps (B, C={self.in_channels}, H, W); got {tuple(x.shape)}"
            )
        inputs, shape = pixel_graph_inputs(x)
        return inputs.to(self.source_detector.weight.device), shape

    def _optimiser(self, *modules):
        parameters = [p for module in modules for p in module.parameters()]
        return torch.optim.Adam(parameters, lr=self.training_config.learning_rate)

    def fit_source(self, barcodes, anomaly_labels) -> list[float]:
        """Stage 1: train ``f_s, h_s`` with the deviation loss on labelled source scenes.

        Parameters
        ----------
        barcodes : array_like, (B, C, H, W)
        anomaly_labels : array_like of int, (B, H, W)
            0 normal, 1 anomaly, -1 ignore.
        """
        config = self.training_config
        inputs, shape = self._inputs(barcodes, "source barcodes")
        labels = torch.as_tensor(np.asarray(anomaly_labels)).long()
        if tuple(labels.shape) != tuple(shape):
            raise ValueError(
                f"anomaly_labels must have shape {tuple(shape)}; got {tuple(labels.shape)}"
            )
        labels = labels.reshape(-1).to(inputs.device)
        normal, anomalous = (
            torch.nonzero(labels == 0).squeeze(1),
            torch.nonzero(labels == 1).squeeze(1),
        )
        if len(normal) < 2 or len(anomalous) < 1:
            raise ValueError("the source needs >= 2 normal and >= 1 anomalous labelled pixels")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for layer in (*self.source_encoder.network, self.source_detector):
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        for p in (*self.source_encoder.parameters(), *self.source_detector.parameters()):
            p.requires_grad_(True)
        self.adapted.fill_(False)
        self.source_encoder.fit_standardisation(inputs[normal])
        self._source = (inputs, normal, anomalous)
        generator = torch.Generator().manual_seed(config.seed)
        optimiser = self._optimiser(self.source_encoder, self.source_detector)
        history = []
        for _ in range(config.source_steps):
            batch, batch_labels = self._balanced(normal, anomalous, generator)
            scores = self.source_detector(self.source_encoder(inputs[batch])).squeeze(-1)
            loss = deviation_loss(scores, batch_labels, config.margin)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
        return history

    def _balanced(self, normal, anomalous, generator):
        half = self.training_config.batch_size // 2
        i = normal[torch.randint(len(normal), (half,), generator=generator).to(normal.device)]
        j = anomalous[torch.randint(len(anomalous), (half,), generator=generator).to(normal.device)]
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(normal.device)
        return torch.cat([i, j]), labels

    def adapt(self, target_barcodes) -> dict[str, list[float]]:
        """Stages 2 and 3 on unlabelled target frames ``(B, C, H, W)``; see the docstring.

        Returns
        -------
        dict
            Loss histories: ``alignment``, ``contrastive``, ``anomaly_aware``, ``self_label``.
        """
        from tqdm.auto import tqdm

        if not hasattr(self, "_source"):
            raise ValueError("fit_source must run before adapt")
        config = self.training_config
        target, (b, h, w) = self._inputs(target_barcodes, "target barcodes")
        if len(target) < config.batch_size:
            raise ValueError(
                f"the target frames hold {len(target)} pixels, fewer than one batch "
                f"({config.batch_size})"
            )
        source, normal, anomalous = self._source
        device = target.device
        self.target_encoder.load_state_dict(self.source_encoder.state_dict())
        if config.target_init == "reset":  # the reference code's fresh target encoder
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + 2)
                for layer in self.target_encoder.network:
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
        self._fit_target_statistics(target)
        for p in (*self.source_encoder.parameters(), *self.source_detector.parameters()):
            p.requires_grad_(False)
        aligned = self._one_class_pixels(target)
        generator = torch.Generator().manual_seed(config.seed + 1)
        optimiser = torch.optim.Adam(
            self.target_encoder.parameters(), lr=config.adapt_learning_rate
        )
        history = {"alignment": [], "contrastive": [], "anomaly_aware": [], "self_label": []}
        half = config.batch_size // 2
        pixel_index = torch.arange(b * h * w).reshape(b, h, w)
        for _ in tqdm(range(config.adapt_steps), disable=not config.progress, desc="ACT adapt"):
            anchors = torch.randint(len(target), (half,), generator=generator)
            # a grid neighbour (4- or 8-connected, clipped at the frame edge) is the positive
            image, row, col = anchors // (h * w), (anchors // w) % h, anchors % w
            offset = torch.randint(-1, 2, (2, half), generator=generator)
            neighbour = pixel_index[
                image, (row + offset[0]).clamp(0, h - 1), (col + offset[1]).clamp(0, w - 1)
            ]
            negatives = torch.randint(len(target), (half,), generator=generator)
            z = self.target_encoder(target[torch.cat([anchors, neighbour, negatives]).to(device)])
            z_anchor, z_positive, z_negative = z.split(half)
            contrastive = -(
                F.logsigmoid((z_anchor * z_positive).sum(1)).mean()
                + F.logsigmoid(-(z_anchor * z_negative).sum(1)).mean()
            )
            source_normal = normal[
                torch.randint(len(normal), (half,), generator=generator).to(device)
            ]
            # one-class alignment: only the target pixels kept as normal (all of them unless
            # alignment_trim > 0) are transported onto the source normals
            kept = aligned[torch.randint(len(aligned), (half,), generator=generator)]
            if config.split_updates:  # the reference code: its own step for the OT loss
                alignment = sinkhorn_cost(
                    self.target_encoder(target[kept.to(device)]),
                    self.source_encoder(source[source_normal]),
                    config.sinkhorn_epsilon,
                    config.sinkhorn_iterations,
                )
                optimiser.zero_grad()
                (config.alignment_weight * alignment).backward()
                optimiser.step()
                z = self.target_encoder(
                    target[torch.cat([anchors, neighbour, negatives]).to(device)]
                )
                z_anchor, z_positive, z_negative = z.split(half)
                contrastive = -(
                    F.logsigmoid((z_anchor * z_positive).sum(1)).mean()
                    + F.logsigmoid(-(z_anchor * z_negative).sum(1)).mean()
                )
            else:
                alignment = sinkhorn_cost(
                    self.target_encoder(target[kept.to(device)]),
                    self.source_encoder(source[source_normal]),
                    config.sinkhorn_epsilon,
                    config.sinkhorn_iterations,
                )
            batch, batch_labels = self._balanced(normal, anomalous, generator)
            # source pixels through the adapted weights but with the source's own statistics
            # (the target's would shift every source input by the domain's gains)
            embedded = self.target_encoder(source[batch], statistics=self.source_encoder)
            scores = self.source_detector(embedded).squeeze(-1)
            anomaly_aware = deviation_loss(scores, batch_labels, config.margin)
            loss = config.contrastive_weight * contrastive + (
                config.anomaly_aware_weight * anomaly_aware
            )
            if not config.split_updates:
                loss = loss + config.alignment_weight * alignment
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history["alignment"].append(float(alignment.detach()))
            history["contrastive"].append(float(contrastive.detach()))
            history["anomaly_aware"].append(float(anomaly_aware.detach()))
        self.target_detector.load_state_dict(self.source_detector.state_dict())
        if config.self_label_steps:
            history["self_label"] = self._self_label(target, generator)
        self.adapted.fill_(True)
        return history

    @torch.no_grad()
    def _one_class_pixels(self, target: torch.Tensor) -> torch.Tensor:
        """Indices of the target pixels that the one-class alignment transports.

        With ``alignment_trim = t > 0`` the target's standardisation is re-fitted on the
        pixels the source detector ranks in the lowest ``1 - t`` share (twice: the ranking
        itself moves with the statistics) and only those are aligned, so the anomalies of the
        target are neither averaged into its statistics nor transported onto source normals.
        """
        trim = self.training_config.alignment_trim
        everything = torch.arange(len(target))
        if trim == 0:
            return everything
        for _ in range(2):
            scores = self.source_detector(self.target_encoder(target)).squeeze(-1).cpu()
            kept = everything[scores <= torch.quantile(scores, 1.0 - trim)]
            self._fit_target_statistics(target[kept.to(target.device)])
        return kept

    def _fit_target_statistics(self, target: torch.Tensor) -> None:
        source, normal, _ = self._source
        if self.training_config.standardisation == "gain":
            self.target_encoder.fit_gain(target, source[normal], self.source_encoder)
        else:
            self.target_encoder.fit_standardisation(target)

    def _pseudo_labels(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pseudo-anomalous, pseudo-normal) target pixel indices for self-labelling."""
        config = self.training_config
        with torch.no_grad():
            if config.pseudo_labels == "detector":
                scores = self.source_detector(self.target_encoder(target)).squeeze(-1).cpu()
                order = torch.argsort(scores, descending=True)
                count = max(1, int(math.ceil(config.pseudo_anomaly_share * len(order))))
                return order[:count], order[len(order) // 2 :]
            from sklearn.ensemble import IsolationForest

            embedded = self.target_encoder(target).cpu().numpy()
        forest = IsolationForest(
            n_estimators=500, contamination=0.05, random_state=config.seed
        ).fit(embedded)
        scores = torch.as_tensor(-forest.score_samples(embedded), dtype=torch.float32)
        return (
            sigma_selection(scores, 2.5, config.pseudo_anomaly_share, outliers=True),
            sigma_selection(scores, 0.5, 0.25, outliers=False),
        )

    def _self_label(self, target: torch.Tensor, generator: torch.Generator) -> list[float]:
        config = self.training_config
        pseudo_anomalous, pseudo_normal = self._pseudo_labels(target)
        pseudo_anomalous = pseudo_anomalous.to(target.device)
        pseudo_normal = pseudo_normal.to(target.device)
        optimiser = self._optimiser(self.target_encoder, self.target_detector)
        history = []
        for _ in range(config.self_label_steps):
            batch, labels = self._balanced(pseudo_normal, pseudo_anomalous, generator)
            loss = deviation_loss(
                self.target_detector(self.target_encoder(target[batch])).squeeze(-1),
                labels,
                config.margin,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
            if float(loss.detach()) <= config.self_label_stop:  # the reference's early stop
                break
        return history

    @torch.no_grad()
    def predict(self, barcodes, adapted: bool = True) -> torch.Tensor:
        """Anomaly scores ``(B, H, W)`` (larger = more anomalous) of barcode maps.

        ``adapted=False`` scores with the source detector alone (the "before" of a domain
        shift); ``adapted=True`` (after :meth:`adapt`) with ``h_t . f_t``.
        """
        inputs, shape = self._inputs(barcodes, "barcodes")
        if adapted:
            if not bool(self.adapted):
                raise ValueError("adapt(target_barcodes) must run before predict(adapted=True)")
            scores = self.target_detector(self.target_encoder(inputs))
        else:
            scores = self.source_detector(self.source_encoder(inputs))
        return scores.squeeze(-1).cpu().reshape(shape)


class CapturedDomainEncoder(nn.Module):
    """A fabricated, differently lit camera whose barcodes are normalised with the *twin's*
    white reference: ``b'_f = b_f * gain_f`` (see :func:`captured_encoder`).

    Parameters
    ----------
    encoder : torch.nn.Module
        ``cube (B, L, H, W) -> barcodes (B, F, H, W)`` of the fabricated filters under the
        captured illuminant (normalised by their own white).
    gains : array_like, (F,)
        ``white_f(captured) / white_f(twin)``: what a white tile gives through the made
        filters under the captured light, relative to what the twin predicts.
    """

    def __init__(self, encoder: nn.Module, gains):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("gains", torch.as_tensor(np.asarray(gains), dtype=torch.float32))

    def forward(self, cube, generator=None, noise: bool = True) -> torch.Tensor:
        """Captured-domain barcodes of reflectance cubes.

        Parameters
        ----------
        cube : torch.Tensor, (B, L, H, W)
            Apparent reflectance on the encoder's grid (unitless, typically in [0, 1]).
        generator : torch.Generator, optional
            Draws the sensor noise (None: the global generator).
        noise : bool
            False gives the expected (noise-free) barcodes.

        Returns
        -------
        torch.Tensor, (B, F, H, W)
            The fabricated filters' barcodes normalised by their own white, times ``gains``
            (unitless, white-relative as the twin's would be read).
        """
        codes = self.encoder(cube, generator=generator, noise=noise)
        return codes * self.gains.to(codes)[None, :, None, None]


def captured_encoder(
    responses,
    wavelengths_nm,
    illuminant: str = "A",
    illuminance_lux: float = 2000.0,
    fabrication=None,
    seed: int = 0,
    twin_illuminant: str = "D65",
) -> CapturedDomainEncoder:
    """The "captured" domain of the twin: the design's filters as fabricated, another
    illuminant, the sensor noise of a dimmer scene, and barcodes normalised with the twin's
    (designed, ``twin_illuminant``) white reference instead of a measured one.

    The per-filter gain is ``sum_l E_c(l) T_fab,f(l) / sum_l E_t(l) T_f(l)`` (relative spectra
    of the captured and twin illuminants, each scaled to unit sum, so only their shapes
    matter; the sensor QE is common to both and left out): the shift a decoder trained on the
    twin meets until the camera is calibrated on site.

    Parameters
    ----------
    responses : array_like, (F, L)
        Designed filter transmissions (unitless, [0, 1]).
    wavelengths_nm : array_like, (L,)
        Grid, nm.
    illuminant : str
        Captured light, a name for :func:`hyplex.simulation.illuminants.get_illuminant`
        (default CIE A, a 2856 K tungsten lamp).
    illuminance_lux : float
        Illuminance, lux (lower = fewer photo-electrons = more shot noise).
    fabrication : hyplex.simulation.fabrication.FabricationError, optional
        Spread of the per-filter shift, broadening and scale errors (default: 10 nm, 8 nm,
        20 %).
    seed : int
        Draws the fabrication errors.
    twin_illuminant : str
        The light the twin (and its white reference) assumed.

    Returns
    -------
    CapturedDomainEncoder
        ``cube (B, L, H, W) -> noisy barcodes (B, F, H, W)``.
    """
    from hyplex.models.encoder_baselines import FixedResponseEncoder
    from hyplex.models.encoder_capture import CaptureSettings
    from hyplex.simulation.fabrication import fabricate
    from hyplex.simulation.illuminants import get_illuminant

    designed = np.asarray(responses, dtype=np.float64)
    made = fabricate(designed, wavelengths_nm, fabrication, seed=seed)
    settings = CaptureSettings(illuminant=illuminant, illuminance_lux=float(illuminance_lux))
    camera = FixedResponseEncoder(made.responses, wavelengths_nm, settings, name="captured")
    captured = get_illuminant(illuminant, wavelengths_nm).spectral_irradiance
    twin = get_illuminant(twin_illuminant, wavelengths_nm).spectral_irradiance
    gains = (made.responses @ (captured / captured.sum())) / np.maximum(
        designed @ (twin / twin.sum()), 1e-12
    )
    return CapturedDomainEncoder(camera, gains)


class ContrastiveAlignmentDetector(OpenSetDetector):
    """ACT (:class:`ACTAdapter`) in the open-set detector contract (registry ``ACT``).

    ``fit(data)`` trains the source detector on ``data.train`` + ``data.auxiliary`` (planted
    auxiliary outliers = anomalies) and adapts it to ``data.target``, the unlabelled captured
    barcodes ``(N, F, H, W)`` (``hyplex openset fit --target-frames DIR``). The segmenter is
    untouched. Options (defaults): ``source_steps`` 300, ``adapt_steps`` 200,
    ``self_label_steps`` 150, ``batch_size`` 256, ``lr`` 2e-3, ``sinkhorn_epsilon`` 0.05,
    ``pseudo_anomaly_share`` 0.05, ``hidden`` 64, ``embedding_dim`` 16, the weights of
    stage 2's terms ``alignment_weight`` 1.0 (``L_OT``), ``contrastive_weight`` 1.0
    (``L_con``) and ``anomaly_aware_weight`` 1.0 (``L_anom``), ``adapt_lr`` 5e-4 and the
    :class:`ACTTraining` choices ``standardisation`` "gain", ``alignment_trim`` 0.15,
    ``pseudo_labels`` "iforest", ``self_label_stop`` 1.0, ``target_init`` "source",
    ``split_updates`` false, so that an ablation is a detector option
    (``benchmarks/openset.py --options '{"ACT": {"contrastive_weight": 0}}'``).
    """

    method = "ACT"
    defaults = {
        "source_steps": 300,
        "adapt_steps": 200,
        "self_label_steps": 150,
        "batch_size": 256,
        "lr": 2e-3,
        "sinkhorn_epsilon": 0.05,
        "pseudo_anomaly_share": 0.05,
        "hidden": 64,
        "embedding_dim": 16,
        "alignment_weight": 1.0,
        "contrastive_weight": 1.0,
        "anomaly_aware_weight": 1.0,
        "standardisation": "gain",
        "alignment_trim": 0.15,
        "pseudo_labels": "iforest",
        "self_label_stop": 1.0,
        "target_init": "source",
        "split_updates": False,
        "adapt_lr": 5e-4,
    }

    def __init__(self, model: nn.Module, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown ACT options {unknown}; expected {sorted(self.defaults)}")
        merged = {**self.defaults, **options}
        for key in ("source_steps", "adapt_steps", "batch_size", "hidden", "embedding_dim"):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"option {key} must be an integer >= 1; got {value!r}")
        for key in (
            "alignment_weight",
            "contrastive_weight",
            "anomaly_aware_weight",
            "alignment_trim",
            "self_label_stop",
            "adapt_lr",
        ):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"option {key} must be a number >= 0; got {value!r}")
        if not isinstance(merged["split_updates"], bool):
            raise ValueError(
                f"option split_updates must be true or false; got {merged['split_updates']!r}"
            )
        super().__init__(model, **merged)
        channels = getattr(model, "in_channels", None)
        if channels is None:
            raise ValueError("the segmenter must have an in_channels attribute (barcode length)")
        self.adapter = ACTAdapter(
            int(channels), merged["hidden"], merged["embedding_dim"], self._training(0)
        )

    def _training(self, seed: int, progress: bool = False) -> ACTTraining:
        o = self.options
        return ACTTraining(
            source_steps=o["source_steps"],
            adapt_steps=o["adapt_steps"],
            self_label_steps=o["self_label_steps"],
            batch_size=o["batch_size"],
            learning_rate=o["lr"],
            sinkhorn_epsilon=o["sinkhorn_epsilon"],
            pseudo_anomaly_share=o["pseudo_anomaly_share"],
            alignment_weight=float(o["alignment_weight"]),
            contrastive_weight=float(o["contrastive_weight"]),
            anomaly_aware_weight=float(o["anomaly_aware_weight"]),
            standardisation=str(o["standardisation"]),
            alignment_trim=float(o["alignment_trim"]),
            pseudo_labels=str(o["pseudo_labels"]),
            self_label_stop=float(o["self_label_stop"]),
            target_init=str(o["target_init"]),
            split_updates=bool(o["split_updates"]),
            adapt_learning_rate=float(o["adapt_lr"]),
            seed=int(seed),
            progress=progress,
        )

    def head_modules(self) -> dict[str, nn.Module]:
        return {"act": self.adapter}

    def fit(self, data, *, seed: int = 0, progress: bool = False, **kwargs):
        """Source training then adaptation to ``data.target``; returns ``self``."""
        import time

        from hyplex.models.openset.anomaly_head import openset_anomaly_labels

        if data.target is None or len(data.target) == 0:
            raise ValueError(
                "ACT adapts to unlabelled captured frames: data.target holds none (give "
                "--target-frames DIR with at least one frame)"
            )
        channels = self.adapter.in_channels
        target = torch.as_tensor(data.target)
        if data.n_channels != channels or target.ndim != 4 or target.shape[1] != channels:
            raise ValueError(
                f"mismatched channel counts: the segmenter reads {channels}, the labelled data "
                f"has {data.n_channels} and the target frames {tuple(target.shape)}"
            )
        self.adapter.training_config = self._training(seed, progress)
        barcodes = torch.cat([data.train.barcodes, data.auxiliary.barcodes])
        labels = torch.cat(
            [
                torch.where(data.train.labels < 0, -1, 0),
                openset_anomaly_labels(data.auxiliary.labels),
            ]
        )
        start = time.perf_counter()
        source = self.adapter.fit_source(barcodes, labels)
        adaptation = self.adapter.adapt(target)
        self.history = [
            {"source_loss": source, **adaptation, "seconds": time.perf_counter() - start}
        ]
        return self

    def scores_from(self, logits: torch.Tensor, barcodes: torch.Tensor) -> torch.Tensor:
        adapted = bool(self.adapter.adapted)
        return self.adapter.predict(barcodes, adapted=adapted).to(logits.device)
