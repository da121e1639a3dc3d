"""Live viewer: a local web page showing the engine's output as it streams (``hyplex view``).

::

    Pipeline.run (background thread) --on_result--> LiveSession (latest FrameResult, counters)
    FastAPI app (uvicorn, localhost):
      GET /                         the page (``hyplex.viewer.page.PAGE_HTML``)
      GET /stream/{view}            MJPEG (multipart/x-mixed-replace): raw | rgb | band | overlay
                                    | unknown (the open-set head's unknown-material probability)
      GET /frame/{view}.jpg         one JPEG of the latest frame
      GET /api/status               frames, fps, drops, corrupt, latency, cube shape, wavelengths
      GET /api/spectrum?row=&col=   the reconstructed spectrum of one metapixel (JSON)

A bad query (an unknown view, a band or a metapixel outside the frame, a value that is not
an integer) is answered 400 with ``{"detail": "..."}`` naming the value and what was expected;
503 means no frame yet.

The page shows the raw frame, an RGB (or one band) rendering of the reconstructed cube, the
segmentation overlay, fps and drops; clicking a metapixel on either map fetches its spectrum
and draws it (SVG). Images are sent at metapixel resolution times an integer scale and scaled
by the browser, so a click's position maps straight to a (row, col).
"""

import asyncio
import threading
import time

import numpy as np

from hyplex.optics.extras import require
from hyplex.pipeline.outputs import overlay, rgb_rendering, to_uint8
from hyplex.viewer.page import PAGE_HTML

VIEWS = ("raw", "rgb", "band", "overlay", "unknown")


class LiveSession:
    """Runs a pipeline on a source in a background thread and keeps its latest result.

    Parameters
    ----------
    pipeline : hyplex.pipeline.Pipeline
        Configured with ``raw_preview_px`` > 0 to show raw frames.
    source : anything :meth:`Pipeline.run` accepts
    wavelengths_nm : array_like (L',)
        Wavelengths of the reconstructed (kept) bands, nm.
    class_names : list of str
    image_width_px : int
        Cube and overlay images are scaled by an integer to about this width.
    """

    def __init__(self, pipeline, source, wavelengths_nm, class_names, image_width_px: int = 384):
        self.pipeline, self.source = pipeline, source
        self.wavelengths_nm = np.asarray(wavelengths_nm, float)
        self.class_names = list(class_names)
        self.image_width_px = int(image_width_px)
        self.count = 0
        self.latest = None
        self.error: str | None = None
        self._cond = threading.Condition()
        self.beliefs = None  # per-object material hypotheses (BeliefMem), when there are classes
        if len(self.class_names) >= 2:
            from hyplex.pipeline.material_beliefs import MaterialBeliefSink

            self.beliefs = MaterialBeliefSink(self.class_names)
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._recent: list[float] = []

    def start(self) -> "LiveSession":
        self._thread = threading.Thread(
            target=self._run, name="hyplex-viewer-pipeline", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.pipeline.run(self.source, on_result=self._on_result)
        except Exception as error:  # shown on the page
            self.error = repr(error)

    def _on_result(self, result) -> None:
        if result.error is not None:
            return
        now = time.monotonic()
        with self._cond:
            if self.beliefs is not None:
                self.beliefs.write(result)
            self.latest = result
            self.count += 1
            self._recent = [t for t in self._recent if now - t < 2.0] + [now]
            self._cond.notify_all()

    def stop(self) -> None:
        self.pipeline.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wait_newer(self, count: int, timeout: float) -> bool:
        """True once more than ``count`` frames were shown (False after ``timeout`` s)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count > count, timeout)

    def status(self) -> dict:
        summary = self.pipeline.summary
        result = self.latest
        fps = (
            (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])
            if len(self._recent) > 1 and self._recent[-1] > self._recent[0]
            else 0.0
        )
        return {
            "frames": self.count,
            "fps": round(fps, 2),
            "dropped": int(summary.dropped or (result.dropped_so_far if result else 0)),
            "source_dropped": int(getattr(self.source, "dropped", 0) or 0),
            "corrupt": int(summary.corrupt),
            "latency_ms": None if result is None else round(result.latency_s * 1e3, 1),
            "shape": None if result is None or result.labels is None else list(result.labels.shape),
            "n_bands": int(self.wavelengths_nm.size),
            "wavelengths_nm": self.wavelengths_nm.tolist(),
            "class_names": self.class_names,
            "unknown_share": (
                None
                if result is None or result.unknown is None
                else round(float((result.unknown > 0.5).mean()), 4)
            ),
            "material_beliefs": None if self.beliefs is None else self.beliefs.top(3, 8),
            "error": self.error,
        }

    def spectrum(self, row: int, col: int) -> dict:
        """The latest reconstructed spectrum at metapixel (row, col); ValueError if outside."""
        result = self.latest
        if result is None or result.cube is None:
            raise LookupError("no reconstructed frame yet")
        h, w = result.cube.shape[:2]
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"metapixel ({row}, {col}) outside the {h} x {w} map")
        label = None if result.labels is None else int(result.labels[row, col])
        return {
            "row": row,
            "col": col,
            "frame": self.count,
            "wavelengths_nm": self.wavelengths_nm.tolist(),
            "values": [float(v) for v in result.cube[row, col]],
            "label": label,
            "class_name": None
            if label is None or label >= len(self.class_names)
            else self.class_names[label],
        }

    def band_count(self) -> int:
        """Bands of the latest reconstructed cube (before the first one: the wavelengths')."""
        result = self.latest
        if result is not None and result.cube is not None:
            return int(result.cube.shape[-1])
        return int(self.wavelengths_nm.size)

    def image(self, view: str, band: int | None = None) -> np.ndarray | None:
        """RGB or grey uint8 image of the latest frame for ``view`` (None: nothing yet)."""
        result = self.latest
        if result is None:
            return None
        if view == "raw":
            return None if result.raw_preview is None else to_uint8(result.raw_preview)
        scale = max(1, self.image_width_px // max(result.intensity.shape[1], 1))
        if view == "overlay":
            if result.labels is None:
                return None
            return overlay(
                result.intensity,
                result.labels,
                len(self.class_names),
                scale=scale,
                unknown=result.unknown,
            )
        if view == "unknown":  # probability 0..1 as grey 0..255 (0.5: the 95 %-TPR threshold)
            if result.unknown is None:
                return None
            grey = (np.clip(result.unknown, 0, 1) * 255).astype(np.uint8)
            return np.repeat(np.repeat(grey, scale, 0), scale, 1)
        if result.cube is None:
            return None
        image = rgb_rendering(result.cube, self.wavelengths_nm, band if view == "band" else None)
        return np.repeat(np.repeat(image, scale, 0), scale, 1)

    def jpeg(self, view: str, band: int | None = None) -> bytes | None:
        cv2 = require("cv2", feature="the live viewer")

        image = self.image(view, band)
        if image is None:
            return None
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return data.tobytes() if ok else None


def create_app(session: LiveSession):
    """The FastAPI app of ``session`` (see the module doc)."""
    # No ``from __future__ import annotations`` in this module: FastAPI reads these
    # annotations (Query) at run time to inject the arguments.
    fastapi = require("fastapi", feature="the live viewer")
    FastAPI, HTTPException, Query = fastapi.FastAPI, fastapi.HTTPException, fastapi.Query
    responses = require("fastapi.responses", feature="the live viewer")
    HTMLResponse, JSONResponse = responses.HTMLResponse, responses.JSONResponse
    Response, StreamingResponse = responses.Response, responses.StreamingResponse

    app = FastAPI(title="hyplex live viewer")
    RequestValidationError = require("fastapi.exceptions").RequestValidationError  # noqa: N806

    @app.exception_handler(RequestValidationError)
    async def bad_query(request, error):
        """400, not FastAPI's 422: one line per wrong parameter, naming the value."""
        lines = []
        for item in error.errors():
            name = ".".join(str(part) for part in item.get("loc", ())[1:]) or "query"
            lines.append(f"{name}={item.get('input')!r}: {item.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(lines) or "bad query"}, status_code=400)

    def check_view(view: str) -> None:
        if view not in VIEWS:
            raise HTTPException(400, f"unknown view {view!r}; expected one of {list(VIEWS)}")

    def check_band(band: int | None) -> None:
        if band is None:
            return
        count = session.band_count()
        if count == 0:
            raise HTTPException(400, f"band={band}: no reconstructed bands to show")
        if not 0 <= band < count:
            raise HTTPException(
                400,
                f"band={band} is outside the {count} reconstructed bands; expected 0..{count - 1}",
            )

    @app.get("/", response_class=HTMLResponse)
    def index():
        return PAGE_HTML

    @app.get("/api/status")
    def status():
        return JSONResponse(session.status())

    @app.get("/api/spectrum")
    def spectrum(row: int = Query(...), col: int = Query(...)):
        try:
            return JSONResponse(session.spectrum(row, col))
        except LookupError as error:
            raise HTTPException(503, str(error)) from None
        except ValueError as error:
            raise HTTPException(400, str(error)) from None

    @app.get("/frame/{view}.jpg")
    def frame(view: str, band: int | None = None):
        check_view(view)
        check_band(band)
        try:
            data = session.jpeg(view, band)
        except ValueError as error:  # the cube changed between the check and the rendering
            raise HTTPException(400, str(error)) from None
        if data is None:
            raise HTTPException(503, f"no {view} image yet")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/stream/{view}")
    async def stream(view: str, band: int | None = None):
        check_view(view)
        check_band(band)

        async def frames():  # cancelled by Starlette when the client goes away
            shown = -1
            while not getattr(app.state, "closing", False):
                if session.count != shown:
                    shown = session.count
                    data = await asyncio.to_thread(session.jpeg, view, band)
                    if data is not None:
                        yield (
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(data)).encode()
                            + b"\r\n\r\n"
                            + data
                            + b"\r\n"
                        )
                await asyncio.sleep(0.03)

        return StreamingResponse(
            frames(),
            media_type="multipart/x-mixed-replace; boundary=frame",
            headers={"Cache-Control": "no-store"},
        )

    return app


class ViewerServer:
    """uvicorn serving :func:`create_app` in a background thread (``with`` or start/stop).

    Parameters
    ----------
    session : LiveSession
    host, port : str, int
        Port 0 picks a free one (``url`` tells which, once started).
    """

    def __init__(self, session: LiveSession, host: str = "127.0.0.1", port: int = 8000):
        uvicorn = require("uvicorn", feature="the live viewer")

        self.session = session
        self.app = create_app(session)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.host, self._thread = host, None

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def start(self, timeout: float = 20.0) -> "ViewerServer":
        self._thread = threading.Thread(
            target=self.server.run, name="hyplex-viewer-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the viewer's HTTP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.app.state.closing = True
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "ViewerServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def simulated_session(
    sensor_shape=(240, 320),
    pitch_px: float | None = None,
    n_frames: int = 16,
    frame_rate_hz: float = 15.0,
    seed: int = 0,
    policy: str = "drop_oldest",
    bundle=None,
):
    """A :class:`LiveSession` on the camera twin looking at a synthetic video.

    Without ``bundle``: the 34-band prototype camera, with models fitted on the twin
    (:func:`~hyplex.pipeline.models.twin_models`). With ``bundle`` (a design bundle folder):
    the twin carries the bundle's filters and the bundle's decoders and open-set head decode
    it (:func:`~hyplex.viewer.bundle_twin.bundle_on_twin`), so the unknown view and share
    work without a camera. ``sensor_shape`` (rows, cols) and ``pitch_px`` (sensor pixels) as
    for the prototype; raises ValueError for a bundle that cannot run on the twin."""
    from hyplex.devices.sim_camera import SimulatedCamera
    from hyplex.pipeline.engine import Pipeline
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
    from hyplex.pipeline.models import twin_models
    from hyplex.pipeline.sources import CameraSource
    from hyplex.pipeline.stages import Preprocessor
    from hyplex.pipeline.types import PipelineConfig
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.video import make_video

    grid = prototype_grid()
    rows, cols = (int(v) for v in sensor_shape)
    if pitch_px is None:  # the prototype's pitch on a full sensor, 3 px on small ones
        pitch_px = 7.287 if min(rows, cols) >= 1000 else 3.0
    if bundle is not None:
        from hyplex.viewer.bundle_twin import bundle_on_twin

        twin = bundle_on_twin(bundle, (rows, cols), pitch_px, n_frames, frame_rate_hz, seed)
        pipeline = Pipeline(
            twin.preprocessor,
            twin.engine,
            PipelineConfig(policy=policy, raw_preview_px=min(cols, 640)),
        )
        source = CameraSource(twin.camera, policy="newest_only")
        return LiveSession(pipeline, source, twin.wavelengths_nm, twin.class_names)
    scene_shape = (
        (max(rows // 4, 16), max(cols // 4, 16)) if rows < 1000 else (rows // 20, cols // 20)
    )
    video = make_video(n_frames, scene_shape, grid, seed=seed)
    twin = default_camera(grid, (rows, cols), pitch_px=pitch_px)
    camera = SimulatedCamera(
        video, twin=twin, frame_rate_hz=frame_rate_hz, cycle_frames=min(n_frames, 8), seed=seed
    )
    preprocessor = Preprocessor(twin.encoder.layout, (rows, cols))
    models = twin_models(camera, video, preprocessor, frames=range(0, min(n_frames, 8), 2))
    engine = InferenceEngine(
        models.reconstructor,
        models.segmenter,
        config=InferenceConfig(input_scale_dn=models.input_scale_dn),
    )
    pipeline = Pipeline(
        preprocessor, engine, PipelineConfig(policy=policy, raw_preview_px=min(cols, 640))
    )
    source = CameraSource(camera, policy="newest_only")
    return LiveSession(pipeline, source, models.wavelengths_nm, models.class_names)
