"""The metasurface encoder: filter transmission spectra plus their mosaic layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hyplex.simulation.grids import check_same_grid, check_wavelengths
from hyplex.simulation.layout import MosaicLayout


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
        Power transmission T_f(lambda) of each sub-filter (unitless, >= 0, finite); row f is
        filter index f of the layout (``sub_row * grid_cols + sub_col``).
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
        if not np.all(np.isfinite(self.responses)) or np.any(self.responses < 0):
            raise ValueError("responses must be finite and >= 0 (power transmission)")
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
