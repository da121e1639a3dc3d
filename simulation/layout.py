"""Geometry of the metasurface mosaic on the sensor: which filter each sensor pixel sees.

The mosaic tiles metapixels of ``grid`` sub-filters (3 x 3 in Hyplex, filter index
``sub_row * 3 + sub_col``). Metapixels are grouped into blocks of ``metapixels_per_block``
separated by an unpatterned gap ``gap_subfilters`` sub-filters wide (Hyplex, CVPR 2022: blocks
of 10 x 10 metapixels, a one-sub-filter gap). One sub-filter spans ``pitch_px`` sensor pixels,
not necessarily an integer (the prototype: 7.287 px, 1 degree of rotation)::

     x0,y0 (offset_px)            u (mosaic columns, rotated by rotation_deg from sensor x)
        +--+--+--+--+--+--+   +--+--+--+-->
        |0 |1 |2 |0 |1 |2 |   |0 |1 |2 |
        +--+--+--+--+--+--+ g +--+--+--+       one metapixel = 3 x 3 sub-filters,
        |3 |4 |5 |3 |4 |5 | a |3 |4 |5 |       each pitch_px x pitch_px sensor pixels
        +--+--+--+--+--+--+ p +--+--+--+
        |6 |7 |8 |6 |7 |8 |   |6 |7 |8 |
        +--+--+--+--+--+--+   +--+--+--+
        | <- block of metapixels ->  |
        v (mosaic rows)

A pixel belongs to the sub-filter containing its centre (col + 0.5, row + 0.5) in these rotated,
offset coordinates (``kernels.layout_coordinates``). Pixels in a gap or outside the mosaic see
the unpatterned substrate (code ``n_filters``).

Optional crosstalk: light reaching a pixel at distance d (px) from the nearest sub-filter edge
mixes a fraction ``0.5 exp(-d / crosstalk_length_px)`` of the neighbouring filter's response
(0.5 at the edge by symmetry), an exponential edge-spread model of the spacing between the
metasurface and the photodiodes. Only the nearest edge counts (corners are underestimated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hyplex.simulation import kernels


def _integer(value, name: str) -> int:
    """``value`` as an int; ValueError unless it is integral (7 and 7.0 pass, 7.9 does not)."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not number.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(number)


def _pair(value, name: str, kind=int) -> tuple:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a (rows, cols) pair, got {value!r}")
    if kind is int:
        return tuple(_integer(v, name) for v in pair)
    return tuple(kind(v) for v in pair)


@dataclass(frozen=True)
class MosaicLayout:
    """Placement of the filter mosaic on the sensor.

    Attributes
    ----------
    metapixels : (int, int)
        Number of metapixels (rows h, columns w); barcodes have shape (h, w, n_filters).
    grid : (int, int)
        Sub-filters per metapixel (rows, cols); ``n_filters = rows * cols`` (9 as 3 x 3).
    pitch_px : float
        Sensor pixels per sub-filter pitch (> 0; any real value).
    metapixels_per_block : (int, int)
        Metapixels per block (rows, cols).
    gap_subfilters : int
        Width of the unpatterned gap between blocks, in sub-filters (>= 0).
    rotation_deg : float
        Angle of the mosaic's column axis from the sensor's x axis, towards +y (degrees).
    offset_px : (float, float)
        Sensor position (y, x) of the mosaic's corner, pixels from the sensor's corner.
    crosstalk_length_px : float
        Decay length of the crosstalk model, pixels; 0 disables it.
    """

    metapixels: tuple[int, int] = (10, 10)
    grid: tuple[int, int] = (3, 3)
    pitch_px: float = 7.287
    metapixels_per_block: tuple[int, int] = (10, 10)
    gap_subfilters: int = 1
    rotation_deg: float = 0.0
    offset_px: tuple[float, float] = (0.0, 0.0)
    crosstalk_length_px: float = 0.0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "metapixels", _pair(self.metapixels, "metapixels"))
        set_(self, "grid", _pair(self.grid, "grid"))
        set_(self, "metapixels_per_block", _pair(self.metapixels_per_block, "metapixels_per_block"))
        set_(self, "offset_px", _pair(self.offset_px, "offset_px", float))
        set_(self, "gap_subfilters", _integer(self.gap_subfilters, "gap_subfilters"))
        if min(self.metapixels) < 1 or min(self.grid) < 1 or min(self.metapixels_per_block) < 1:
            raise ValueError("metapixels, grid and metapixels_per_block must be >= 1")
        if self.n_filters > 127:
            raise ValueError(f"at most 127 filters per metapixel, got {self.n_filters}")
        if not (math.isfinite(self.pitch_px) and self.pitch_px > 0):
            raise ValueError(
                f"pitch_px must be > 0 (sensor pixels per sub-filter), got {self.pitch_px}"
            )
        if self.gap_subfilters < 0 or not self.crosstalk_length_px >= 0:
            raise ValueError("gap_subfilters and crosstalk_length_px must be >= 0")

    @property
    def n_filters(self) -> int:
        """Sub-filters per metapixel."""
        return self.grid[0] * self.grid[1]

    def extent_subfilters(self) -> tuple[int, int]:
        """Size of the mosaic (rows, cols) in sub-filter pitches, gaps included."""
        return tuple(
            count * cells + self.gap_subfilters * (-(-count // per_block) - 1)
            for count, cells, per_block in zip(
                self.metapixels, self.grid, self.metapixels_per_block, strict=True
            )
        )

    def corners_px(self) -> np.ndarray:
        """Sensor (y, x) of the mosaic's four corners, shape (4, 2)."""
        rows, cols = self.extent_subfilters()
        theta = math.radians(self.rotation_deg)
        corners = []
        for v, u in ((0, 0), (0, cols), (rows, 0), (rows, cols)):
            x = self.offset_px[1] + self.pitch_px * (u * math.cos(theta) - v * math.sin(theta))
            y = self.offset_px[0] + self.pitch_px * (u * math.sin(theta) + v * math.cos(theta))
            corners.append((y, x))
        return np.array(corners)

    def check_fits(self, sensor_shape) -> None:
        """Raise ValueError if any corner of the mosaic lies outside the sensor (rows, cols)."""
        height, width = _pair(sensor_shape, "sensor_shape")
        corners = self.corners_px()
        tolerance = 1e-9 * max(height, width)
        if (
            corners[:, 0].min() < -tolerance
            or corners[:, 1].min() < -tolerance
            or corners[:, 0].max() > height + tolerance
            or corners[:, 1].max() > width + tolerance
        ):
            low, high = corners.min(0), corners.max(0)
            raise ValueError(
                "the mosaic layout is larger than the sensor: it spans "
                f"y {low[0]:.1f}..{high[0]:.1f}, x {low[1]:.1f}..{high[1]:.1f} px, "
                f"the sensor is {height} x {width} px; use "
                "fewer metapixels, a smaller pitch_px, or MosaicLayout.fit"
            )

    def parameters(self) -> np.ndarray:
        """Geometry as the float64 vector the kernels read (see ``kernels.assign``)."""
        theta = math.radians(self.rotation_deg)
        return np.array(
            [
                self.offset_px[0],
                self.offset_px[1],
                math.cos(theta) / self.pitch_px,
                math.sin(theta) / self.pitch_px,
                self.pitch_px,
                *self.grid,
                *self.metapixels_per_block,
                self.gap_subfilters,
                *self.metapixels,
                self.crosstalk_length_px,
            ],
            dtype=np.float64,
        )

    def filter_maps(self, sensor_shape):
        """Per-pixel filter codes for a sensor of ``sensor_shape`` (rows, cols).

        Returns
        -------
        codes : numpy.ndarray, int8, (H, W)
            0..n_filters-1 for a sub-filter, ``n_filters`` for gaps and outside the mosaic.
        neighbours : numpy.ndarray, int8, (H, W) or (0, 0)
            Code across the nearest edge (crosstalk only).
        mix : numpy.ndarray, float32, (H, W) or (0, 0)
            Crosstalk weight of the neighbour (crosstalk only).

        Raises
        ------
        ValueError
            If the layout is larger than the sensor.
        """
        height, width = _pair(sensor_shape, "sensor_shape")
        self.check_fits((height, width))
        return kernels.build_filter_maps(height, width, self.parameters())

    @classmethod
    def fit(cls, sensor_shape, pitch_px: float = 7.287, margin_px: float = 0.0, **options):
        """The largest layout that fits the sensor (rows, cols), centred, unrotated.

        ``options`` are the other fields (grid, metapixels_per_block, gap_subfilters,
        crosstalk_length_px); ``rotation_deg`` is applied about the centre and the layout shrunk
        until it fits.
        """
        height, width = _pair(sensor_shape, "sensor_shape")
        rotation = options.pop("rotation_deg", 0.0)
        probe = cls(pitch_px=pitch_px, **options)
        counts = []
        for size, cells, per_block in zip(
            (height, width), probe.grid, probe.metapixels_per_block, strict=True
        ):
            available = (size - 2 * margin_px) / pitch_px
            count = int(available // cells)
            while (
                count > 0
                and count * cells + probe.gap_subfilters * (-(-count // per_block) - 1)
                > available + 1e-9
            ):
                count -= 1
            counts.append(count)
        if min(counts) < 1:
            raise ValueError(
                f"no metapixel of {probe.grid} sub-filters at {pitch_px} px fits a "
                f"{height} x {width} px sensor"
            )
        while True:
            layout = cls(metapixels=tuple(counts), pitch_px=pitch_px, **options)
            rows, cols = layout.extent_subfilters()
            theta = math.radians(rotation)
            half_u, half_v = cols * pitch_px / 2, rows * pitch_px / 2
            x0 = width / 2 - (half_u * math.cos(theta) - half_v * math.sin(theta))
            y0 = height / 2 - (half_u * math.sin(theta) + half_v * math.cos(theta))
            layout = cls(
                metapixels=tuple(counts),
                pitch_px=pitch_px,
                rotation_deg=rotation,
                offset_px=(y0, x0),
                **options,
            )
            try:
                layout.check_fits((height, width))
                return layout
            except ValueError:
                if min(counts) <= 1:
                    raise
                counts = [c - 1 for c in counts]

    def slot_map(self, sensor_shape, margin: float = 0.0) -> np.ndarray:
        """Barcode slot of every pixel, int32 (H, W), for :class:`BarcodeExtractor`.

        Slot ``(mrow * w + mcol) * n_filters + code``; -1 for gaps, outside the mosaic, and
        pixels whose centre is nearer than ``margin`` (fraction of the pitch, in [0, 0.5)) to
        an edge of its sub-filter (to keep crosstalk and misregistration out of the means).
        """
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"margin must lie in [0, 0.5) (fraction of the pitch), got {margin}")
        height, width = _pair(sensor_shape, "sensor_shape")
        self.check_fits((height, width))
        return kernels.build_slot_map(height, width, self.parameters(), float(margin))

    def plot(self, sensor_shape, ax=None):
        """Show the filter code of every pixel (gaps dark); return ``ax``."""
        import matplotlib.pyplot as plt

        codes = self.filter_maps(sensor_shape)[0]
        if ax is None:
            _, ax = plt.subplots()
        image = np.ma.masked_equal(codes, self.n_filters)
        ax.imshow(image, cmap="tab10", interpolation="nearest")
        ax.set_facecolor("black")
        ax.set(title=f"mosaic: {self.metapixels} metapixels, pitch {self.pitch_px:g} px")
        return ax
