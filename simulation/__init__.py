"""hyplex.simulation: the digital twin of the camera (scenes, mosaic encoder, sensor).

==========================  ===========================================================
module                      what
==========================  ===========================================================
``grids``                   wavelength grids (204 / 34 bands), band-averaging resampler
``spectra``, ``envi``       real reflectances: colour-science sets and earthlib (ENVI)
``illuminants``             daylight, A, fluorescent, LED, halogen, in W m^-2 nm^-1
``colorimetry``             CIE XYZ, sRGB, camera RGB, metamers
``scenes``, ``video``       synthetic labelled scenes and clips (real/fake objects)
``scene_io``, ``fvgnet``    HDF5 files of the twin; reader for the FVgNET layout
``radiometry``              radiance -> photons per pixel (units and the camera equation)
``quantum_efficiency``      silicon photodiode QE from optical constants
``layout``, ``encoder``     ``MosaicLayout`` and ``Encoder`` (responses + layout)
``fabrication``             fabrication error of the filters: shift, broadening, scale
``sensor``                  ``SensorModel``: EMVA 1288 linear model
``camera``                  ``CameraTwin``: the numpy/numba forward model
``differentiable``          ``TorchCamera``: the same model in torch, differentiable
``kernels``                 numba kernels (``kernels_sensor``: the sensor's noise;
                            ``counter_rng``: Philox-4x32-10 counter-based random numbers;
                            ``kernels_binning``: metapixel binning, run-length slot maps;
                            ``kernels_numpy``: their numpy formulations)
``barcodes``                raw frame -> (h, w, n_filters) barcodes
``datarate``                equivalent hyperspectral data rate
``plotting``                PNG previews
==========================  ===========================================================

Names below are importable from ``hyplex.simulation`` directly; modules load on first use
(colour-science and numba take seconds to import). This wing imports ``hyplex.optics`` only.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "hyplex_grid": "grids",
    "prototype_grid": "grids",
    "resample": "grids",
    "SpectralLibrary": "spectra",
    "load_reflectances": "spectra",
    "load_earthlib": "spectra",
    "Illuminant": "illuminants",
    "get_illuminant": "illuminants",
    "metamer": "colorimetry",
    "reflectance_to_xyz": "colorimetry",
    "xyz_to_srgb": "colorimetry",
    "Scene": "scenes",
    "make_scene": "scenes",
    "Video": "video",
    "make_video": "video",
    "write_scene": "scene_io",
    "write_video": "scene_io",
    "read_scene": "scene_io",
    "FVgNetDataset": "fvgnet",
    "LensModel": "radiometry",
    "MosaicLayout": "layout",
    "Encoder": "encoder",
    "thin_film_encoder": "encoder",
    "FabricationError": "fabrication",
    "fabricate": "fabrication",
    "fabricated_encoder": "fabrication",
    "SensorModel": "sensor",
    "CameraTwin": "camera",
    "default_camera": "camera",
    "TorchCamera": "differentiable",
    "BarcodeExtractor": "barcodes",
    "equivalent_data_rate_bps": "datarate",
    "format_rate": "datarate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
