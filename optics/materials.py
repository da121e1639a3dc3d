"""Dispersive complex refractive indices n(lambda) + i k(lambda) of metasurface materials.

Time convention exp(-i omega t): absorption is k >= 0, so eps = (n + ik)^2 has Im(eps) >= 0.
Every material takes wavelengths in nanometres as a float, a numpy array or a torch tensor of
any shape. numpy/float in -> numpy complex128 out; torch in -> torch complex out (complex128 for
float64, complex64 for float32) on the same device, differentiable with respect to wavelength.

Registry (``get_material(name)``, case-insensitive; ranges in nm):

===========  ===========  =============================================================
name         range        source
===========  ===========  =============================================================
air          any          n = 1
cSi          250-1450     Green 2008, tabulated n, k (data/cSi_Green2008.csv)
cSi_meep     400-1000     Meep ``materials.cSi``: Deinega 2011 Lorentz fit to Green 1995
aSi          206.6-2066   Pierce & Spicer 1972 (Palik), tabulated (data/aSi_PierceSpicer1972.csv)
aSi_meep     210-830      Meep ``materials.aSi``: Horiba TN08 Lorentz model
SiO2         210-6700     Malitson 1965 Sellmeier (fused silica), k = 0
SiO2_meep    250-1770     Meep ``materials.SiO2``: Horiba TN08 Lorentz model
BK7          300-2500     SCHOTT N-BK7 Sellmeier (Zemax catalog 2017-01-20b), k = 0
Si3N4        310-5504     Luke et al. 2015 Sellmeier (340 nm film), k = 0
TiO2         300-1600     Sarkar et al. 2019 thin film, tabulated (data/TiO2_Sarkar2019.csv)
===========  ===========  =============================================================

Meep's ``fused_quartz``, ``BK7`` and ``Si3N4_NIR`` are the same Sellmeier formulas as SiO2, BK7
and Si3N4 here (a Lorentzian with gamma = 0 is a Sellmeier term), so no ``*_meep`` twin is needed.
Meep's ``Si3N4`` (Horiba) is left out: as written in Meep it resonates at 389 nm, n = 2.59 + 0.58i
at 633 nm, far from stoichiometric Si3N4.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import torch

_DATA_DIR = Path(__file__).parent / "data"


def _as_tensor(wavelength_nm) -> tuple[torch.Tensor, bool]:
    """Return (float tensor of wavelengths in nm, whether the caller wants numpy back)."""
    if isinstance(wavelength_nm, torch.Tensor):
        if wavelength_nm.dtype in (torch.float32, torch.float64):
            return wavelength_nm, False
        dtype = torch.float32 if wavelength_nm.is_floating_point() else torch.float64
        return wavelength_nm.to(dtype), False
    return torch.from_numpy(np.array(wavelength_nm, dtype=np.float64)), True


def _to_output(value: torch.Tensor, to_numpy: bool):
    if not to_numpy:
        return value
    array = value.numpy().astype(np.complex128, copy=False)
    return array[()] if array.ndim == 0 else array


class Material:
    """A medium with a wavelength-dependent complex refractive index.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"cSi"``.
    wavelength_range_nm : tuple of float
        (min, max) wavelength in nm where the source is valid; others raise ValueError.
    source : str
        Citation of the data or model (paper, year, equation).
    """

    def __init__(self, name: str, wavelength_range_nm: tuple[float, float], source: str):
        self.name = name
        self.wavelength_range_nm = (float(wavelength_range_nm[0]), float(wavelength_range_nm[1]))
        self.source = source

    def __repr__(self) -> str:
        low, high = self.wavelength_range_nm
        return f"{type(self).__name__}(name={self.name!r}, wavelength_range_nm=({low:g}, {high:g}))"

    def refractive_index(self, wavelength_nm):
        """Complex refractive index n + ik (k >= 0) at the given wavelengths.

        Parameters
        ----------
        wavelength_nm : float, numpy.ndarray or torch.Tensor, any shape
            Vacuum wavelengths in nm, inside ``wavelength_range_nm``.

        Returns
        -------
        numpy complex128 (same shape; a scalar for scalar input), or a torch complex tensor
        (same shape, device; complex128 for float64 input, complex64 for float32).

        Raises
        ------
        ValueError
            If any wavelength is NaN, infinite, non-positive or outside the valid range.
        """
        wavelength, to_numpy = _as_tensor(wavelength_nm)
        self._check_wavelengths(wavelength)
        return _to_output(self._index(wavelength), to_numpy)

    def permittivity(self, wavelength_nm):
        """Relative permittivity eps = (n + ik)^2, Im(eps) >= 0; same inputs and outputs as
        :meth:`refractive_index`."""
        wavelength, to_numpy = _as_tensor(wavelength_nm)
        self._check_wavelengths(wavelength)
        return _to_output(self._permittivity(wavelength), to_numpy)

    def plot(self, ax=None, wavelength_nm=None):
        """Plot n and k against wavelength (nm) on ``ax`` (a new figure if None); return ``ax``.

        ``wavelength_nm`` defaults to 500 points over the valid range (400-1000 nm if unbounded).
        """
        import matplotlib.pyplot as plt

        if wavelength_nm is None:
            low, high = self.wavelength_range_nm
            if low <= 0 or math.isinf(high):
                low, high = 400.0, 1000.0
            wavelength_nm = np.linspace(low, high, 500)
        if isinstance(wavelength_nm, torch.Tensor):
            wavelength_nm = wavelength_nm.detach().cpu().numpy()
        wavelength_nm = np.asarray(wavelength_nm, dtype=np.float64)
        index = self.refractive_index(wavelength_nm)
        if ax is None:
            _, ax = plt.subplots()
        ax.plot(wavelength_nm, np.real(index), label="n")
        ax.plot(wavelength_nm, np.imag(index), "--", label="k")
        ax.set_xlabel("wavelength (nm)")
        ax.set_ylabel("n, k")
        ax.set_title(self.name)
        ax.legend()
        return ax

    def _check_wavelengths(self, wavelength: torch.Tensor) -> None:
        if wavelength.numel() == 0:
            return
        smallest, largest = torch.stack(torch.aminmax(wavelength.detach())).tolist()  # one sync
        low, high = self.wavelength_range_nm
        valid = f"material {self.name!r} is valid for wavelength_nm in [{low:g}, {high:g}] nm"
        if not (math.isfinite(smallest) and math.isfinite(largest)):
            raise ValueError(f"{valid}; got NaN or infinite wavelength_nm")
        if smallest <= 0:
            raise ValueError(f"{valid}; got non-positive wavelength_nm (min {smallest:g} nm)")
        if smallest < low or largest > high:
            raise ValueError(f"{valid}; got min {smallest:g} nm, max {largest:g} nm")

    def _index(self, wavelength: torch.Tensor) -> torch.Tensor:
        """n + ik for a validated float tensor of wavelengths in nm (subclasses implement)."""
        raise NotImplementedError

    def _permittivity(self, wavelength: torch.Tensor) -> torch.Tensor:
        return self._index(wavelength) ** 2


class ConstantMaterial(Material):
    """Non-dispersive medium with a fixed refractive index ``index`` = n + ik (k >= 0)."""

    def __init__(self, index: complex, name: str | None = None, source: str | None = None):
        index = complex(index)
        if not (math.isfinite(index.real) and math.isfinite(index.imag)) or index.imag < 0:
            raise ValueError(f"index must be finite with Im(index) = k >= 0; got {index}")
        label = f"{index.real:g}" if index.imag == 0 else f"{index:g}"
        super().__init__(
            name or f"constant n={label}", (0.0, math.inf), source or "constant refractive index"
        )
        self.index = index

    def _index(self, wavelength: torch.Tensor) -> torch.Tensor:
        zero = wavelength * 0  # keeps the output on the autograd graph (zero gradient)
        return torch.complex(zero + self.index.real, zero + self.index.imag)


class SellmeierMaterial(Material):
    """Transparent medium (k = 0) given by a Sellmeier equation, lambda in um, c_i in um^2::

        n^2 = 1 + a + sum_i b_i lambda^2 / (lambda^2 - c_i)

    Parameters are ``b`` and ``c_um2`` (equal-length sequences) and the constant ``a``.
    """

    def __init__(self, name, wavelength_range_nm, source, b, c_um2, a=0.0):
        super().__init__(name, wavelength_range_nm, source)
        self.a, self.b, self.c_um2 = float(a), tuple(map(float, b)), tuple(map(float, c_um2))
        if len(self.b) != len(self.c_um2):
            raise ValueError(
                f"b and c_um2 need equal lengths; got {len(self.b)}, {len(self.c_um2)}"
            )

    def _real_permittivity(self, wavelength: torch.Tensor) -> torch.Tensor:
        lambda_um_squared = (wavelength / 1000.0) ** 2
        eps = 1.0 + self.a + torch.zeros_like(wavelength)
        for b_i, c_i in zip(self.b, self.c_um2, strict=True):
            eps = eps + b_i * lambda_um_squared / (lambda_um_squared - c_i)
        return eps

    def _permittivity(self, wavelength):
        eps = self._real_permittivity(wavelength)
        return torch.complex(eps, torch.zeros_like(eps))

    def _index(self, wavelength):
        n = torch.sqrt(self._real_permittivity(wavelength))
        return torch.complex(n, torch.zeros_like(n))


class LorentzMaterial(Material):
    """Sum of Lorentz oscillators in Meep's convention (Meep docs, "Materials", eq. for eps)::

        eps(f) = eps_inf + sum_n sigma_n f_n^2 / (f_n^2 - f^2 - i f gamma_n),   f = 1 / lambda

    with f, f_n and gamma_n in 1/um (Meep units with a = 1 um; Meep's ``frequency`` and
    ``gamma`` arguments are exactly f_n and gamma_n). ``oscillators`` holds
    (frequency_per_um, gamma_per_um, sigma) triples. n + ik is the principal sqrt(eps).
    """

    def __init__(self, name, wavelength_range_nm, source, epsilon_inf, oscillators):
        super().__init__(name, wavelength_range_nm, source)
        self.epsilon_inf = float(epsilon_inf)
        self.oscillators = tuple(tuple(map(float, term)) for term in oscillators)

    def _permittivity(self, wavelength):
        frequency = 1000.0 / wavelength  # 1/um
        zero = torch.zeros_like(frequency)
        eps = torch.complex(zero + self.epsilon_inf, zero)
        for f_n, gamma_n, sigma_n in self.oscillators:
            denominator = torch.complex(f_n**2 - frequency**2, -frequency * gamma_n)
            eps = eps + (sigma_n * f_n**2) / denominator
        return eps

    def _index(self, wavelength):
        return torch.sqrt(self._permittivity(wavelength))


class TabulatedMaterial(Material):
    """Tabulated n and k, interpolated by natural cubic splines (C2), n and k separately.

    If every tabulated k > 0, log(k) is splined (k = exp(spline) stays positive over decades of
    k, as for silicon below the band gap). Otherwise k is splined directly and clipped at 0, and
    from ``transparent_from_nm`` (the first knot of a trailing run of k = 0) on, k = 0 exactly, so
    the spline cannot ring into the transparent band; k is only C0 at that absorption edge.
    Coefficients are computed once (scipy) and evaluated in torch per interval (batched,
    differentiable); torch copies are cached per (dtype, device).

    Parameters
    ----------
    wavelength_nm, n, k : sequence of float, shape (N,), N >= 3, wavelength strictly increasing
    wavelength_range_nm : (float, float), optional
        Valid range; defaults to the table's first and last wavelength.
    """

    def __init__(self, name, wavelength_nm, n, k, source, wavelength_range_nm=None):
        knots, n_values, k_values = (np.array(v, dtype=np.float64) for v in (wavelength_nm, n, k))
        if not (
            knots.ndim == 1 and knots.size >= 3 and n_values.shape == k_values.shape == knots.shape
        ):
            raise ValueError(f"{name}: need wavelength_nm, n, k of equal shape (N,), N >= 3")
        if np.any(np.diff(knots) <= 0) or not np.all(np.isfinite([knots, n_values, k_values])):
            raise ValueError(f"{name}: wavelengths must be finite and strictly increasing")
        if np.any(k_values < 0):
            raise ValueError(f"{name}: k must be >= 0 (exp(-i omega t) convention)")
        low, high = wavelength_range_nm or (knots[0], knots[-1])
        if low < knots[0] or high > knots[-1]:
            raise ValueError(f"{name}: range [{low:g}, {high:g}] nm exceeds the table's")
        super().__init__(name, (low, high), source)
        self.wavelength_nm, self.n, self.k = knots, n_values, k_values
        self.log_k = bool(np.all(k_values > 0))
        absorbing = np.flatnonzero(k_values > 0)
        last = absorbing[-1] if absorbing.size else -1
        self.transparent_from_nm = math.inf if last == knots.size - 1 else float(knots[last + 1])
        from scipy.interpolate import CubicSpline  # deferred: costs ~1 s to import

        values = np.stack([n_values, np.log(k_values) if self.log_k else k_values], axis=-1)
        # c[m, i, :] multiplies (lambda - knot_i)^(3 - m) on interval i (scipy PPoly layout).
        self._coefficients = CubicSpline(knots, values, axis=0, bc_type="natural").c
        self._torch_cache: dict[tuple[torch.dtype, torch.device], tuple] = {}

    @classmethod
    def from_csv(cls, name: str, filename: str, source: str, wavelength_range_nm=None):
        """Load ``optics/data/<filename>``: '#' comment lines, a ``wavelength_nm,n,k`` header,
        then rows of wavelength (nm), n, k."""
        lines = (_DATA_DIR / filename).read_text().splitlines()
        rows = [line for line in lines if line.strip() and not line.startswith("#")]
        if rows[0].replace(" ", "") != "wavelength_nm,n,k":
            raise ValueError(f"{filename}: expected header 'wavelength_nm,n,k', got {rows[0]!r}")
        table = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
        return cls(name, table[:, 0], table[:, 1], table[:, 2], source, wavelength_range_nm)

    def _spline(self, dtype, device):
        key = (dtype, device)
        if key not in self._torch_cache:
            self._torch_cache[key] = (
                torch.as_tensor(self.wavelength_nm, dtype=dtype, device=device),
                torch.as_tensor(self._coefficients, dtype=dtype, device=device),
            )
        return self._torch_cache[key]

    def _index(self, wavelength):
        knots, coefficients = self._spline(wavelength.dtype, wavelength.device)
        interval = torch.searchsorted(knots, wavelength.detach().contiguous(), right=True) - 1
        interval = interval.clamp(0, knots.numel() - 2)
        offset = (wavelength - knots[interval]).unsqueeze(-1)
        c = coefficients[:, interval]  # (4, *shape, 2)
        value = ((c[0] * offset + c[1]) * offset + c[2]) * offset + c[3]  # Horner form
        if self.log_k:
            k = value[..., 1].exp()
        else:
            k = value[..., 1].clamp_min(0.0)
            k = torch.where(wavelength.detach() < self.transparent_from_nm, k, torch.zeros_like(k))
        return torch.complex(value[..., 0], k)


_MEEP = "MIT Meep python/materials.py (NanoComp/meep 49be2b8), `{}`: Lorentz model, {}"
_HORIBA = "Horiba Scientific Technical Note 08 'Lorentz Dispersion Model'"
_SOURCES = {
    "cSi": "M. A. Green, Sol. Energ. Mater. Sol. Cells 92, 1305-1310 (2008), intrinsic Si at "
    "300 K, tabulated n, k at 10 nm steps (via refractiveindex.info Si/Green-2008)",
    "cSi_meep": _MEEP.format(
        "cSi",
        "A. Deinega et al., J. Opt. Soc. Am. A 28, 770-777 (2011), fit to M. A. Green "
        "and M. Keevers, Prog. Photovolt. 3, 189-192 (1995)",
    ),
    "aSi": "D. T. Pierce and W. E. Spicer, Phys. Rev. B 5, 3017-3029 (1972), 60 nm a-Si film, "
    "values from Palik, Handbook of Optical Constants of Solids (1985) (via refractiveindex.info)",
    "aSi_meep": _MEEP.format("aSi", _HORIBA),
    "SiO2": "I. H. Malitson, J. Opt. Soc. Am. 55, 1205-1209 (1965), fused silica at 20 C, "
    "3-term Sellmeier equation; k = 0",
    "SiO2_meep": _MEEP.format("SiO2", _HORIBA),
    "BK7": "SCHOTT N-BK7 Sellmeier equation, SCHOTT Zemax catalog 2017-01-20b; k = 0",
    "Si3N4": "K. Luke, Y. Okawachi, M. R. E. Lamont, A. L. Gaeta and M. Lipson, Opt. Lett. 40, "
    "4823-4826 (2015), Sellmeier equation for a 340 nm Si3N4 film on SiO2; k = 0",
    "TiO2": "S. Sarkar et al., ACS Appl. Mater. Interfaces 11, 13752-13760 (2019), 200 nm TiO2 "
    "film on glass, subsampled (via refractiveindex.info TiO2/Sarkar)",
}

# Numbers below are copied from the cited sources; Meep values as written in materials.py.
# fmt: off
_FACTORIES: dict[str, Callable[[], Material]] = {
    "air": lambda: ConstantMaterial(1.0, name="air", source="air approximated as n = 1"),
    "cSi": lambda: TabulatedMaterial.from_csv("cSi", "cSi_Green2008.csv", _SOURCES["cSi"]),
    # Meep: cSi_range = FreqRange(min=1, max=1/0.4) in 1/um, i.e. 400-1000 nm.
    "cSi_meep": lambda: LorentzMaterial(
        "cSi_meep", (400.0, 1000.0), _SOURCES["cSi_meep"], 1.0,
        [(3.64, 0.0, 8.0), (2.76, 2 * 0.063, 2.85), (1.73, 2 * 2.5, -0.107)]),
    "aSi": lambda: TabulatedMaterial.from_csv("aSi", "aSi_PierceSpicer1972.csv", _SOURCES["aSi"]),
    "aSi_meep": lambda: LorentzMaterial(
        "aSi_meep", (210.0, 830.0), _SOURCES["aSi_meep"], 3.109,
        [(1 / 0.315481407124682, 1 / 0.645751005208333, 14.571)]),
    # Malitson: n^2 - 1 = sum B_i l^2 / (l^2 - L_i^2), l in um, fitted over 0.21-3.71 um;
    # valid to 6.7 um per C. Z. Tan, J. Non-Cryst. Solids 223, 158-163 (1998).
    "SiO2": lambda: SellmeierMaterial(
        "SiO2", (210.0, 6700.0), _SOURCES["SiO2"], b=(0.6961663, 0.4079426, 0.8974794),
        c_um2=(0.0684043**2, 0.1162414**2, 9.896161**2)),
    "SiO2_meep": lambda: LorentzMaterial(
        "SiO2_meep", (250.0, 1770.0), _SOURCES["SiO2_meep"], 1.0,
        [(1 / 0.103320160833333, 1 / 12.3984193, 1.12)]),
    # SCHOTT N-BK7 B1..B3 and C1..C3 (um^2); data sheet nd = 1.5168. SCHOTT's tabulated
    # k (< 1e-5 over 300-2500 nm) is neglected.
    "BK7": lambda: SellmeierMaterial(
        "BK7", (300.0, 2500.0), _SOURCES["BK7"], b=(1.03961212, 0.231792344, 1.01046945),
        c_um2=(0.00600069867, 0.0200179144, 103.560653)),
    # Luke: n^2 = 1 + 3.0249 l^2/(l^2 - 0.1353406^2) + 40314 l^2/(l^2 - 1239.842^2), l in um,
    # fitted over 0.31-5.504 um.
    "Si3N4": lambda: SellmeierMaterial(
        "Si3N4", (310.0, 5504.0), _SOURCES["Si3N4"], b=(3.0249, 40314.0),
        c_um2=(0.1353406**2, 1239.842**2)),
    "TiO2": lambda: TabulatedMaterial.from_csv("TiO2", "TiO2_Sarkar2019.csv", _SOURCES["TiO2"]),
}
# fmt: on
_NAMES_BY_KEY = {name.lower(): name for name in _FACTORIES}


@cache
def _registered(name: str) -> Material:
    return _FACTORIES[name]()


def available_materials() -> list[str]:
    """Names accepted by :func:`get_material`, in registry order."""
    return list(_FACTORIES)


def get_material(name_or_material) -> Material:
    """Resolve a material.

    Parameters
    ----------
    name_or_material : Material, str or number
        A Material (returned as is), a registry name (case-insensitive, see
        :func:`available_materials`) or a real/complex refractive index (-> ConstantMaterial).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    """
    if isinstance(name_or_material, Material):
        return name_or_material
    if isinstance(name_or_material, str):
        name = _NAMES_BY_KEY.get(name_or_material.lower())
        if name is None:
            valid = ", ".join(available_materials())
            raise ValueError(f"unknown material {name_or_material!r}; valid names: {valid}")
        return _registered(name)
    if isinstance(name_or_material, numbers.Number) and not isinstance(name_or_material, bool):
        return ConstantMaterial(complex(name_or_material))
    raise TypeError(
        "name_or_material must be a Material, a registry name or a refractive index; "
        f"got {type(name_or_material).__name__}"
    )
