"""hyplex: snapshot hyperspectral imaging with metasurface encoders.

Each wing is a top-level folder of the repository mapped to a subpackage:
``optics/`` -> ``hyplex.optics``, ``simulation/`` -> ``hyplex.simulation`` and so on
(see ``pyproject.toml`` and ``docs/architecture.md``). The face is split by job:
``hyplex.cli`` (the command line), ``hyplex.pipeline`` (the video engine), ``hyplex.hil``
(measured responses and decoder refit) and ``hyplex.viewer`` (the live viewer).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hyplex")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

WINGS = ("optics", "simulation", "models", "devices", "calibration")

__all__ = ["__version__", "WINGS"]
