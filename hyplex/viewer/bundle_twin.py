"""A design bundle on the camera twin: what ``hyplex view --camera sim --bundle B`` streams.

::

    make_video (bundle's grid, bundle's capture illuminant)
        --SimulatedCamera(design_twin(B): the bundle's filters on the sim sensor)--> raw DN
        --Preprocessor(dark frame subtracted)--> barcodes DN (h, w, F)
        --InferenceEngine(B's decoders, B's open-set head; / white level per filter)--> result

The simulated camera carries the bundle's own filters (:func:`hyplex.hil.measured_response.
design_twin`, the bundle's sensor, lens and layout grid on a sensor of the asked size) and
looks at a synthetic video on the bundle's wavelength grid, lit by the illuminant the bundle
was trained under. The decoders and, when the bundle has one, its open-set head come from
:func:`hyplex.pipeline.batch.job_models`, the loader ``hyplex segment`` and a real camera's
viewer use, so the unknown map and share of ``hyplex view`` can be seen without a camera.

Normalisation: the bundle's decoders were trained on barcodes divided by the electrons that a
white reflector gives through each filter (:class:`hyplex.models.encoder_capture.
CameraCapture`). The stream gets the same: the sensor's mean dark level at the exposure
(black level plus dark current, :func:`hyplex.devices.sim_camera.expected_dn`) is subtracted
before binning, and each filter's barcode is divided by its white level, the median over the
metapixels of a rendered frame of a Lambertian white (radiance ``E / pi``) under the same
illuminant at the same exposure, the design's (``CameraCapture.exposure_us``: ``fill`` of the
full well for a white through a clear filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BundleTwin", "bundle_on_twin"]


@dataclass
class BundleTwin:
    """A bundle's decoders behind a simulated camera that carries the bundle's filters.

    Attributes
    ----------
    camera : hyplex.devices.sim_camera.SimulatedCamera
        The twin looking at the synthetic video (not yet opened).
    preprocessor : hyplex.pipeline.stages.Preprocessor
        Raw frame (rows, cols) DN -> dark-subtracted barcodes (h, w, F) DN.
    engine : hyplex.pipeline.inference.InferenceEngine
        The bundle's reconstructor and segmenter (and open-set head, if any), with
        ``input_scale_dn`` the white levels.
    white_levels_dn : numpy.ndarray, (F,)
        Each filter's barcode of a white reflector, DN (dark subtracted).
    exposure_us : float
        The camera's exposure, microseconds.
    wavelengths_nm : numpy.ndarray, (L',)
        The reconstructed bands, nm.
    class_names : list of str
        The segmenter's classes.
    """

    camera: object
    preprocessor: object
    engine: object
    white_levels_dn: np.ndarray
    exposure_us: float
    wavelengths_nm: np.ndarray
    class_names: list


def bundle_on_twin(
    bundle,
    sensor_shape=(240, 320),
    pitch_px: float = 3.0,
    n_frames: int = 16,
    frame_rate_hz: float = 15.0,
    seed: int = 0,
) -> BundleTwin:
    """The bundle at ``bundle`` (a folder) decoding the twin's stream (module docstring).

    Parameters
    ----------
    bundle : str or pathlib.Path
        A design bundle folder (``hyplex design``), with or without an open-set head.
    sensor_shape : (rows, cols)
        The simulated sensor, pixels.
    pitch_px : float
        Sub-filter pitch on the sensor, pixels.
    n_frames, frame_rate_hz : int, float
        Frames of the synthetic video (looped) and the camera's rate, Hz.
    seed : int
        The video, the sensor noise.

    Raises
    ------
    ValueError
        A folder that is not a loadable bundle (``BundleError``), a layout grid that does not
        hold the bundle's filters or a mosaic that does not fit the sensor, a white reference
        that gives no signal or saturates the ADC.
    """
    from hyplex.devices.sim_camera import SimulatedCamera, expected_dn
    from hyplex.hil.measured_response import design_twin
    from hyplex.models.bundle import load_bundle
    from hyplex.models.encoder_capture import CameraCapture
    from hyplex.pipeline.batch import SegmentJob, job_models
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
    from hyplex.pipeline.stages import DarkFlat, Preprocessor
    from hyplex.simulation.illuminants import get_illuminant
    from hyplex.simulation.video import make_video

    path = Path(bundle)
    models = job_models(SegmentJob(input="sim", out_dir=".", bundle=str(path), fake=False))
    design = load_bundle(path)
    rows, cols = (int(v) for v in sensor_shape)
    twin, _ = design_twin(design, (rows, cols), float(pitch_px), rotation_deg=0.0)
    capture = design.capture
    grid = np.asarray(design.wavelengths_nm, float)
    exposure_us = float(CameraCapture(grid, capture).exposure_us)
    scene_shape = (max(rows // 4, 16), max(cols // 4, 16))
    video = make_video(
        n_frames,
        scene_shape,
        grid,
        illuminants=(capture.illuminant,),
        illuminance_lux=(capture.illuminance_lux,),
        seed=seed,
    )
    camera = SimulatedCamera(
        video,
        twin=twin,
        exposure_us=exposure_us,
        frame_rate_hz=frame_rate_hz,
        cycle_frames=min(n_frames, 8),
        seed=seed,
    )
    dark_dn = np.full((rows, cols), expected_dn(camera, 0.0), np.float32)
    preprocessor = Preprocessor(twin.encoder.layout, (rows, cols), DarkFlat(dark_dn=dark_dn))
    light = get_illuminant(capture.illuminant, grid, capture.illuminance_lux)
    white_cube = np.broadcast_to(
        (light.spectral_irradiance / np.pi).astype(np.float32), (16, 16, grid.size)
    )
    white = SimulatedCamera(
        np.ascontiguousarray(white_cube), twin=twin, exposure_us=exposure_us, seed=seed
    )
    raw = white.render_raw(0)
    if int(raw.max()) >= int(twin.sensor.max_dn):
        raise ValueError(
            f"the white reference saturates the ADC at {exposure_us:.0f} us (the bundle's "
            f"capture fill {capture.fill}); expected a capture that leaves headroom"
        )
    barcodes = preprocessor(raw)
    white_levels = np.nanmedian(barcodes.reshape(-1, barcodes.shape[-1]), axis=0)
    if not np.all(np.isfinite(white_levels) & (white_levels > 0)):
        raise ValueError(
            f"the white reference gives no signal through some filters: white levels "
            f"{np.round(white_levels, 2).tolist()} DN; expected > 0 for each"
        )
    engine = InferenceEngine(
        models["reconstructor"],
        models["segmenter"],
        config=InferenceConfig(input_scale_dn=white_levels.astype(np.float32)),
        openset=models.get("openset"),  # the bundle's open-set head: unknown map and share
    )
    wavelengths = models.get("wavelengths_nm")
    return BundleTwin(
        camera,
        preprocessor,
        engine,
        white_levels,
        exposure_us,
        grid if wavelengths is None else np.asarray(wavelengths, float),
        list(models.get("class_names") or []),
    )
