"""Watermarking: a learned pattern on the barcodes reprograms a frozen segmenter for OOD.

Q. Wang, F. Liu, Y. Zhang, J. Zhang, C. Gong, T. Liu, B. Han, "Watermarking for
Out-of-distribution Detection", NeurIPS 2022 (code: github.com/qizhouwang/watermarking).

A well-trained model can be repurposed by a transformation of its inputs alone (the
reprogramming property). Watermarking learns one static pattern ``w`` superimposed on every
input, ``x -> x + w``, with the model's weights **frozen**, so that a fixed score (MSP or the
free energy) separates ID from OOD better. Its learning objective (section 4, eq. (4)-(5))::

    min_w  E_{(x, y) ~ D_in} l_ID(f(x + w), y)  +  beta E_{eps ~ N(0, sigma^2 I)} l_OOD(f(eps + w))

with ``l_ID`` the cross-entropy (the model keeps confident, correct predictions on
watermarked ID data) and ``l_OOD`` the cross-entropy to the uniform distribution on
watermarked Gaussian noise (the model returns low confidence when it perceives no ID
pattern). No real OOD data are needed; when the twin's auxiliary outlier pixels are at hand
(``use_auxiliary``), their uniform cross-entropy joins ``l_OOD``. The paper optimises ``w``
with sharpness-aware steps; here Adam with the pattern kept in a box ``|w| <= max_amplitude``.

For barcodes the pattern is a tile ``(F, t, t)`` (``t = 1``: one offset per metasurface
filter, the same at every metapixel) repeated over the map. The segmenter is never
updated: a deployed bundle gains the head without retraining (its segmenter weights are not
written into the head). Scores: MSP of the watermarked input (``score = "energy"`` for the
free energy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.openset.auxiliary import UNKNOWN, OpenSetData
from hyplex.models.openset.outlier_exposure import (
    check_positive_options,
    pixels,
    uniform_cross_entropy,
)
from hyplex.models.openset.scores import OpenSetDetector, energy_score, msp_score

__all__ = ["BarcodeWatermark", "WatermarkingDetector"]


class BarcodeWatermark(nn.Module):
    """A pattern ``(F, t, t)`` tiled over barcode maps and added to them."""

    def __init__(self, n_channels: int, tile: int = 1):
        super().__init__()
        self.pattern = nn.Parameter(torch.zeros(int(n_channels), int(tile), int(tile)))

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """``(B, F, H, W) -> (B, F, H, W)`` watermarked barcodes."""
        _, _, height, width = barcodes.shape
        tile = self.pattern.shape[-1]
        reps = (-(-height // tile), -(-width // tile))
        tiled = self.pattern.repeat(1, *reps)[:, :height, :width]
        return barcodes + tiled.to(barcodes)


class WatermarkingDetector(OpenSetDetector):
    """Watermarking on a frozen segmenter.

    Options (defaults): ``steps`` 200, ``batch_size`` 4, ``lr`` 1e-2, ``beta`` 1 (weight of
    ``l_OOD``), ``noise_std`` 0.25 (sigma of the Gaussian surrogate around the mean barcode,
    in barcode units), ``max_amplitude`` 0.2 (box on ``|w|``), ``tile`` 1, ``use_auxiliary`` True,
    ``score`` "MSP" (or "energy").
    """

    method = "Watermarking"
    trains_segmenter = False
    defaults = {
        "steps": 200,
        "batch_size": 4,
        "lr": 1e-2,
        "beta": 1.0,
        "noise_std": 0.25,
        "max_amplitude": 0.2,
        "tile": 1,
        "use_auxiliary": True,
        "score": "MSP",
    }

    def __init__(self, model: nn.Module, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown Watermarking options {unknown}; expected {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **options}
        if merged["score"] not in ("MSP", "energy"):
            raise ValueError(f"option score must be 'MSP' or 'energy'; got {merged['score']!r}")
        numeric = {k: v for k, v in merged.items() if k not in ("score", "use_auxiliary")}
        check_positive_options(numeric, integers=("steps", "batch_size", "tile"))
        super().__init__(model, **merged)
        channels = getattr(model, "in_channels", None)
        if channels is None:
            raise ValueError("Watermarking needs a segmenter with an in_channels attribute")
        self.watermark = BarcodeWatermark(int(channels), int(merged["tile"]))
        parameter = next(model.parameters(), None)
        if parameter is not None:
            self.watermark.to(parameter.device)

    def head_modules(self) -> dict[str, nn.Module]:
        return {"watermark": self.watermark}

    def _score(self, logits):
        return msp_score(logits) if self.options["score"] == "MSP" else energy_score(logits)

    def scores_from(self, logits, barcodes):
        """The score of the *watermarked* barcodes (a second pass); ``logits`` of the clean
        barcodes give the labels, so the head costs no ID accuracy."""
        return self._score(self.model(self.watermark(barcodes)))

    def fit(
        self, data: OpenSetData, *, seed: int = 0, progress: bool = False, device=None, **kwargs
    ):
        """Learn the watermark with the segmenter frozen (eval mode, no gradients to it)."""
        from tqdm.auto import tqdm

        o = self.options
        if data.n_channels != self.watermark.pattern.shape[0]:
            raise ValueError(
                f"the data's barcodes have {data.n_channels} channels but the segmenter reads "
                f"{self.watermark.pattern.shape[0]}: mismatched channel counts"
            )
        device = device or next(self.model.parameters()).device
        self.watermark.to(device)
        frozen = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        generator = torch.Generator().manual_seed(int(seed))
        optimizer = torch.optim.Adam(self.watermark.parameters(), lr=float(o["lr"]))
        self.history = []
        try:
            for step in tqdm(range(int(o["steps"])), desc="watermark", disable=not progress):
                pick = torch.randint(len(data.train), (int(o["batch_size"]),), generator=generator)
                x, y = data.train.batch(pick, device)
                logits = self.model(self.watermark(x))
                l_id = F.cross_entropy(logits, y, ignore_index=UNKNOWN)
                noise = torch.randn(x.shape, generator=generator).to(x) * float(o["noise_std"])
                noise = noise + x.mean(dim=(0, 2, 3), keepdim=True)  # around the mean barcode
                l_ood = uniform_cross_entropy(self.model(self.watermark(noise))).mean()
                if o["use_auxiliary"] and len(data.auxiliary):
                    pick = torch.randint(
                        len(data.auxiliary), (int(o["batch_size"]),), generator=generator
                    )
                    xo, yo = data.auxiliary.batch(pick, device)
                    mask = yo == UNKNOWN
                    if mask.any():
                        outlier_logits = pixels(self.model(self.watermark(xo)), mask)
                        l_ood = 0.5 * (l_ood + uniform_cross_entropy(outlier_logits).mean())
                loss = l_id + float(o["beta"]) * l_ood
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    bound = float(o["max_amplitude"])
                    self.watermark.pattern.clamp_(-bound, bound)
                self.history.append(
                    {"step": step, "loss": loss.item(), "id": l_id.item(), "ood": l_ood.item()}
                )
        finally:
            for p, flag in zip(self.model.parameters(), frozen, strict=True):
                p.requires_grad_(flag)
        return self
