"""EMVA 1288 measured data sets in the standard's descriptor-file layout: read one a lab
brings, write one from hyplex's own frames, and analyse it.

The layout is the plain-text image descriptor of the EMVA 1288 reference data sets
(distributed with the standard and read by the EMVA reference implementation ``emva1288``;
its documentation "Image comparison / File format")::

    # comment
    v 4.0                          release of the standard the measurement follows
    n 12 640 480                   bits per pixel, width, height (pixels)
    b 40000.0 120.0                bright step: exposure time (ns), photons per pixel mu_p
    i images/b_000_snap_001.png    its images, relative to the descriptor's folder:
    i images/b_000_snap_002.png      2 images = a temporal (photon-transfer) pair,
                                     more = a spatial stack (DSNU / PRNU)
    d 40000.0                      dark step: exposure time (ns), then its images
    i images/d_000_snap_001.png
    i images/d_000_snap_002.png
    l InterfaceType USB3           free information (the report template's variables)

A bright step with the same exposure as another and another photon count is an irradiance
series (EMVA 1288 R4.0 Linear, sec. 6.3); :func:`analyse` picks the series type from the
steps. Images are 16-bit PNG or TIFF (Pillow) or ``.npy`` (numeric only, never unpickled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DESCRIPTOR_NAME = "EMVA1288_Descriptor_File.txt"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


class DescriptorError(ValueError):
    """A descriptor file that does not follow the layout (the line is named)."""


@dataclass(frozen=True)
class BrightStep:
    """One illumination step: exposure (ns), photons per pixel and its image paths."""

    exposure_ns: float
    photons: float
    images: tuple[Path, ...]


@dataclass(frozen=True)
class DarkStep:
    """One dark step: exposure (ns) and its image paths."""

    exposure_ns: float
    images: tuple[Path, ...]


@dataclass
class EmvaDataset:
    """A parsed descriptor file.

    Attributes
    ----------
    path : the descriptor file
    version : str, release of the standard
    bits, width, height : int, pixel format
    temporal_bright, spatial_bright : list of BrightStep (2 images; more images)
    temporal_dark, spatial_dark : list of DarkStep
    info : dict, the ``l`` lines
    """

    path: Path
    version: str = ""
    bits: int = 0
    width: int = 0
    height: int = 0
    temporal_bright: list[BrightStep] = field(default_factory=list)
    spatial_bright: list[BrightStep] = field(default_factory=list)
    temporal_dark: list[DarkStep] = field(default_factory=list)
    spatial_dark: list[DarkStep] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _number(text: str, path: Path, number: int, what: str) -> float:
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise DescriptorError(f"{path}:{number}: {what} {text!r} is not a number") from None
    if not np.isfinite(value) or value < 0:
        raise DescriptorError(f"{path}:{number}: {what} must be finite and >= 0, got {text}")
    return value


def read_descriptor(path) -> EmvaDataset:
    """Parse a descriptor file (layout in the module doc); image paths are resolved against
    its folder (``\\`` separators of Windows-made files are accepted).

    Raises
    ------
    DescriptorError
        An unknown line, a step without >= 2 images, a repeated step, a missing ``n`` line,
        or an image path that leaves the descriptor's folder.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DescriptorError(f"{path}: not a readable descriptor file ({error})") from None
    folder = path.parent.resolve()
    dataset = EmvaDataset(path)
    step = None  # (kind, exposure, photons, line number, images)
    steps = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        if key == "i":
            if step is None:
                raise DescriptorError(f"{path}:{number}: an image line before any b or d step")
            image = (folder / Path(*rest.replace("\\", "/").split("/"))).resolve()
            if folder not in image.parents:
                raise DescriptorError(f"{path}:{number}: image {rest!r} is outside {folder}")
            step[4].append(image)
            continue
        if step is not None:
            steps.append(step)
            step = None
        values = rest.split()
        if key == "v":
            dataset.version = rest
        elif key == "n":
            if len(values) != 3 or dataset.bits:
                raise DescriptorError(
                    f"{path}:{number}: expected one line 'n bits width height', got {line!r}"
                )
            bits, width, height = (int(_number(v, path, number, "n")) for v in values)
            dataset.bits, dataset.width, dataset.height = bits, width, height
        elif key == "b":
            if len(values) != 2:
                raise DescriptorError(
                    f"{path}:{number}: expected 'b exposure_ns photons', got {line!r}"
                )
            exposure = _number(values[0], path, number, "exposure")
            step = ("b", exposure, _number(values[1], path, number, "photons"), number, [])
        elif key == "d":
            if len(values) != 1:
                raise DescriptorError(f"{path}:{number}: expected 'd exposure_ns', got {line!r}")
            step = ("d", _number(values[0], path, number, "exposure"), None, number, [])
        elif key == "l":
            name, _, value = rest.partition(" ")
            dataset.info[name] = value.strip()
        else:
            raise DescriptorError(f"{path}:{number}: unknown line {line!r} (expected v, n, b, "
                                  "d, i, l or #)")  # fmt: skip
    if step is not None:
        steps.append(step)
    if not dataset.bits:
        raise DescriptorError(f"{path}: no 'n bits width height' line")
    seen = set()
    for kind, exposure, photons, number, images in steps:
        if len(images) < 2:
            raise DescriptorError(f"{path}:{number}: a step needs >= 2 images, got {len(images)}")
        temporal = len(images) == 2
        identity = (kind, temporal, exposure, photons)
        if identity in seen:
            raise DescriptorError(f"{path}:{number}: a second {kind} step at exposure "
                                  f"{exposure:g} ns" + (f", {photons:g} photons" if photons
                                                        is not None else ""))  # fmt: skip
        seen.add(identity)
        if kind == "b":
            target = dataset.temporal_bright if temporal else dataset.spatial_bright
            target.append(BrightStep(exposure, photons, tuple(images)))
        else:
            target = dataset.temporal_dark if temporal else dataset.spatial_dark
            target.append(DarkStep(exposure, tuple(images)))
    return dataset


def read_image(path, shape=None) -> np.ndarray:
    """One image as float64 (H, W): 16-bit PNG/TIFF via Pillow or a numeric ``.npy``."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DescriptorError(f"{path}: unknown image suffix; expected one of {IMAGE_SUFFIXES}")
    if path.suffix.lower() == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise DescriptorError(
                f"{path} holds pickled objects ({error}); never unpickled"
            ) from None
    else:
        from PIL import Image

        try:
            with Image.open(path) as opened:
                image = np.asarray(opened)
        except OSError as error:
            raise DescriptorError(f"{path}: not a readable image ({error})") from None
    if image.ndim != 2 or image.dtype.kind not in "fiu":
        raise DescriptorError(f"{path}: expected a 2-D monochrome image, got {image.shape} "
                              f"{image.dtype}")  # fmt: skip
    if shape is not None and image.shape != tuple(shape):
        raise DescriptorError(f"{path}: {image.shape[::-1]} (w, h) but the descriptor says "
                              f"{tuple(shape)[::-1]}")  # fmt: skip
    return image.astype(np.float64)


def _save_image(path: Path, frame, bits: int) -> None:
    from PIL import Image

    data = np.asarray(getattr(frame, "data", frame))
    if data.ndim != 2:
        raise ValueError(f"frames must be 2-D (H, W), got {data.shape}")
    if np.any(data < 0) or np.any(data > 2**bits - 1):
        raise ValueError(f"frame values must lie in 0..{2**bits - 1} for {bits} bits")
    Image.fromarray(np.asarray(data, dtype=np.uint16)).save(path, format="PNG")


def write_dataset(folder, bits: int, temporal_bright: Sequence, temporal_dark: Sequence,
                  spatial_bright: Sequence = (), spatial_dark: Sequence = (),
                  info: Mapping | None = None, version: str = "4.0") -> Path:  # fmt: skip
    """Write frames and their descriptor file into ``folder`` (images as 16-bit PNG under
    ``images/``); the descriptor is written last and atomically, so an interrupted write
    never leaves a descriptor that names missing images.

    Parameters
    ----------
    folder : path
    bits : int, ADC bit depth
    temporal_bright : sequence of (exposure_us, photons_per_pixel, [frame, frame])
    temporal_dark : sequence of (exposure_us, [frame, frame])
    spatial_bright : sequence of (exposure_us, photons_per_pixel, [frames...]) (>= 3 frames)
    spatial_dark : sequence of (exposure_us, [frames...])
    info : mapping, optional, written as ``l name value`` lines

    Returns
    -------
    Path of the descriptor file.
    """
    from hyplex.optics.atomic_io import atomic_path

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["# EMVA 1288 measurement written by hyplex", f"v {version}"]
    shape = None
    groups = (("b", temporal_bright, 2), ("b", spatial_bright, 3), ("d", temporal_dark, 2),
              ("d", spatial_dark, 3))  # fmt: skip
    for kind, steps, least in groups:
        for step in steps:
            exposure_us, *photons, frames = step
            temporal = least == 2
            if (len(frames) != 2) if temporal else (len(frames) < 3):
                needed = "2" if temporal else ">= 3"
                raise ValueError(
                    f"a {'temporal' if temporal else 'spatial'} {kind} step needs {needed} "
                    f"frames, got {len(frames)}"
                )
            header = f"{kind} {exposure_us * 1e3:.6g}"
            if kind == "b":
                header += f" {float(photons[0]):.6g}"
            lines.append(header)
            stem = f"{kind}_{'t' if least == 2 else 's'}_{len(lines):04d}"
            for index, frame in enumerate(frames):
                data = np.asarray(getattr(frame, "data", frame))
                if shape is None:
                    shape = data.shape
                elif data.shape != shape:
                    raise ValueError(
                        f"all frames must have one shape, got {data.shape} and {shape}"
                    )
                name = f"images/{stem}_{index:03d}.png"
                _save_image(folder / name, data, bits)
                lines.append(f"i {name}")
    if shape is None:
        raise ValueError("no frames to write")
    lines.insert(2, f"n {bits} {shape[1]} {shape[0]}")
    lines += [f"l {name} {value}" for name, value in (info or {}).items()]
    path = folder / DESCRIPTOR_NAME
    with atomic_path(path) as temporary:
        Path(temporary).write_text("\n".join(lines) + "\n")
    return path


def analyse(dataset: EmvaDataset | str | Path, channels=None, pixel_area_um2=None):
    """EMVA 1288 figures of a descriptor's data set.

    Parameters
    ----------
    dataset : EmvaDataset or path of a descriptor file
    channels : array_like of int (H, W), optional
        Channel per pixel (default: one channel, every pixel).
    pixel_area_um2 : float, optional

    Returns
    -------
    (PhotonTransfer, NonUniformity or None)
        The photon transfer of the temporal steps (an exposure series when the bright steps'
        exposures differ, an irradiance series when they share one); the non-uniformity when
        the data set has a bright and a dark spatial stack.
    """
    from hyplex.calibration.emva import photon_transfer, spatial_nonuniformity

    if not isinstance(dataset, EmvaDataset):
        dataset = read_descriptor(dataset)
    shape = (dataset.height, dataset.width)
    channels = np.zeros(shape, np.int32) if channels is None else np.asarray(channels)
    bright = sorted(dataset.temporal_bright, key=lambda s: (s.exposure_ns, s.photons))
    if len(bright) < 3:
        raise DescriptorError(f"{dataset.path}: need >= 3 temporal bright steps, got {len(bright)}")
    darks = {s.exposure_ns: s for s in dataset.temporal_dark}
    exposures = np.array([s.exposure_ns for s in bright])
    series = "irradiance" if np.unique(exposures).size == 1 else "exposure"
    if series == "irradiance":
        bright = sorted(bright, key=lambda s: s.photons)
    elif np.unique(exposures).size != exposures.size:
        raise DescriptorError(
            f"{dataset.path}: bright steps mix exposure and irradiance variation; "
            "expected one of the two series types"
        )
    missing = sorted({s.exposure_ns for s in bright} - set(darks))
    if missing:
        raise DescriptorError(f"{dataset.path}: no dark pair at exposure {missing[0]:g} ns")

    def pair(images):
        return [read_image(p, shape) for p in images]

    bright_pairs = [pair(s.images) for s in bright]
    if series == "irradiance":
        dark_pairs = [pair(darks[bright[0].exposure_ns].images)]
        exposures_us = bright[0].exposure_ns / 1e3
    else:
        dark_pairs = [pair(darks[s.exposure_ns].images) for s in bright]
        exposures_us = np.array([s.exposure_ns for s in bright]) / 1e3
    transfer = photon_transfer(bright_pairs, dark_pairs, exposures_us, channels,
                               np.array([s.photons for s in bright]), series=series,
                               pixel_area_um2=pixel_area_um2)  # fmt: skip
    uniformity = None
    if dataset.spatial_bright and dataset.spatial_dark:
        stack = dataset.spatial_bright[0]
        dark_stack = next((s for s in dataset.spatial_dark if s.exposure_ns == stack.exposure_ns),
                          dataset.spatial_dark[0])  # fmt: skip
        uniformity = spatial_nonuniformity(pair(dark_stack.images), pair(stack.images), channels,
                                           transfer.system_gain_dn_per_e)  # fmt: skip
    return transfer, uniformity
