"""The metasurface encoder: filter transmission spectra plus their mosaic layout.

Responses are power transmissions, unitless fractions per wavelength in [0, 1]. Spectra in
another unit or scale (detector counts, percent, a per-nm density, fractions divided by a bin
width) are refused by :func:`check_transmission_scale` with a message naming the expected unit,
so a measured curve cannot silently enter the twin or a decoder at the wrong scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hyplex.simulation.grids import check_same_grid, check_wavelengths
from hyplex.simulation.layout import MosaicLayout

TRANSMISSION_UNIT = (
    "power transmission, a unitless fraction in [0, 1] per wavelength (1 = all light passes)"
)
WRONG_UNIT_ABOVE = 1.5  # no transmission reaches this; counts, percent or per-nm values do
TINY_BELOW = 1e-2  # every filter blocking > 99 % of the light everywhere: a scaled quantity


def transmission_scale_error(
    low: float, high: float, finite: bool, what: str = "responses", maximum: float = 1.5
) -> str | None:
    """Why responses spanning ``low..high`` are not transmissions, or None when they are.

    ``maximum`` is the largest value accepted: :data:`WRONG_UNIT_ABOVE` for measured or
    fabricated curves that noise may lift a little above 1, ``1 + rounding`` where an exact
    transmission is needed (the training capture). Values above :data:`WRONG_UNIT_ABOVE`,
    below ``-1e-6`` or all below :data:`TINY_BELOW` (0.01) are named as another unit or scale.
    """
    unit = f"expected {TRANSMISSION_UNIT}"
    if not finite:
        return f"{what} must be finite and >= 0 ({unit}); they hold NaN or infinite values"
    if low < -1e-6:
        return (
            f"{what} must be finite and >= 0 ({unit}); they go down to {low:.4g}. A signed "
            "quantity (a principal component, a dark-subtracted signal) must be mapped into "
            "[0, 1] first"
        )
    if high > WRONG_UNIT_ABOVE:
        return (
            f"{what} reach {high:.4g}, which no filter transmits: {unit}. This looks like "
            "another unit or scale (detector counts, percent, a per-nm density): divide by the "
            "open-beam reference measured the same way (or by 100 for percent)"
        )
    if high > maximum:
        return (
            f"{what} reach {high:.4g}; {unit}. A filter cannot pass more than all the light: "
            "clip measurement noise into [0, 1]"
        )
    if high < TINY_BELOW:
        return (
            f"{what} are all below {TINY_BELOW:g} (largest {high:.3g}); {unit}. Filters that "
            "all block more than 99 % of the light are another unit or scale (a per-nm or "
            "per-area quantity, fractions divided by a bin width or an exposure)"
        )
    return None


def check_transmission_scale(responses, what: str = "responses", maximum: float = 1.5):
    """``responses`` as float64 after :func:`transmission_scale_error` found nothing wrong;
    else ``ValueError`` with its message (the expected unit named)."""
    values = np.asarray(responses, dtype=np.float64)
    finite = bool(np.all(np.isfinite(values)))
    low = float(values.min()) if finite and values.size else 0.0
    high = float(values.max()) if finite and values.size else 1.0
    message = transmission_scale_error(low, high, finite, what, maximum)
    if message is not None:
        raise ValueError(message)
    return values


def substrate_transmission(wavelengths_nm, material: str = "SiO2") -> np.ndarray:
    """Normal-incidence transmission of an unpatterned substrate's front face, 1 - R, with
    R = ((n - 1) / (n + 1))^2 from ``hyplex.optics`` (fused silica: ~0.965)."""
    from hyplex.optics.materials import get_material

    n = get_material(material).refractive_index(check_wavelengths(wavelengths_nm))
    return 1.0 - np.abs((n - 1.0) / (n + 1.0)) ** 2


@dataclass
class Encoder:
    """Filter responses (n_filters, L) and the mosaic layout that places them on the sensor.

    Attributes
    ----------
    wavelengths_nm : numpy.ndarray, shape (L,)
    responses : numpy.ndarray, shape (n_filters, L)
        Power transmission T_f(lambda) of each sub-filter (unitless fractions, finite, in
        [0, 1]; up to 1.5 is tolerated for measured curves, more is refused as another unit:
        :func:`check_transmission_scale`); row f is filter index f of the layout
        (``sub_row * grid_cols + sub_col``).
    layout : MosaicLayout
    unpatterned : numpy.ndarray, shape (L,), optional
        Transmission where there is no filter (gaps between blocks, outside the mosaic);
        default: bare fused-silica substrate (:func:`substrate_transmission`).
    name : str
        What the responses are (a design name, "measured", ...).
    """

    wavelengths_nm: np.ndarray
    responses: np.ndarray
    layout: MosaicLayout = field(default_factory=MosaicLayout)
    unpatterned: np.ndarray | None = None
    name: str = "encoder"

    def __post_init__(self):
        self.wavelengths_nm = check_wavelengths(self.wavelengths_nm)
        self.responses = np.array(self.responses, dtype=np.float64)
        bands = self.wavelengths_nm.size
        if self.responses.ndim != 2 or self.responses.shape[1] != bands:
            raise ValueError(
                f"responses must have shape (n_filters, L={bands}) on wavelengths_nm, got "
                f"{self.responses.shape}"
            )
        if self.responses.shape[0] != self.layout.n_filters:
            raise ValueError(
                f"{self.responses.shape[0]} responses for a layout of {self.layout.n_filters} "
                f"filters ({self.layout.grid[0]} x {self.layout.grid[1]})"
            )
        check_transmission_scale(self.responses, "responses", WRONG_UNIT_ABOVE)
        if self.unpatterned is None:
            self.unpatterned = substrate_transmission(self.wavelengths_nm)
        self.unpatterned = np.array(self.unpatterned, dtype=np.float64)
        if self.unpatterned.shape != (bands,):
            raise ValueError(
                f"unpatterned must have shape ({bands},), got {self.unpatterned.shape}"
            )

    @property
    def n_filters(self) -> int:
        return self.responses.shape[0]

    def with_layout(self, layout: MosaicLayout) -> Encoder:
        """The same responses placed with another layout."""
        return Encoder(self.wavelengths_nm, self.responses, layout, self.unpatterned, self.name)

    def transmissions(self) -> np.ndarray:
        """Responses with the unpatterned row appended: (n_filters + 1, L), indexed by code."""
        return np.vstack([self.responses, self.unpatterned])

    def encode(self, spectra, wavelengths_nm, illuminant=None) -> np.ndarray:
        """Noise-free barcodes of spectra: ``sum_i q_i s_i T_f,i`` (..., n_filters).

        ``spectra`` (..., L) on ``wavelengths_nm`` (must equal the encoder's grid); optional
        ``illuminant`` (L,) multiplies them first. Uses the bin widths q (nm) of
        ``grids.quadrature_weights``, so a flat unit spectrum through a unit filter gives the
        span of the grid's bins in nm (340 nm on the 34-band 400-730 nm grid).
        """
        from hyplex.simulation.grids import quadrature_weights

        check_same_grid(wavelengths_nm, self.wavelengths_nm, "spectra and encoder responses")
        values = np.asarray(spectra, dtype=np.float64)
        if illuminant is not None:
            values = values * np.asarray(illuminant, dtype=np.float64)
        return values @ (self.responses * quadrature_weights(self.wavelengths_nm)).T

    def plot(self, ax=None):
        """Plot the responses against wavelength (nm); return ``ax``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        for index, response in enumerate(self.responses):
            ax.plot(self.wavelengths_nm, response, label=f"filter {index}")
        ax.plot(self.wavelengths_nm, self.unpatterned, "k:", label="unpatterned")
        ax.set(xlabel="wavelength (nm)", ylabel="transmission", title=self.name)
        ax.legend(fontsize="small", ncol=2)
        return ax


THIN_FILM_DESIGN = (
    ("aSi", 20.0),
    ("aSi", 45.0),
    ("aSi", 80.0),
    ("aSi", 130.0),
    ("aSi", 200.0),
    ("TiO2", 250.0),
    ("TiO2", 400.0),
    ("TiO2", 600.0),
    ("TiO2", 900.0),
)


def thin_film_encoder(
    wavelengths_nm,
    layout: MosaicLayout | None = None,
    design=THIN_FILM_DESIGN,
    substrate: str = "SiO2",
) -> Encoder:
    """A physically realisable stand-in encoder: one thin film per filter.

    Filter f is an unpatterned film ``design[f] = (material, thickness_nm)`` on ``substrate``,
    lit from air at normal incidence; T(lambda) from the transfer-matrix solver of
    ``hyplex.optics.thinfilm`` (unpolarised). Absorbing a-Si films (below ~700 nm) and
    interference in TiO2 films give nine distinct broadband responses over 400-1000 nm, as
    free-form metasurfaces do; it is not a trained Hyplex design.
    """
    import torch

    from hyplex.optics.thinfilm import stack_response

    grid = check_wavelengths(wavelengths_nm)
    layout = MosaicLayout() if layout is None else layout
    design = [(str(material), float(thickness)) for material, thickness in design]
    if len(design) != layout.n_filters:
        raise ValueError(
            f"need {layout.n_filters} (material, thickness_nm) pairs, got {len(design)}"
        )
    responses = np.empty((len(design), grid.size))
    for index, (material, thickness) in enumerate(design):
        result = stack_response(
            [1.0, material, substrate],
            torch.tensor([thickness], dtype=torch.float64),
            torch.from_numpy(grid),
            polarization="unpolarized",
        )
        responses[index] = result.T.detach().numpy()
    name = "thin films on " + substrate + ": " + ", ".join(f"{m} {t:g} nm" for m, t in design)
    return Encoder(grid, responses, layout, name=name)
