"""Optional dependencies: one import helper that names the extra a missing package comes with.

The core install (``pip install hyplex``) is what co-design needs: numpy, scipy, torch, numba,
h5py, colour-science, safetensors and the command line. The rest are extras (see
``pyproject.toml``)::

    extra       packages                                   for
    devices     opencv-python-headless, harvesters,        cameras (OpenCV, GenICam), video
                pyserial                                   files, serial instruments
    viewer      fastapi, uvicorn, opencv-python-headless   the live web viewer
    cluster     dask[distributed]                          library builds and batch runs on Dask
    data        earthlib                                   labelled material spectra (scenes)

``pip install 'hyplex[all]'`` (and ``make``) installs every one. An import site of such a
package calls :func:`require` instead of ``import``, so a missing extra reads
``the live viewer needs the [viewer] extra (fastapi is not installed): pip install
'hyplex[viewer]'`` rather than a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "find_extra", "require"]

#: Top-level module -> the extra that installs it.
EXTRAS = {
    "cv2": "devices",
    "harvesters": "devices",
    "genicam": "devices",
    "serial": "devices",
    "fastapi": "viewer",
    "uvicorn": "viewer",
    "dask": "cluster",
    "distributed": "cluster",
    "earthlib": "data",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that brings it."""


def _message(module: str, extra: str, feature: str | None) -> str:
    top = module.split(".")[0]
    who = feature or f"hyplex's use of {top}"
    return (
        f"{who} needs the [{extra}] extra ({top} is not installed): pip install 'hyplex[{extra}]'"
    )


def _extra_of(module: str, extra: str | None) -> str:
    if extra is not None:
        return extra
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise KeyError(f"{top} is not an optional dependency of hyplex (see EXTRAS)")
    return EXTRAS[top]


def require(module: str, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"cv2"``, ``"harvesters.core"``) or say which extra installs it.

    Parameters
    ----------
    module : dotted module name.
    extra : the extra that installs it (default: from :data:`EXTRAS`).
    feature : what needs it, for the message (e.g. ``"the live viewer"``).

    Raises
    ------
    MissingExtraError
        (a ``ModuleNotFoundError``) when the optional package itself is missing. An import
        error from *inside* an installed package (a broken install) is raised unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the package is there but one of its own dependencies is not
        raise MissingExtraError(
            _message(module, _extra_of(module, extra), feature), name=top
        ) from error


def find_extra(module: str, extra: str | None = None, feature: str | None = None):
    """The import spec of ``module`` without importing it (e.g. a package read for its data
    files only), or :class:`MissingExtraError` naming the extra."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is missing
        spec = None
    if spec is None:
        raise MissingExtraError(
            _message(module, _extra_of(module, extra), feature), name=module.split(".")[0]
        )
    return spec
