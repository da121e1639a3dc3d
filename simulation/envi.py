"""Reader for ENVI spectral libraries (``.sli`` + ``.sli.hdr``), as shipped by ``earthlib``.

An ENVI spectral library is a headerless binary array of ``lines`` spectra by ``samples``
bands, described by a text header (ENVI Header Format, L3Harris "ENVI Header Files" reference):
``key = value`` lines, with ``{...}`` lists that may span lines. Only what a library needs is
read: ``samples``, ``lines``, ``bands`` (must be 1), ``header offset``, ``data type``,
``byte order``, ``wavelength``, ``wavelength units``, ``spectra names``, ``reflectance scale
factor``. Reading the files directly avoids importing earthlib (pandas, spectral, loguru).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ENVI "data type" codes (ENVI header reference) for the real types a library can hold.
_DATA_TYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_UNIT_TO_NM = {"nanometers": 1.0, "nm": 1.0, "micrometers": 1000.0, "microns": 1000.0, "um": 1000.0}


@dataclass
class EnviLibrary:
    """Spectra of an ENVI spectral library.

    Attributes
    ----------
    wavelengths_nm : numpy.ndarray, shape (K,)
        Band centres in nm (converted from the header's ``wavelength units``).
    spectra : numpy.ndarray, shape (N, K), float64
        One spectrum per row, multiplied by ``1 / reflectance scale factor`` when given.
    names : list of str, length N
        ``spectra names`` from the header (``"spectrum_i"`` when absent).
    """

    wavelengths_nm: np.ndarray
    spectra: np.ndarray
    names: list[str]


def parse_header(text: str) -> dict[str, str]:
    """Parse ENVI header text into ``{lower-case key: raw value}``; ``{...}`` kept unbraced."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "ENVI":
        raise ValueError("not an ENVI header: the first line must be 'ENVI'")
    header: dict[str, str] = {}
    key, buffer = None, ""
    for line in lines[1:]:
        if key is not None:  # inside a multi-line {...} value
            buffer += " " + line.strip()
            if "}" in line:
                header[key], key = buffer.strip().lstrip("{").rstrip("}").strip(), None
            continue
        if "=" not in line:
            continue
        name, value = (part.strip() for part in line.split("=", 1))
        if value.startswith("{") and "}" not in value:
            key, buffer = name.lower(), value
        else:
            header[name.lower()] = value.strip("{} ")
    if key is not None:
        raise ValueError(f"ENVI header: unterminated {{...}} value for {key!r}")
    return header


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def read_spectral_library(path) -> EnviLibrary:
    """Read an ENVI spectral library; ``path`` is the ``.sli`` file (header beside it).

    Raises
    ------
    FileNotFoundError
        When the data file or its header (``name.sli.hdr`` or ``name.hdr``) is missing.
    ValueError
        When the header is malformed or does not match the data file's size.
    """
    data_path = Path(path)
    candidates = [data_path.with_name(data_path.name + ".hdr"), data_path.with_suffix(".hdr")]
    header_path = next((p for p in candidates if p.is_file()), None)
    if not data_path.is_file() or header_path is None:
        raise FileNotFoundError(f"need {data_path} and its header (one of {candidates})")
    header = parse_header(header_path.read_text())
    try:
        samples, lines = int(header["samples"]), int(header["lines"])
        bands, dtype_code = int(header.get("bands", "1")), int(header["data type"])
    except (KeyError, ValueError) as error:
        raise ValueError(f"{header_path}: missing or bad samples/lines/data type") from error
    if bands != 1 or dtype_code not in _DATA_TYPES:
        raise ValueError(f"{header_path}: need bands = 1 and a real data type, got {header}")
    order = ">" if header.get("byte order", "0") == "1" else "<"
    dtype = np.dtype(order + _DATA_TYPES[dtype_code])
    offset = int(header.get("header offset", "0"))
    expected = offset + samples * lines * dtype.itemsize
    if data_path.stat().st_size != expected:
        raise ValueError(f"{data_path}: {data_path.stat().st_size} bytes, header says {expected}")
    spectra = np.fromfile(data_path, dtype=dtype, offset=offset).reshape(lines, samples)
    spectra = spectra.astype(np.float64)
    if "reflectance scale factor" in header:
        spectra /= float(header["reflectance scale factor"])
    unit = header.get("wavelength units", "nanometers").strip().lower()
    if unit not in _UNIT_TO_NM:
        raise ValueError(f"{header_path}: unknown wavelength units {unit!r}")
    wavelengths = np.array([float(w) for w in _items(header["wavelength"])]) * _UNIT_TO_NM[unit]
    if wavelengths.size != samples:
        raise ValueError(f"{header_path}: {wavelengths.size} wavelengths for {samples} samples")
    names = _items(header.get("spectra names", ""))
    if len(names) != lines:
        names = [f"spectrum_{i}" for i in range(lines)]
    return EnviLibrary(wavelengths, spectra, names)
