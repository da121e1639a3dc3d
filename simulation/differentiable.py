"""The camera twin in torch: differentiable with respect to the filter responses.

Same forward model as ``camera.py`` (numba path), for training encoders:

    mu_e = sum_l L_l w_{f,l},  w = T_f QE q lambda / (h c) * A t tau pi / (4 N^2)
    n    = mu_e * PRNU + mu_I t + sqrt(mu_e * PRNU + mu_I t) * eps_1      (photo + dark charge)
    e    = min(n, full well) + sigma_read * eps_2 + DSNU
    y    = K e + black (+ quantisation)

Shot and read noise are Gaussian by reparameterisation (eps ~ N(0, 1) from a
``torch.Generator``): the Poisson law is replaced by the normal law of the same mean and
variance, so gradients flow through the noise to the responses. As in the numba path, only the
collected charge saturates at the full well; read noise and DSNU are added after the clip.
Quantisation is either additive uniform noise in [-1/2, 1/2) DN (``"noise"``, variance 1/12 as
in EMVA 1288) or rounding with a straight-through gradient (``"straight_through"``). The clips
at full well and at the ADC range pass zero gradient beyond saturation. Tensors follow the
project convention (B, L, H, W); everything runs on the device of ``radiance`` (default filter
responses included).
"""

from __future__ import annotations

import torch

from hyplex.simulation.camera import CameraTwin, scene_index
from hyplex.simulation.grids import quadrature_weights
from hyplex.simulation.radiometry import check_exposure, photons_per_joule

QUANTIZATION = ("noise", "straight_through", "none")


class TorchCamera:
    """Torch forward model of a :class:`~hyplex.simulation.camera.CameraTwin`.

    The layout maps, QE and fixed-pattern maps are taken from ``twin`` (so both paths see the
    same camera); the filter responses are an argument of :meth:`expected_electrons`, so a
    training loop can pass a tensor with ``requires_grad``.

    Parameters
    ----------
    twin : CameraTwin
    device, dtype : torch device and floating dtype of the constant tensors (default CPU,
        float32).
    """

    def __init__(self, twin: CameraTwin, device=None, dtype=torch.float32):
        self.twin = twin
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.dtype = dtype
        grid = twin.wavelengths_nm
        sensor = twin.sensor
        per_band = quadrature_weights(grid) * photons_per_joule(grid)
        per_band = per_band * sensor.quantum_efficiency(grid)
        per_band = per_band * sensor.pixel_area_m2 * twin.lens.irradiance_factor()
        self._per_band = self._tensor(per_band)  # electrons per radiance per second
        self._unpatterned = self._tensor(twin.encoder.unpatterned)
        codes, neighbours, mix = twin.maps
        self.codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        self.neighbours = torch.as_tensor(neighbours, dtype=torch.long, device=self.device)
        self.mix = self._tensor(mix)
        prnu, dsnu = twin.fixed_pattern
        self.prnu = self._tensor(prnu) if prnu.size else None
        self.dsnu = self._tensor(dsnu) if dsnu.size else None

    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(array, dtype=self.dtype, device=self.device)

    def expected_electrons(self, radiance, responses=None, exposure_us: float = 1000.0):
        """Mean photoelectrons (B, H, W) of radiance (B, L, Hs, Ws), W m^-2 sr^-1 nm^-1.

        ``responses`` (n_filters, L) tensor (default: the twin's); gradients flow to it and to
        ``radiance``. All F + 1 projections are computed per scene pixel, then gathered by the
        filter code of each sensor pixel (nearest-neighbour upsampling as in the numba path).
        """
        exposure_s = check_exposure(exposure_us)
        if responses is None:
            responses = torch.as_tensor(
                self.twin.encoder.responses, dtype=radiance.dtype, device=radiance.device
            )
        if radiance.ndim != 4 or radiance.shape[1] != self._per_band.numel():
            raise ValueError(
                f"radiance must have shape (B, L={self._per_band.numel()}, H, W), "
                f"got {tuple(radiance.shape)}"
            )
        if responses.shape != (self.twin.encoder.n_filters, self._per_band.numel()):
            raise ValueError(
                f"responses must have shape {(self.twin.encoder.n_filters, self._per_band.numel())}"
            )
        per_band = self._per_band.to(radiance.device, radiance.dtype) * exposure_s
        transmissions = torch.cat(
            [responses.to(radiance), self._unpatterned.to(radiance).unsqueeze(0)]
        )
        weights = transmissions * per_band  # (F + 1, L)
        signals = torch.einsum("blhw,fl->bfhw", radiance, weights)
        height, width = self.codes.shape
        rows = torch.as_tensor(scene_index(height, radiance.shape[2]), device=radiance.device)
        cols = torch.as_tensor(scene_index(width, radiance.shape[3]), device=radiance.device)
        signals = signals[:, :, rows.long()][:, :, :, cols.long()]  # (B, F + 1, H, W)
        codes = self.codes.to(radiance.device)
        index = codes.expand(radiance.shape[0], 1, height, width)
        out = torch.gather(signals, 1, index)[:, 0]
        if self.mix.numel():
            mix = self.mix.to(radiance)
            other = torch.gather(signals, 1, self.neighbours.to(radiance.device).expand_as(index))
            out = (1.0 - mix) * out + mix * other[:, 0]
        return out

    def capture(self, electrons, exposure_us: float, generator=None, quantization="noise"):
        """Digital values (B, H, W), float, of expected electrons (B, H, W): EMVA 1288 model
        with reparameterised Gaussian noise; ``generator`` a torch.Generator on that device."""
        if quantization not in QUANTIZATION:
            raise ValueError(f"quantization must be one of {QUANTIZATION}, got {quantization!r}")
        sensor = self.twin.sensor
        dark = sensor.dark_current_e_per_s * check_exposure(exposure_us)
        photo = electrons if self.prnu is None else electrons * self.prnu.to(electrons)
        photo = photo.clamp_min(0.0)
        mean = photo + dark

        def normal():
            return torch.randn(
                electrons.shape, generator=generator, device=electrons.device, dtype=electrons.dtype
            )

        # clamp before the square root: its derivative is infinite at 0 (a dark pixel without
        # dark current), which would make the gradients NaN
        charge = mean + mean.clamp_min(1e-12).sqrt() * normal()
        charge = torch.minimum(charge, torch.full_like(charge, sensor.full_well_e))
        if sensor.read_noise_e > 0:
            charge = charge + sensor.read_noise_e * normal()
        if self.dsnu is not None:
            charge = charge + self.dsnu.to(electrons)
        value = sensor.system_gain_dn_per_e * charge + sensor.black_level_dn
        if quantization == "noise":
            uniform = torch.rand(
                electrons.shape, generator=generator, device=electrons.device, dtype=electrons.dtype
            )
            value = value + (uniform - 0.5)
        elif quantization == "straight_through":
            value = value + (torch.floor(value + 0.5) - value).detach()
        return value.clamp(0.0, float(sensor.max_dn))

    def render(self, radiance, responses=None, exposure_us=1000.0, generator=None, **options):
        """Digital values (B, H, W) of radiance (B, L, Hs, Ws): electrons, then capture."""
        electrons = self.expected_electrons(radiance, responses, exposure_us)
        return self.capture(electrons, exposure_us, generator, **options)
