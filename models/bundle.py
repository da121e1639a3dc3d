"""Design bundles: everything needed to fabricate an encoder and decode its frames, on disk.

A bundle is a directory (format ``hyplex-design-bundle``, version 1)::

    bundle.json            format, version, provenance, wavelengths_nm, encoder description
                           (kind, family, parameter names, library indices), mosaic layout
                           (MosaicLayout fields), capture settings, decoder names + configs,
                           class names, held-out metrics, profile ("full" or "realtime":
                           the decoders' profile, hyplex.models.realtime; absent = "full"),
                           training_scenes (generator, seed, ids: the scenes the decoders
                           were trained on; hyplex forget removes them by id)
    design.npz             wavelengths_nm (L,), responses (F, L) and, as the encoder has them,
                           library_indices (F,), params_nm (F, P), thickness_nm (F,),
                           geometry_nm (F, P + 1); read with allow_pickle=False
    decoders.safetensors   reconstructor.* and segmenter.* weights (safetensors: tensors only,
                           no code is ever unpickled)
    config.json            the training configuration (CodesignConfig)
    report.png             filters, reconstructions, segmentation (hyplex.models.report)

:func:`save_bundle` writes into a temporary sibling directory and renames it into place.
:func:`load_bundle` checks the format, that the parts agree (``F`` filters and ``L`` bands in
the responses, the layout, the decoder configs; the segmenter's classes and ``class_names``;
transmissions in [0, 1]) and, given ``wavelengths_nm``, that the bundle was trained on that
grid; anything else is a :class:`BundleError` saying what is wrong and what was expected.
Given ``profile``, a bundle of the other profile is a :class:`BundleError` naming both, before
any decoder is built (not a shape error from inside a network).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from hyplex.models.encoder_capture import CaptureSettings
from hyplex.models.realtime import PROFILES, profile_of
from hyplex.optics.atomic_io import atomic_directory
from hyplex.optics.untrusted import check_config_limits, check_state_shapes
from hyplex.simulation.layout import MosaicLayout

__all__ = ["FORMAT", "BundleError", "DesignBundle", "default_layout", "save_bundle", "load_bundle"]

FORMAT = "hyplex-design-bundle"
FORMAT_VERSION = 1
_ARRAYS = ("library_indices", "params_nm", "thickness_nm", "geometry_nm")
_FILES = ("bundle.json", "design.npz", "decoders.safetensors", "config.json")
_ROUNDING = 1e-6  # tolerated excursion of stored transmissions outside [0, 1] (float32 sums)
_RECORD = {  # the keys of bundle.json after format and format_version, with their JSON types
    "wavelengths_nm": list,
    "n_filters": int,
    "encoder": dict,
    "layout": dict,
    "capture": dict,
    "reconstructor": dict,
    "segmenter": dict,
    "class_names": list,
    "metrics": dict,
}


class BundleError(ValueError):
    """A bundle is missing, foreign, corrupt, or trained for another wavelength grid."""


@dataclass
class DesignBundle:
    """A loaded bundle. ``design`` holds the arrays of ``design.npz`` and the encoder
    description; ``reconstructor`` and ``segmenter`` are ready (eval mode) torch modules."""

    path: Path
    wavelengths_nm: np.ndarray
    responses: np.ndarray
    design: dict
    layout: MosaicLayout
    capture: CaptureSettings
    reconstructor: torch.nn.Module
    segmenter: torch.nn.Module
    class_names: list[str]
    config: dict
    metrics: dict
    profile: str = "full"

    def encoder(self):
        """The fabricated encoder as a :class:`~hyplex.models.encoder.FixedResponseEncoder`."""
        from hyplex.models.encoder import FixedResponseEncoder

        kind = self.design.get("kind", "design")
        return FixedResponseEncoder(self.responses, self.wavelengths_nm, self.capture, name=kind)

    def model(self):
        """Encoder + decoders as a :class:`~hyplex.models.codesign.CodesignModel`."""
        from hyplex.models.codesign import CodesignModel

        return CodesignModel(self.encoder(), self.reconstructor, self.segmenter).eval()


def default_layout(n_filters: int) -> MosaicLayout:
    """The Hyplex 3 x 3 mosaic for 9 filters, else one row of ``n_filters`` sub-filters."""
    return MosaicLayout() if n_filters == 9 else MosaicLayout(grid=(1, int(n_filters)))


def _provenance() -> dict:
    try:
        hyplex_version = version("hyplex")
    except PackageNotFoundError:
        hyplex_version = "0.0.0+unknown"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "hyplex_version": hyplex_version,
        "torch_version": torch.__version__,
        "created_utc": now,
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_bundle(path, result, layout: MosaicLayout | None = None, report: bool = True,
                overwrite: bool = False) -> Path:  # fmt: skip
    """Write the bundle of a :class:`~hyplex.models.codesign.CodesignResult` to directory
    ``path`` (see the module docstring); ``layout`` defaults to :func:`default_layout`.
    An existing ``path`` is replaced only with ``overwrite``, as a whole (the new bundle is
    written into a staging folder, fsynced and renamed into place: a crash leaves the old
    bundle or the new one, :func:`hyplex.optics.atomic_io.atomic_directory`). Returns ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path} exists; pass overwrite=True to replace it")
    model, config, design = result.model, result.config, dict(result.design)
    responses = np.asarray(design.get("responses"), dtype=np.float64)
    if responses.ndim != 2 or responses.shape[1] != len(result.wavelengths_nm):
        raise BundleError("the result holds no hardened design (was training interrupted?)")
    layout = default_layout(responses.shape[0]) if layout is None else layout
    if layout.n_filters != responses.shape[0]:
        raise BundleError(f"layout has {layout.n_filters} filters, the design {len(responses)}")
    with atomic_directory(path, overwrite=overwrite) as staging:
        _write_bundle(staging, result, config, model, design, responses, layout, report)
    return path


def _write_bundle(staging, result, config, model, design, responses, layout, report) -> None:
    """The bundle's files, written into the (staging) directory ``staging``."""
    from safetensors.torch import save_file

    arrays = {"wavelengths_nm": np.asarray(result.wavelengths_nm), "responses": responses}
    arrays.update({k: np.asarray(design[k]) for k in _ARRAYS if k in design})
    np.savez(staging / "design.npz", **arrays)
    tensors = {
        f"{part}.{name}": value.detach().cpu().contiguous()
        for part in ("reconstructor", "segmenter")
        for name, value in getattr(model, part).state_dict().items()
    }
    save_file(tensors, staging / "decoders.safetensors", metadata={"format": FORMAT})
    description = {k: v for k, v in design.items() if k not in (*_ARRAYS, "responses")}
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **_provenance(),
        "wavelengths_nm": np.asarray(result.wavelengths_nm).tolist(),
        "n_filters": int(responses.shape[0]),
        "encoder": description,
        "layout": asdict(layout),
        "capture": model.encoder.capture.settings.to_dict(),
        "reconstructor": {"name": config.reconstructor, "config": model.reconstructor.config},
        "segmenter": {"name": config.segmenter, "config": model.segmenter.config},
        "class_names": list(result.class_names),
        "metrics": result.metrics,
        "profile": profile_of(config.reconstructor, config.segmenter),
        # what the decoders learnt from, so that scenes can be forgotten by name (hyplex
        # forget): scene k is generate_scenes(..., seed)[k], drawn from default_rng([seed, k])
        "training_scenes": {
            "generator": "hyplex.models.data.generate_scenes",
            "seed": int(config.seed),
            "ids": [f"scene-{k:04d}" for k in range(int(config.n_train_scenes))],
        },
    }
    (staging / "bundle.json").write_text(json.dumps(_jsonable(record), indent=1))
    (staging / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    if report:
        from hyplex.models.report import write_report

        title = f"hyplex design: {config.encoder}"
        png = staging / "report.png"
        write_report(png, result.wavelengths_nm, responses, model, result.validation,
                     result.metrics, title)  # fmt: skip


def _read_record(path: Path) -> dict:
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: not a hyplex design bundle (missing {', '.join(missing)})")
    try:
        record = json.loads((path / "bundle.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}/bundle.json is not valid JSON: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise BundleError(f"{path}: bundle.json has format {found!r}, expected {FORMAT!r}")
    if record.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format_version {record.get('format_version')}; this hyplex reads "
            f"version {FORMAT_VERSION}"
        )
    missing = [key for key in _RECORD if key not in record]
    if missing:
        raise BundleError(
            f"{path}/bundle.json lacks {', '.join(missing)} (a version 1 bundle has "
            f"{', '.join(_RECORD)})"
        )
    for key, kind in _RECORD.items():
        if not isinstance(record[key], kind):
            raise BundleError(
                f"{path}/bundle.json: {key} is of type {type(record[key]).__name__}, "
                f"expected {kind.__name__}"
            )
    for part in ("reconstructor", "segmenter"):
        spec = record[part]
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("config"), dict):
            raise BundleError(
                f"{path}/bundle.json: {part} must hold a name (str) and a config (dict), got "
                f"keys {sorted(spec)}"
            )
    names = record["class_names"]
    if not all(isinstance(name, str) for name in names):
        raise BundleError(f"{path}/bundle.json: class_names must be strings, got {names!r}")
    try:
        grid = np.asarray(record["wavelengths_nm"], dtype=np.float64)
    except (TypeError, ValueError):
        grid = np.empty(0)
    if grid.ndim != 1 or grid.size < 1 or not np.isfinite(grid).all():
        raise BundleError(
            f"{path}/bundle.json: wavelengths_nm must be a list of finite numbers (nm), got "
            f"{record['wavelengths_nm']!r}"
        )
    profile = record.setdefault("profile", "full")  # bundles before the profiles were full
    if profile not in PROFILES:
        raise BundleError(
            f"{path}/bundle.json: profile must be one of {list(PROFILES)}, got {profile!r}"
        )
    n_filters = record["n_filters"]
    if isinstance(n_filters, bool) or not isinstance(n_filters, int) or n_filters < 1:
        raise BundleError(
            f"{path}/bundle.json: n_filters must be an integer >= 1, got {n_filters!r}"
        )
    return record


def _check_responses(path: Path, responses, n_filters: int, n_bands: int) -> None:
    """Responses are ``(F, L)`` transmissions: finite, in [0, 1]."""
    if responses is None:
        raise BundleError(f"{path}/design.npz holds no responses (F={n_filters}, L={n_bands})")
    if responses.shape != (n_filters, n_bands):
        raise BundleError(
            f"{path}/design.npz: responses have shape {responses.shape}, expected "
            f"(F={n_filters}, L={n_bands}) from bundle.json"
        )
    if not np.issubdtype(responses.dtype, np.floating) or not np.isfinite(responses).all():
        raise BundleError(f"{path}/design.npz: responses must be finite floats (transmissions)")
    low, high = float(responses.min()), float(responses.max())
    if low < -_ROUNDING or high > 1.0 + _ROUNDING:
        raise BundleError(
            f"{path}/design.npz: responses span {low:.4g}..{high:.4g}; transmissions must "
            "lie in [0, 1]"
        )


def _check_decoder_sizes(path: Path, record: dict, n_filters: int, n_bands: int) -> None:
    """The decoders' configs must match the design: the reconstructor reads ``F`` barcode
    channels and outputs ``L`` bands; the segmenter reads ``F`` and scores every class."""
    expected = {
        "reconstructor": {"n_bands": n_bands},
        "segmenter": {"in_channels": n_filters, "n_classes": len(record["class_names"])},
    }
    reconstructor = record["reconstructor"]["config"]
    channels = "n_filters" if "n_filters" in reconstructor else "in_channels"
    expected["reconstructor"][channels] = n_filters
    why = {
        "n_bands": f"L = {n_bands} bands of wavelengths_nm",
        "n_filters": f"F = {n_filters} filters",
        "in_channels": f"F = {n_filters} filters",
        "n_classes": f"{len(record['class_names'])} class_names",
    }
    for part, sizes in expected.items():
        config = record[part]["config"]
        for key, value in sizes.items():
            if config.get(key) != value:
                raise BundleError(
                    f"{path}: the {part} config has {key} = {config.get(key)!r}, expected "
                    f"{value} ({why[key]})"
                )


def load_bundle(path, wavelengths_nm=None, device="cpu", profile=None) -> DesignBundle:
    """Read a bundle written by :func:`save_bundle`.

    Parameters
    ----------
    path : the bundle directory.
    wavelengths_nm : ``(L,)`` grid the caller works on; a bundle trained on another grid is a
        :class:`BundleError` (its decoders output other bands).
    device : where the decoders go.
    profile : ``"full"``, ``"realtime"`` or None (either): the decoder profile the caller
        needs (:mod:`hyplex.models.realtime`); a bundle of the other one is a BundleError.

    Raises
    ------
    BundleError
        Missing or foreign directory, corrupt files, mismatched wavelength grid, or parts that
        disagree: bundle.json lacking a key; responses not ``(F, L)``, not finite or outside
        [0, 1]; a layout or capture settings that are invalid or not for ``F`` filters;
        decoder configs not for ``F`` filters, ``L`` bands and the ``class_names``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hyplex.models.reconstruction import build_reconstructor
    from hyplex.models.segmentation import build_segmenter

    path = Path(path)
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)} or None, got {profile!r}")
    record = _read_record(path)
    if profile is not None and record["profile"] != profile:
        other = "hyplex design --profile " + profile
        raise BundleError(
            f"{path} is a {record['profile']} bundle (decoders {record['reconstructor']['name']}"
            f" + {record['segmenter']['name']}), but a {profile} bundle is required here; "
            f"train one with `{other}` or ask for the {record['profile']} profile"
        )
    grid = np.asarray(record["wavelengths_nm"], dtype=np.float64)
    n_filters = record["n_filters"]
    if wavelengths_nm is not None:
        asked = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
        if asked.shape != grid.shape or not np.allclose(asked, grid, rtol=0, atol=1e-6):
            raise BundleError(
                f"{path} was trained for {grid.size} bands {grid[0]:g}-{grid[-1]:g} nm, but "
                f"{asked.size} bands {asked.min():g}-{asked.max():g} nm were asked for; "
                "its decoders cannot output another grid (train a bundle for it)"
            )
    try:
        with np.load(path / "design.npz", allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise BundleError(f"{path}/design.npz is corrupt: {error}") from None
    responses = arrays.get("responses")
    _check_responses(path, responses, n_filters, grid.size)
    if not np.array_equal(arrays.get("wavelengths_nm"), grid):
        raise BundleError(f"{path}: design.npz and bundle.json disagree on the wavelengths")
    try:
        layout = MosaicLayout(**_tuples(record["layout"]))
    except (TypeError, ValueError) as error:
        raise BundleError(f"{path}/bundle.json: invalid layout: {error}") from None
    if layout.n_filters != n_filters:
        raise BundleError(
            f"{path}/bundle.json: the layout's grid {layout.grid} holds {layout.n_filters} "
            f"filters, expected {n_filters} (n_filters, rows of the responses)"
        )
    try:
        capture = CaptureSettings.from_dict(record["capture"])
    except (TypeError, ValueError) as error:
        raise BundleError(f"{path}/bundle.json: invalid capture settings: {error}") from None
    _check_decoder_sizes(path, record, n_filters, grid.size)
    try:
        config = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}/config.json is not valid JSON: {error}") from None
    try:
        tensors = load_file(path / "decoders.safetensors", device="cpu")
    except (SafetensorError, OSError) as error:
        raise BundleError(f"{path}/decoders.safetensors is corrupt: {error}") from None
    modules = {}
    for part, build in (("reconstructor", build_reconstructor), ("segmenter", build_segmenter)):
        spec = record[part]
        prefix = f"{part}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            # first on the meta device (no memory): a config that asks for a network other
            # than the stored tensors' (a width of 10^6 in a hostile file) fails here, before
            # any allocation
            check_config_limits(spec["config"], "bundle.json")
            with torch.device("meta"):
                skeleton = build(spec["name"], **spec["config"]).state_dict()
            check_state_shapes(skeleton, state)
            module = build(spec["name"], **spec["config"])
            module.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as error:
            raise BundleError(
                f"{path}: the {part} weights do not fit its config: {error}"
            ) from None
        modules[part] = module.to(device).eval()
    design = {**record["encoder"], **{k: v for k, v in arrays.items() if k != "wavelengths_nm"}}
    return DesignBundle(
        path=path,
        wavelengths_nm=grid,
        responses=responses,
        design=design,
        layout=layout,
        capture=capture,
        reconstructor=modules["reconstructor"],
        segmenter=modules["segmenter"],
        class_names=list(record["class_names"]),
        config=config,
        metrics=record["metrics"],
        profile=record["profile"],
    )


def _tuples(values: dict) -> dict:
    """``values`` with every list value (a JSON array) turned into a tuple."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
