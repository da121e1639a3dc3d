"""The camera seen by a trainable encoder: scene -> filters -> sensor -> normalised barcodes.

Training a metasurface encoder end to end needs the measurement to be differentiable in the
filter responses *and* to carry the sensor's noise, or the optimiser learns filters that only
work noise-free (Hyplex, Makarenko et al., CVPR 2022, sec. 3). One barcode pixel is one
metapixel, so every scene pixel is seen by all ``F`` filters (the mosaic geometry itself is the
twin's business, :class:`hyplex.simulation.camera.CameraTwin`)::

    cube R (B, L, H, W)            apparent reflectance (reflectance x shading, unitless)
      x  E(lambda) / pi            radiance of a Lambertian scene under the illuminant
      x  T_f(lambda) QE q lambda/(hc) A tau pi/(4 N^2) t_exp         photoelectron weights
    = mu_e (B, F, H, W)            expected electrons (radiometry.photoelectron_weights)
      --EMVA 1288 noise--> DN      TorchCamera.capture: shot noise as a reparameterised
                                   Gaussian of the same mean and variance, read noise, dark
                                   current, 1/12 DN^2 quantisation (EMVA 1288 rel. 4.0 eq. 12)
      --dark subtraction, / K-->   electrons estimate
      / mu_e,white,f               barcode b_f (B, F, H, W)

Barcode normalisation (a flat-field calibration with a white reference tile): ``b_f`` is the
electron estimate divided by the expected electrons ``mu_e,white,f`` that a perfect white
reflector (R = 1) would give through filter ``f`` at the same exposure. Noise-free, ``b_f =
sum_l R_l w_{f,l} / sum_l w_{f,l}`` is a weighted mean reflectance in [0, 1], so decoders see
O(1) values for any encoder (9 metasurfaces, RGB or 34 narrow bands). The scale of a filter
then matters only through its SNR, as in a calibrated camera. The white reference is clamped
below at 1 electron so that an opaque filter gives large but finite (noisy) barcodes.

Exposure: one exposure for the whole mosaic, by default the one at which a white reflector
seen through an ideal unit-transmission filter collects ``fill`` x full well (so no filter
saturates on reflectances <= 1). Fixed-pattern noise (PRNU, DSNU) is left out: it is removed
by the dark/flat calibration before barcodes are formed (``hyplex.calibration``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
from torch import nn

from hyplex.simulation.camera import CameraTwin
from hyplex.simulation.differentiable import TorchCamera
from hyplex.simulation.encoder import Encoder, transmission_scale_error
from hyplex.simulation.grids import check_wavelengths
from hyplex.simulation.illuminants import get_illuminant
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.radiometry import LensModel, photoelectron_weights
from hyplex.simulation.sensor import SensorModel

__all__ = ["CaptureSettings", "CameraCapture"]

_ROUNDING = 1e-6  # float32 mixtures of library transmissions may exceed 1 by this much


@dataclass(frozen=True)
class CaptureSettings:
    """How the training camera looks at the scene.

    Attributes
    ----------
    illuminant : name for :func:`hyplex.simulation.illuminants.get_illuminant` (``"D65"``).
    illuminance_lux : illuminance on the scene, lux (> 0).
    fill : fraction of the full well that a white reflector fills through a unit-transmission
        filter; sets the exposure when ``exposure_us`` is None. In (0, 1].
    exposure_us : explicit exposure time, microseconds (> 0), or None for ``fill``.
    f_number, lens_transmission : the lens (:class:`~hyplex.simulation.radiometry.LensModel`).
    sensor : EMVA 1288 parameters (:class:`~hyplex.simulation.sensor.SensorModel`); its shape,
        PRNU and DSNU are ignored (see the module docstring).
    quantization : ``"noise"`` (additive uniform, EMVA 1288) or ``"straight_through"``.
    """

    illuminant: str = "D65"
    illuminance_lux: float = 10000.0
    fill: float = 0.8
    exposure_us: float | None = None
    f_number: float = 2.8
    lens_transmission: float = 0.9
    sensor: SensorModel = field(default_factory=SensorModel)
    quantization: str = "noise"

    def __post_init__(self):
        if not 0 < float(self.fill) <= 1:
            raise ValueError(f"fill must lie in (0, 1] (fraction of full well), got {self.fill}")
        if self.exposure_us is not None and not (
            math.isfinite(self.exposure_us) and self.exposure_us > 0
        ):
            raise ValueError(
                f"exposure_us must be > 0 microseconds or None, got {self.exposure_us}"
            )
        if self.quantization not in ("noise", "straight_through"):
            raise ValueError(
                f"quantization must be 'noise' or 'straight_through', got {self.quantization!r}"
            )
        sensor = self.sensor
        if isinstance(sensor, dict):  # e.g. from JSON or TOML: sequences arrive as lists
            known = {f.name for f in fields(SensorModel)}
            unknown = sorted(set(sensor) - known)
            if unknown:
                raise ValueError(
                    f"unknown sensor settings {', '.join(unknown)}; expected some of "
                    f"{', '.join(sorted(known))}"
                )
            sensor = SensorModel(**_tuples(sensor))
        elif isinstance(sensor, SensorModel):
            lists = {f.name: getattr(sensor, f.name) for f in fields(SensorModel)}
            if any(isinstance(v, list) for v in lists.values()):
                sensor = replace(sensor, **_tuples(lists))  # hashable, equal to its round trip
        else:
            raise ValueError(f"sensor must be a SensorModel or a dict, got {type(sensor).__name__}")
        object.__setattr__(self, "sensor", sensor)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists); :meth:`from_dict` inverts it."""
        values = asdict(self)
        values["sensor"] = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in values["sensor"].items()
        }
        return values

    @classmethod
    def from_dict(cls, values: dict) -> CaptureSettings:
        """The settings of :meth:`to_dict`'s dict (or its JSON round trip): every list, in
        the sensor's fields too, turns back into a tuple, so ``from_dict(s.to_dict()) == s``.

        Raises
        ------
        ValueError
            Unknown keys, or values the dataclasses reject.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown capture settings {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(known))}"
            )
        return cls(**_tuples(values))


@torch.no_grad()
def _check_scale(responses: torch.Tensor) -> None:
    """Refuse responses that are not transmissions (three reductions, one device sync)."""
    finite = torch.isfinite(responses).all().to(responses.dtype)
    flag, low, high = torch.stack([finite, responses.min(), responses.max()]).tolist()
    message = transmission_scale_error(low, high, flag > 0, "responses", 1.0 + _ROUNDING)
    if message is not None:
        raise ValueError(message)


def _tuples(values: dict) -> dict:
    """``values`` with every list value (a JSON array) turned into a tuple."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


class CameraCapture(nn.Module):
    """Differentiable, noisy capture of apparent-reflectance cubes through ``F`` filters.

    Parameters
    ----------
    wavelengths_nm : ``(L,)`` training grid, nm.
    settings : :class:`CaptureSettings`.

    Attributes
    ----------
    exposure_us : the exposure in use, microseconds.
    white_weights : buffer ``(L,)``, electrons per second per band of a white reflector
        through a unit-transmission filter.
    """

    def __init__(self, wavelengths_nm, settings: CaptureSettings | None = None):
        super().__init__()
        grid = check_wavelengths(wavelengths_nm)
        self.settings = CaptureSettings() if settings is None else settings
        self.wavelengths_nm = grid
        sensor = replace(self.settings.sensor, shape=(1, 1), prnu_percent=0.0, dsnu_e=0.0)
        lens = LensModel(self.settings.f_number, self.settings.lens_transmission)
        irradiance = get_illuminant(
            self.settings.illuminant, grid, self.settings.illuminance_lux
        ).spectral_irradiance
        per_second = photoelectron_weights(
            np.ones((1, grid.size)),
            grid,
            sensor.quantum_efficiency(grid),
            sensor.pixel_area_m2,
            1e6,  # one second
            lens,
        )[0]
        white = irradiance / np.pi * per_second  # Lambertian white: L = E / pi
        if not white.sum() > 0:
            raise ValueError("the illuminant and sensor give no signal on this wavelength grid")
        self.register_buffer("white_weights", torch.as_tensor(white, dtype=torch.float32))
        if self.settings.exposure_us is None:
            exposure_s = self.settings.fill * sensor.full_well_e / float(white.sum())
            self.exposure_us = exposure_s * 1e6
        else:
            self.exposure_us = float(self.settings.exposure_us)
        # A one-pixel twin: TorchCamera supplies the EMVA 1288 noise model (capture()).
        layout = MosaicLayout(
            metapixels=(1, 1), grid=(1, 1), pitch_px=1.0, metapixels_per_block=(1, 1)
        )
        twin = CameraTwin(Encoder(grid, np.ones((1, grid.size)), layout), sensor, lens)
        # (its numba kernels keep torch's thread count: hyplex.simulation.kernels)
        self.camera = TorchCamera(twin)
        self.sensor = sensor

    def expected_electrons(self, cube: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Mean photoelectrons ``(B, F, H, W)`` of a cube ``(B, L, H, W)`` through ``(F, L)``."""
        weights = responses * self.white_weights.to(responses) * (self.exposure_us * 1e-6)
        return torch.einsum("blhw,fl->bfhw", cube, weights)

    def white_electrons(self, responses: torch.Tensor) -> torch.Tensor:
        """Expected electrons ``(F,)`` of a white reflector through each filter."""
        weights = self.white_weights.to(responses) * (self.exposure_us * 1e-6)
        return (responses * weights).sum(-1)

    def forward(
        self,
        cube: torch.Tensor,
        responses: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> torch.Tensor:
        """Normalised barcodes ``(B, F, H, W)`` (see the module docstring).

        Parameters
        ----------
        cube : ``(B, L, H, W)`` apparent reflectance (unitless, typically in [0, 1]).
        responses : ``(F, L)`` filter transmissions, unitless fractions in [0, 1]; gradients
            flow to them. Another unit or scale (negative, above 1, all below 0.01: counts,
            percent, per-nm values) is a ``ValueError`` naming the expected unit.
        generator : torch.Generator on the cube's device for the noise (None: global RNG).
        noise : False gives the expected (noise-free, unsaturated) barcodes.
        """
        bands = self.wavelengths_nm.size
        if cube.ndim != 4 or cube.shape[1] != bands:
            raise ValueError(
                f"cube must have shape (B, L={bands}, H, W) on the encoder's grid, "
                f"got {tuple(cube.shape)}"
            )
        if responses.ndim != 2 or responses.shape[1] != bands:
            raise ValueError(
                f"responses must have shape (F, L={bands}), got {tuple(responses.shape)}"
            )
        _check_scale(responses)
        electrons = self.expected_electrons(cube, responses)
        if noise:
            sensor = self.sensor
            value = self.camera.capture(
                electrons, self.exposure_us, generator, quantization=self.settings.quantization
            )
            dark = sensor.dark_current_e_per_s * self.exposure_us * 1e-6
            electrons = (value - sensor.black_level_dn) / sensor.system_gain_dn_per_e - dark
        white = self.white_electrons(responses).clamp_min(1.0)
        return electrons / white[None, :, None, None]
