"""HDF5 files of synthetic scenes and videos (``hyplex simulate``), written atomically.

Layout (every dataset carries ``units`` and ``description`` attributes)::

    /                       attrs: format = "hyplex.simulation", version, kind ("scene" | "video"),
                                   hyplex_version, created (ISO 8601), plus generator settings
    /wavelengths_nm         (L,)               nm
    /reflectance            ([T,] H, W, L)     float32, unitless
    /radiance               ([T,] H, W, L)     float32, W m^-2 sr^-1 nm^-1
    /shading                ([T,] H, W)        float32, unitless
    /illuminant/spectral_irradiance  ([T,] L)  W m^-2 nm^-1; attrs name, source
    /illuminant/illuminance_lux      ([T])     lx
    /class_map              ([T,] H, W)        int16; attr class_names (JSON list)
    /instance_map           ([T,] H, W)        int32
    /fake_map               ([T,] H, W)        bool
    /raw                    ([T,] Hr, Wr)      uint16, optional mosaic frames; attrs describe the
                                               camera (exposure_us, adc_bits, layout, ...)

Files are written atomically (:func:`hyplex.optics.atomic_io.atomic_path`: a unique temporary
in the destination folder, fsynced, renamed over the target), so a reader never sees a
half-written file and a crash leaves the old one.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from pathlib import Path

import h5py
import numpy as np

from hyplex.optics.atomic_io import atomic_path
from hyplex.simulation.illuminants import Illuminant
from hyplex.simulation.scenes import Scene

FORMAT, VERSION = "hyplex.simulation", 1


def _package_version() -> str:
    """Installed version of hyplex, read from its metadata (not from the ``hyplex`` face,
    which this wing must not import); "unknown" when the package is not installed."""
    try:
        return importlib.metadata.version("hyplex")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_CHUNKED = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_UNITS = {
    "wavelengths_nm": ("nm", "band centres (vacuum wavelength)"),
    "reflectance": ("1", "intrinsic Lambertian reflectance"),
    "radiance": ("W m^-2 sr^-1 nm^-1", "spectral radiance: reflectance * shading * E / pi"),
    "shading": ("1", "geometric shading times texture"),
    "class_map": ("1", "class index into the class_names attribute; 0 = background"),
    "instance_map": ("1", "object number; 0 = background"),
    "fake_map": ("1", "True on artificial objects imitating a natural class"),
    "raw": ("DN", "raw monochrome mosaic frame (EMVA 1288 sensor model)"),
}


def _atomic_write(path, fill) -> Path:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        fill(file)
    return Path(path)


def _dataset(file, name, data, chunked=True):
    options = _CHUNKED if chunked and np.ndim(data) >= 2 else {}
    dataset = file.create_dataset(name, data=data, **options)
    units, description = _UNITS.get(name, ("", ""))
    dataset.attrs["units"], dataset.attrs["description"] = units, description
    return dataset


def _header(file, kind: str, attrs: dict | None):
    file.attrs.update(
        {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "hyplex_version": _package_version(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(),
        }
    )
    for key, value in (attrs or {}).items():
        file.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


def write_scene(path, scene: Scene, raw=None, raw_attrs: dict | None = None, attrs=None) -> Path:
    """Write one scene (and optionally its raw mosaic frame) to ``path``; return the path."""

    def fill(file):
        _header(file, "scene", attrs)
        _dataset(file, "wavelengths_nm", scene.wavelengths_nm, chunked=False)
        _dataset(file, "reflectance", scene.reflectance)
        _dataset(file, "radiance", scene.radiance)
        _dataset(file, "shading", scene.shading)
        light = file.create_group("illuminant")
        light.create_dataset("spectral_irradiance", data=scene.illuminant.spectral_irradiance)
        light["spectral_irradiance"].attrs["units"] = "W m^-2 nm^-1"
        light.create_dataset("illuminance_lux", data=scene.illuminant.illuminance_lux)
        light["illuminance_lux"].attrs["units"] = "lx"
        light.attrs["name"], light.attrs["source"] = scene.illuminant.name, scene.illuminant.source
        _dataset(file, "class_map", scene.class_map).attrs["class_names"] = json.dumps(
            list(scene.class_names)
        )
        _dataset(file, "instance_map", scene.instance_map)
        _dataset(file, "fake_map", scene.fake_map)
        if raw is not None:
            _raw(file, raw, raw_attrs)

    return _atomic_write(path, fill)


def _raw(file, raw, raw_attrs):
    dataset = _dataset(file, "raw", np.asarray(raw, dtype=np.uint16))
    for key, value in (raw_attrs or {}).items():
        dataset.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


def write_video(path, video, raw_frames=None, raw_attrs=None, attrs=None) -> Path:
    """Write every frame of ``video`` (a :class:`~hyplex.simulation.video.Video`), rendered
    one at a time, and optional raw frames (T, Hr, Wr); return the path."""
    height, width = video.shape
    bands, count = video.wavelengths_nm.size, video.n_frames

    def fill(file):
        _header(file, "video", attrs)
        _dataset(file, "wavelengths_nm", video.wavelengths_nm, chunked=False)
        cubes = {
            name: file.create_dataset(
                name,
                (count, height, width, bands),
                np.float32,
                chunks=(1, height, width, bands),
                **_CHUNKED,
            )
            for name in ("reflectance", "radiance")
        }
        shading = file.create_dataset("shading", (count, height, width), np.float32, **_CHUNKED)
        for name, dataset in (*cubes.items(), ("shading", shading)):
            dataset.attrs["units"], dataset.attrs["description"] = _UNITS[name]
        for t in range(count):
            scene = video.frame(t)
            cubes["reflectance"][t], cubes["radiance"][t] = scene.reflectance, scene.radiance
            shading[t] = scene.shading
        light = file.create_group("illuminant")
        irradiance = np.stack([lamp.spectral_irradiance for lamp in video.illuminants])
        light.create_dataset("spectral_irradiance", data=irradiance).attrs["units"] = "W m^-2 nm^-1"
        lux = np.array([lamp.illuminance_lux for lamp in video.illuminants])
        light.create_dataset("illuminance_lux", data=lux).attrs["units"] = "lx"
        light.attrs["name"] = json.dumps([lamp.name for lamp in video.illuminants])
        light.attrs["source"] = video.illuminants[0].source
        labels = video.labels()
        _dataset(file, "class_map", labels["class_map"]).attrs["class_names"] = json.dumps(
            list(video.class_names)
        )
        _dataset(file, "instance_map", labels["instance_map"])
        _dataset(file, "fake_map", labels["fake_map"])
        if raw_frames is not None:
            _raw(file, raw_frames, raw_attrs)

    return _atomic_write(path, fill)


def read_scene(path, frame: int | None = None) -> tuple[Scene, np.ndarray | None]:
    """Read a scene file, or frame ``frame`` of a video file: (Scene, raw or None)."""
    with h5py.File(path, "r") as file:
        if file.attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        video = file.attrs["kind"] == "video"
        if video and frame is None:
            raise ValueError(f"{path} holds a video: pass frame=")
        index = (frame,) if video else ()
        light = file["illuminant"]
        names = json.loads(light.attrs["name"]) if video else light.attrs["name"]
        illuminant = Illuminant(
            names[frame] if video else str(names),
            file["wavelengths_nm"][()],
            light["spectral_irradiance"][index],
            float(light["illuminance_lux"][index]),
            str(light.attrs["source"]),
        )
        scene = Scene(
            file["wavelengths_nm"][()],
            file["reflectance"][index],
            file["shading"][index],
            illuminant,
            file["class_map"][index],
            json.loads(file["class_map"].attrs["class_names"]),
            file["instance_map"][index],
            file["fake_map"][index],
        )
        raw = file["raw"][index] if "raw" in file else None
    return scene, raw
