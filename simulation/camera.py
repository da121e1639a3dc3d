"""The camera digital twin (numpy/numba path): scene radiance -> raw uint16 mosaic frame.

    radiance (Hs, Ws, L) --lens, filters, QE: kernels.project_mosaic--> mu_e (H, W)
        --EMVA 1288 sensor: kernels.sensor_frame--> raw (H, W) uint16

The scene may be coarser than the sensor: sensor pixel (r, c) sees scene pixel
(r * Hs // H, c * Ws // W) (nearest neighbour), so a 750 x 1000 x 204 cube renders a full
3000 x 4000 frame. See ``radiometry.py`` for units and ``differentiable.py`` for the torch twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hyplex.simulation import kernels
from hyplex.simulation.encoder import Encoder
from hyplex.simulation.grids import check_same_grid
from hyplex.simulation.kernels_numpy import sensor_frame_numpy
from hyplex.simulation.radiometry import LensModel, photoelectron_weights
from hyplex.simulation.sensor import SensorModel


def scene_index(sensor_size: int, scene_size: int) -> np.ndarray:
    """Scene index of each sensor row (or column): ``arange(sensor) * scene // sensor``."""
    return (np.arange(sensor_size, dtype=np.int64) * scene_size // sensor_size).astype(np.int32)


@dataclass
class CameraTwin:
    """Encoder + lens + sensor. Maps and fixed-pattern noise are computed once and cached;
    the caches are keyed on the layout and the sensor, so assigning another encoder or sensor
    recomputes them.

    Attributes
    ----------
    encoder : Encoder
        Filter responses and their layout (checked to fit ``sensor.shape``).
    sensor : SensorModel
    lens : LensModel
    """

    encoder: Encoder
    sensor: SensorModel = field(default_factory=SensorModel)
    lens: LensModel = field(default_factory=LensModel)

    def __post_init__(self):
        self.encoder.layout.check_fits(self.sensor.shape)

    def __setattr__(self, name, value):
        if name == "sensor" and "encoder" in self.__dict__:
            self.encoder.layout.check_fits(value.shape)
        if name == "encoder" and "sensor" in self.__dict__:
            value.layout.check_fits(self.sensor.shape)
        super().__setattr__(name, value)

    @property
    def wavelengths_nm(self) -> np.ndarray:
        return self.encoder.wavelengths_nm

    def _cached(self, name: str, key, compute):
        """Value of ``compute()`` cached in the instance until ``key`` changes."""
        entry = self.__dict__.get(name)
        if entry is None or entry[0] != key:
            entry = (key, compute())
            self.__dict__[name] = entry
        return entry[1]

    @property
    def maps(self):
        """(codes, neighbours, mix) of ``MosaicLayout.filter_maps`` for the sensor."""
        layout, shape = self.encoder.layout, self.sensor.shape
        return self._cached("_maps_cache", (layout, shape), lambda: layout.filter_maps(shape))

    @property
    def fixed_pattern(self):
        """(prnu_gain, dsnu_e) maps of the sensor."""
        sensor = self.sensor
        return self._cached("_fixed_pattern_cache", sensor, sensor.fixed_pattern)

    def weights(self, exposure_us: float, quantum_efficiency: bool = True) -> np.ndarray:
        """Electrons per unit radiance per band, (n_filters + 1, L) float64, row = code.

        With ``quantum_efficiency=False`` the weights count photons (QE = 1).
        """
        grid = self.wavelengths_nm
        qe = self.sensor.quantum_efficiency(grid) if quantum_efficiency else np.ones(grid.size)
        return photoelectron_weights(
            self.encoder.transmissions(),
            grid,
            qe,
            self.sensor.pixel_area_m2,
            exposure_us,
            self.lens,
        )

    def expected_electrons(
        self, radiance, wavelengths_nm, exposure_us: float, quantum_efficiency: bool = True
    ) -> np.ndarray:
        """Mean photoelectrons per sensor pixel (float32 (H, W)) for a radiance cube.

        Parameters
        ----------
        radiance : array_like, (Hs, Ws, L)
            Spectral radiance, W m^-2 sr^-1 nm^-1, with Hs <= H and Ws <= W.
        wavelengths_nm : array_like, (L,)
            Must equal the encoder's grid.
        exposure_us : float
            Exposure time, microseconds (>= 0).
        quantum_efficiency : bool
            False counts photons instead (QE = 1).
        """
        check_same_grid(wavelengths_nm, self.wavelengths_nm, "scene radiance and encoder")
        cube = np.asarray(radiance)
        if cube.ndim != 3 or cube.shape[2] != self.wavelengths_nm.size:
            raise ValueError(f"radiance must have shape (H, W, L={self.wavelengths_nm.size})")
        height, width = self.sensor.shape
        if cube.shape[0] > height or cube.shape[1] > width:
            raise ValueError(
                f"scene {cube.shape[:2]} is larger than the sensor {self.sensor.shape}; crop or "
                "downsample it"
            )
        cube = np.ascontiguousarray(cube, dtype=np.float32)
        weights = self.weights(exposure_us, quantum_efficiency).astype(np.float32)
        rows, cols = scene_index(height, cube.shape[0]), scene_index(width, cube.shape[1])
        codes, neighbours, mix = self.maps
        upsampling = (height * width) / (cube.shape[0] * cube.shape[1])
        if upsampling > weights.shape[0]:  # cheaper to project every filter once per scene pixel
            signals = kernels.project_all_filters(cube, weights)
            return kernels.gather_mosaic(signals, codes, neighbours, mix, rows, cols)
        return kernels.project_mosaic(cube, weights, codes, neighbours, mix, rows, cols)

    def capture(
        self,
        electrons,
        exposure_us: float,
        seed: int = 0,
        frame_index: int = 0,
        noise: bool = True,
        backend: str = "numba",
    ) -> np.ndarray:
        """Raw frame (uint16 (H, W)) from expected photoelectrons (H, W), by the EMVA model.

        ``seed`` and ``frame_index`` (integers in 0..2^64 - 1) select the temporal noise (the
        fixed pattern comes from the sensor's ``fixed_pattern_seed``); ``noise=False`` gives
        the rounded mean. ``backend="numpy"`` runs the numpy formulation (another random
        stream). ValueError on non-finite electrons (NaN, infinity) or a bad seed.
        """
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        seed, frame_index = _counter(seed, "seed"), _counter(frame_index, "frame_index")
        signal = np.ascontiguousarray(electrons, dtype=np.float32)
        if signal.shape != self.sensor.shape:
            raise ValueError(f"electrons must have the sensor's shape {self.sensor.shape}")
        settings = self.sensor.settings(exposure_us)
        prnu, dsnu = self.fixed_pattern
        if backend == "numpy":
            if not np.isfinite(signal).all():
                raise ValueError("electrons must be finite (found NaN or infinity)")
            rng = np.random.default_rng([seed, frame_index])
            return sensor_frame_numpy(signal, prnu, dsnu, settings, rng, noise)
        key = kernels.frame_key(seed, frame_index)
        return kernels.sensor_frame(signal, prnu, dsnu, settings, key, noise, kernels.ZIGGURAT)

    def render(
        self, radiance, wavelengths_nm, exposure_us: float, seed=0, frame_index=0, noise=True
    ) -> np.ndarray:
        """Raw uint16 frame of a radiance cube: :meth:`expected_electrons` then :meth:`capture`."""
        electrons = self.expected_electrons(radiance, wavelengths_nm, exposure_us)
        return self.capture(electrons, exposure_us, seed, frame_index, noise)

    def auto_exposure_us(self, radiance, wavelengths_nm, fill: float = 0.7, quantile=0.99):
        """Exposure (us) putting the ``quantile`` of the mean signal of the filter pixels at
        ``fill`` x full well (pixels behind the unpatterned glass of gaps and margins, often the
        brightest, are left out: they carry no barcode)."""
        if not 0 < fill <= 1:
            raise ValueError(f"fill must lie in (0, 1], got {fill}")
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        per_us = self.expected_electrons(radiance, wavelengths_nm, 1.0)
        filtered = per_us[self.maps[0] < self.encoder.n_filters]
        level = float(np.quantile(filtered, quantile)) if filtered.size else 0.0
        if not level > 0:
            raise ValueError("the scene gives no signal: cannot set an exposure")
        return fill * self.sensor.full_well_e / level


def _counter(value, name: str) -> int:
    """An integer in 0..2^64 - 1 (a seed or frame index of the counter-based generator)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= int(value) < 2**64:
        raise ValueError(f"{name} must lie in 0..2^64 - 1, got {value}")
    return int(value)


def default_camera(
    wavelengths_nm, sensor_shape=(3000, 4000), pitch_px: float = 7.287, rotation_deg=0.0
) -> CameraTwin:
    """A twin with the thin-film stand-in encoder on a mosaic fitted to ``sensor_shape``."""
    from hyplex.simulation.encoder import thin_film_encoder
    from hyplex.simulation.layout import MosaicLayout

    layout = MosaicLayout.fit(sensor_shape, pitch_px=pitch_px, rotation_deg=rotation_deg)
    sensor = SensorModel(shape=tuple(sensor_shape))
    return CameraTwin(thin_film_encoder(wavelengths_nm, layout), sensor)
