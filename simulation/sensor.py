"""Monochrome image sensor after the EMVA 1288 linear camera model (release 4.0, 2021).

EMVA 1288 Release 4.0 Linear, sec. 2 ("Mathematical model"), for a pixel receiving mu_p
photons in the exposure time::

    mu_e = eta mu_p                          photoelectrons (eta = QE, folded into the weights)
    mu_y = mu_y.dark + K mu_e                eq. 9: mean digital value, K = system gain (DN/e-)
    sigma_y^2 = K^2 sigma_d^2 + sigma_q^2 + K (mu_y - mu_y.dark)         eq. 12
    sigma_q^2 = 1/12 DN^2                    quantisation noise

with the dark signal mu_y.dark = black level + K mu_I t_exp (dark current mu_I) and the dark
noise sigma_d^2 = sigma_read^2 + mu_I t_exp (dark current is Poisson). Spatial
non-uniformities (sec. 2.5): DSNU, an offset map with standard deviation ``dsnu_e``
electrons, and PRNU, a gain map 1 + (prnu_percent / 100) N(0, 1) on the photo-signal, both
drawn from ``fixed_pattern_seed`` (the same camera every time; the two maps come from
independent streams). Saturation: the collected charge (photo-electrons and dark current) is
clipped at the full-well capacity; read noise and DSNU are added after that clip (they arise in
the readout chain, so a saturated pixel still shows the temporal dark noise), and the digital
value is clipped at 2^bits - 1.

Defaults are representative of a 12 MP global-shutter CMOS sensor with 3.45 um pixels
(Sony Pregius class): full well ~10.5 ke-, read noise ~2.4 e-, 12-bit ADC with K chosen so the
full well just fills it above the black level: 16 + 0.388 x 10500 = 4090 <= 4095 DN. Replace
them with your camera's EMVA 1288 data sheet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hyplex.simulation.grids import check_wavelengths, resample
from hyplex.simulation.radiometry import check_exposure

ADC_BITS = (8, 10, 12, 14, 16)


@dataclass(frozen=True)
class SensorModel:
    """EMVA 1288 parameters of a monochrome sensor.

    Attributes
    ----------
    shape : (int, int)
        Pixels (rows, cols); the prototype's 4000 x 3000 camera is (3000, 4000).
    pixel_pitch_um : float
        Pixel pitch, um; the light-sensitive area is the pitch squared (microlenses).
    system_gain_dn_per_e : float
        K, digital numbers per electron (> 0).
    read_noise_e : float
        Temporal dark noise sigma_d without dark current, electrons rms (>= 0).
    dark_current_e_per_s : float
        Mean dark current mu_I, electrons per second (>= 0).
    dsnu_e : float
        Dark signal non-uniformity, electrons rms (>= 0).
    prnu_percent : float
        Photo-response non-uniformity, % rms (>= 0).
    full_well_e : float
        Saturation capacity, electrons (> 0).
    adc_bits : int
        ADC bit depth, one of 8, 10, 12, 14, 16; raw frames are uint16.
    black_level_dn : float
        Offset added before digitisation, DN (>= 0, below 2^bits - 1).
    fixed_pattern_seed : int
        Seed of the DSNU and PRNU maps (>= 0).
    shot_noise_exact_below_e : float
        Shot noise is drawn exactly from Poisson(mu) (inversion below 10 e-, Ahrens and
        Dieter's algorithm PD above) for mu below this, and from the normal law of the same
        mean and variance above (dropping a skewness of 1 / sqrt(mu) <= 3.2 %, total variation
        distance 0.004 at the default of 1000 e-; see ``kernels_sensor``). The normal law saves
        ~15 % of the noise kernel's time (``benchmarks/kernels.py --only sensor_noise``:
        ``sensor_noise`` vs ``sensor_noise_normal_approx``). ``math.inf`` draws exactly
        everywhere.
    qe_wavelengths_nm, qe : tuple of float, optional
        Tabulated quantum efficiency (band-averaged onto a grid like every spectrum, 0 outside
        the table); default: the silicon model of
        ``quantum_efficiency.silicon_quantum_efficiency``.
    """

    shape: tuple[int, int] = (3000, 4000)
    pixel_pitch_um: float = 3.45
    system_gain_dn_per_e: float = 0.388
    read_noise_e: float = 2.4
    dark_current_e_per_s: float = 5.0
    dsnu_e: float = 1.0
    prnu_percent: float = 0.5
    full_well_e: float = 10500.0
    adc_bits: int = 12
    black_level_dn: float = 16.0
    fixed_pattern_seed: int = 0
    shot_noise_exact_below_e: float = 1000.0
    qe_wavelengths_nm: tuple[float, ...] | None = field(default=None, repr=False)
    qe: tuple[float, ...] | None = field(default=None, repr=False)

    def __post_init__(self):
        rows, cols = (int(v) for v in self.shape)
        object.__setattr__(self, "shape", (rows, cols))
        if rows < 1 or cols < 1:
            raise ValueError(f"shape must be positive (rows, cols), got {self.shape}")
        bits = self.adc_bits
        if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or bits not in ADC_BITS:
            raise ValueError(f"adc_bits must be an integer, one of {ADC_BITS}, got {bits!r}")
        object.__setattr__(self, "adc_bits", int(bits))
        seed = self.fixed_pattern_seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"fixed_pattern_seed must be an integer >= 0, got {seed!r}")
        positive = {"pixel_pitch_um", "system_gain_dn_per_e", "full_well_e"}
        for name in positive | {
            "read_noise_e",
            "dark_current_e_per_s",
            "dsnu_e",
            "prnu_percent",
            "black_level_dn",
        }:
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0 or (name in positive and value == 0):
                relation = "> 0" if name in positive else ">= 0"
                raise ValueError(f"{name} must be finite and {relation}, got {value}")
        if self.black_level_dn >= self.max_dn:
            raise ValueError(
                f"black_level_dn ({self.black_level_dn}) must be below max_dn ({self.max_dn})"
            )
        if not self.shot_noise_exact_below_e >= 0:
            raise ValueError("shot_noise_exact_below_e must be >= 0 (math.inf: always exact)")
        if (self.qe is None) != (self.qe_wavelengths_nm is None):
            raise ValueError("give both qe_wavelengths_nm and qe, or neither")
        if self.qe is not None:
            grid = check_wavelengths(self.qe_wavelengths_nm, "qe_wavelengths_nm")
            values = np.asarray(self.qe, dtype=np.float64)
            if values.shape != grid.shape or np.any(values < 0) or np.any(values > 1):
                raise ValueError("qe must match qe_wavelengths_nm and lie in [0, 1]")

    @property
    def max_dn(self) -> int:
        return 2**self.adc_bits - 1

    @property
    def pixel_area_m2(self) -> float:
        return (self.pixel_pitch_um * 1e-6) ** 2

    def quantum_efficiency(self, wavelengths_nm) -> np.ndarray:
        """QE on the grid (L,): the tabulated curve band-averaged onto the grid's bins
        (``grids.resample``, linear between table points, 0 outside), or the silicon model."""
        grid = check_wavelengths(wavelengths_nm)
        if self.qe is None:
            from hyplex.simulation.quantum_efficiency import silicon_quantum_efficiency

            return silicon_quantum_efficiency(grid)
        return resample(self.qe_wavelengths_nm, self.qe, grid, extrapolation="zero")

    def fixed_pattern(self, shape=None):
        """(prnu_gain, dsnu_e) maps, float32 (H, W); (0, 0) arrays where the non-uniformity
        is zero. The same seed gives the same maps; PRNU and DSNU come from independent
        streams (``SeedSequence(seed).spawn(2)``), so setting one does not change the other."""
        rows, cols = self.shape if shape is None else shape
        prnu_rng, dsnu_rng = (
            np.random.default_rng(child)
            for child in np.random.SeedSequence(self.fixed_pattern_seed).spawn(2)
        )
        prnu, dsnu = np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        if self.prnu_percent > 0:
            prnu = prnu_rng.standard_normal((rows, cols), dtype=np.float32)
            prnu = (1.0 + np.float32(self.prnu_percent / 100.0) * prnu).astype(np.float32)
        if self.dsnu_e > 0:
            dsnu = dsnu_rng.standard_normal((rows, cols), dtype=np.float32)
            dsnu = (np.float32(self.dsnu_e) * dsnu).astype(np.float32)
        return prnu, dsnu

    def settings(self, exposure_us: float) -> np.ndarray:
        """The kernel's vector: (dark e-, read noise e-, full well e-, K, black DN, max DN,
        exact-Poisson threshold e-)."""
        dark = self.dark_current_e_per_s * check_exposure(exposure_us)
        return np.array(
            [
                dark,
                self.read_noise_e,
                self.full_well_e,
                self.system_gain_dn_per_e,
                self.black_level_dn,
                self.max_dn,
                self.shot_noise_exact_below_e,
            ],
            dtype=np.float64,
        )

    # EMVA 1288 predictions (no non-uniformity, no saturation) -----------------------------

    def mean_dn(self, electrons, exposure_us: float):
        """mu_y = black + K (mu_e + mu_I t), DN (EMVA 1288 eq. 9)."""
        dark = self.dark_current_e_per_s * check_exposure(exposure_us)
        return self.black_level_dn + self.system_gain_dn_per_e * (np.asarray(electrons) + dark)

    def variance_dn2(self, electrons, exposure_us: float):
        """sigma_y^2 = K^2 sigma_d^2 + 1/12 + K^2 mu_e, DN^2 (EMVA 1288 eq. 12), with
        sigma_d^2 = read noise^2 + mu_I t."""
        dark = self.dark_current_e_per_s * check_exposure(exposure_us)
        k = self.system_gain_dn_per_e
        return k**2 * (self.read_noise_e**2 + dark) + 1.0 / 12.0 + k**2 * np.asarray(electrons)
