"""The live viewer in a real headless browser (Debian chromium + chromedriver, Selenium), its
HTTP endpoints over uvicorn, and its answers to bad queries (FastAPI's TestClient).

The browser test is skipped when chromium or chromedriver (apt: ``chromium chromium-driver``)
or selenium are not installed; the module when fastapi or uvicorn are not.
"""

import itertools
import shutil
import time

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
# a web server and a headless browser: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(180)

try:
    from selenium import webdriver
except ImportError:
    webdriver = None

from hyplex.pipeline import Pipeline, PipelineConfig  # noqa: E402
from hyplex.pipeline.inference import InferenceConfig, InferenceEngine  # noqa: E402
from hyplex.pipeline.stages import Preprocessor  # noqa: E402
from hyplex.simulation.layout import MosaicLayout  # noqa: E402
from hyplex.viewer import LiveSession, ViewerServer, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if shutil.os.path.exists("/usr/bin/chromedriver") else None
)
SHAPE = (120, 160)
N_BANDS = 34

needs_browser = pytest.mark.skipif(
    webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs selenium, Debian chromium and chromium-driver (apt-get install chromium "
    "chromium-driver)",
)


def _moving_frames(layout: MosaicLayout):
    """An endless stream: a bright square moving over noise, ~20 frames per second."""
    rng = np.random.default_rng(0)
    for t in itertools.count():
        frame = rng.integers(800, 1200, SHAPE, dtype=np.uint16)
        top, left = (5 * t) % 80, (7 * t) % 120
        frame[top : top + 40, left : left + 40] += 2000
        time.sleep(0.05)
        yield frame


@pytest.fixture(scope="module")
def viewer():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layout = MosaicLayout.fit(SHAPE, pitch_px=3.0)
    reconstructor = nn.Conv2d(9, N_BANDS, 1)
    segmenter = nn.Conv2d(9, 4, 1)
    with torch.no_grad():  # a segmenter that follows the brightness, so the overlay moves
        segmenter.weight.zero_()
        segmenter.weight[:, :, 0, 0] = torch.linspace(-1, 1, 4)[:, None]
        segmenter.bias.copy_(torch.tensor([1.5, 0.5, -0.5, -1.5]))
    engine = InferenceEngine(reconstructor, segmenter, config=InferenceConfig(input_scale_dn=1e3))
    pipeline = Pipeline(
        Preprocessor(layout, SHAPE),
        engine,
        PipelineConfig(policy="drop_oldest", raw_preview_px=SHAPE[1]),
    )
    wavelengths = np.linspace(400.0, 730.0, N_BANDS)
    session = LiveSession(pipeline, _moving_frames(layout), wavelengths, ["a", "b", "c", "d"])
    session.start()
    server = ViewerServer(session, port=0).start()
    assert session.wait_newer(0, 30.0), f"no frame decoded: {session.status()['error']}"
    yield server
    server.stop()
    session.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    yield driver
    driver.quit()


def _wait(predicate, timeout=10.0, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


IMAGE_HASH_JS = """
const img = document.getElementById(arguments[0]);
if (!img.complete || img.naturalWidth === 0) return null;
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const context = canvas.getContext('2d');
context.drawImage(img, 0, 0);
const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
let hash = 0;
for (let i = 0; i < data.length; i += 7) hash = (hash * 31 + data[i]) >>> 0;
return [canvas.width, canvas.height, hash];
"""


@needs_browser
def test_page_streams_frames_and_shows_spectrum_on_click(viewer, browser):
    from selenium.webdriver.common.by import By

    browser.get(viewer.url + "/")
    assert "hyplex live viewer" in browser.title
    counter = browser.find_element(By.ID, "frame-count")
    first = _wait(lambda: int(counter.text or 0), message="the frame counter to start")
    _wait(lambda: int(counter.text) > first + 3, message="the frame counter to increase")
    assert float(browser.find_element(By.ID, "fps").text) > 0

    # the MJPEG images load and change from frame to frame
    for image_id in ("raw", "cube", "overlay"):
        _wait(lambda i=image_id: browser.execute_script(IMAGE_HASH_JS, i), message=image_id)
    raw = browser.execute_script(IMAGE_HASH_JS, "raw")
    assert raw[:2] == [SHAPE[1], SHAPE[0]]
    overlay_hash = browser.execute_script(IMAGE_HASH_JS, "overlay")
    _wait(
        lambda: browser.execute_script(IMAGE_HASH_JS, "overlay")[2] != overlay_hash[2],
        message="the overlay to change",
    )
    _wait(
        lambda: browser.execute_script(IMAGE_HASH_JS, "raw")[2] != raw[2],
        message="the raw frame to change",
    )

    # a click on the overlay fetches and draws that metapixel's spectrum
    overlay = browser.find_element(By.ID, "overlay")
    browser.execute_script("arguments[0].scrollIntoView();", overlay)
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element_with_offset(overlay, 10, 10).click().perform()
    info = browser.find_element(By.ID, "spectrum-info")
    _wait(lambda: "metapixel" in info.text, message="the spectrum to be shown")
    assert f"{N_BANDS} bands" in info.text
    points = browser.find_element(By.ID, "spectrum-line").get_attribute("points").split()
    assert len(points) == N_BANDS
    # the click landed right of and below the centre: the metapixel says so
    row, col = (int(v) for v in info.text.split("(")[1].split(")")[0].split(","))
    h, w = viewer.session.latest.labels.shape
    assert h // 2 <= row < h and w // 2 <= col < w


def test_status_and_spectrum_endpoints(viewer):
    import httpx

    status = httpx.get(viewer.url + "/api/status", timeout=5).json()
    assert status["frames"] > 0 and status["n_bands"] == N_BANDS and status["error"] is None
    h, w = status["shape"]
    spectrum = httpx.get(viewer.url + "/api/spectrum", params={"row": 1, "col": 2}).json()
    assert len(spectrum["values"]) == N_BANDS and spectrum["label"] in range(4)
    outside = httpx.get(viewer.url + "/api/spectrum", params={"row": h, "col": 0})
    assert outside.status_code == 400 and "outside" in outside.text
    assert httpx.get(viewer.url + "/stream/nope").status_code == 400
    jpeg = httpx.get(viewer.url + "/frame/overlay.jpg")
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"


@pytest.fixture(scope="module")
def client():
    """TestClient over a LiveSession that decoded three frames and stopped (its latest frame
    stays), so every answer is deterministic."""
    from fastapi.testclient import TestClient

    torch.set_num_threads(1)
    torch.manual_seed(1)
    layout = MosaicLayout.fit(SHAPE, pitch_px=3.0)
    engine = InferenceEngine(
        nn.Conv2d(9, N_BANDS, 1), nn.Conv2d(9, 4, 1), config=InferenceConfig(input_scale_dn=1e3)
    )
    pipeline = Pipeline(
        Preprocessor(layout, SHAPE), engine, PipelineConfig(raw_preview_px=SHAPE[1])
    )
    rng = np.random.default_rng(1)
    frames = [rng.integers(800, 1200, SHAPE, dtype=np.uint16) for _ in range(3)]
    wavelengths = np.linspace(400.0, 730.0, N_BANDS)
    session = LiveSession(pipeline, iter(frames), wavelengths, ["a", "b", "c", "d"]).start()
    assert session.wait_newer(0, 60.0), f"no frame decoded: {session.status()['error']}"
    with TestClient(create_app(session)) as test_client:  # a 500 would raise here
        yield test_client
    session.stop()


@pytest.mark.parametrize(
    ("url", "named", "expected"),
    [
        ("/frame/band.jpg?band=-1", "band=-1", f"expected 0..{N_BANDS - 1}"),
        (f"/frame/band.jpg?band={N_BANDS}", f"band={N_BANDS}", f"expected 0..{N_BANDS - 1}"),
        ("/frame/rgb.jpg?band=100000", "band=100000", "outside"),
        ("/frame/band.jpg?band=abc", "band='abc'", "integer"),
        ("/frame/nope.jpg", "'nope'", "expected one of"),
        ("/stream/band?band=-5", "band=-5", f"expected 0..{N_BANDS - 1}"),
        ("/stream/nope", "'nope'", "expected one of"),
        ("/api/spectrum?row=-1&col=0", "(-1, 0)", "outside"),
        ("/api/spectrum?row=0&col=100000", "(0, 100000)", "outside"),
        ("/api/spectrum?row=x&col=0", "row='x'", "integer"),
        ("/api/spectrum?row=1", "col=None", "required"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_value(client, url, named, expected):
    response = client.get(url)
    assert response.status_code == 400, (url, response.status_code, response.text)
    detail = response.json()["detail"]
    assert named in detail and expected in detail, detail


def test_good_queries_still_answer(client):
    jpeg = client.get(f"/frame/band.jpg?band={N_BANDS - 1}")
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"
    assert client.get("/frame/overlay.jpg").status_code == 200
    spectrum = client.get("/api/spectrum", params={"row": 0, "col": 0}).json()
    assert len(spectrum["values"]) == N_BANDS


@pytest.fixture(scope="module")
def bundle_with_head(tmp_path_factory):
    """The tiny co-designed bundle with an energy open-set head (no training: seconds)."""
    from tiny_bundles import tiny_bundle
    from typer.testing import CliRunner

    from hyplex.cli.app import app

    bundle = tiny_bundle(tmp_path_factory)
    args = ["openset", "fit", "--bundle", str(bundle), "--method", "energy", "--quick"]
    result = CliRunner().invoke(app, args, env={"HYPLEX_THREADS": "1"})
    assert result.exit_code == 0, result.output
    return bundle


def test_sim_camera_with_a_bundle_shows_its_unknown_map_and_share(bundle_with_head):
    """``--camera sim --bundle B``: the twin carries B's filters, B's decoders and open-set
    head decode it, and the status reports the head's unknown share."""
    from hyplex.models.bundle import load_bundle
    from hyplex.viewer.server import simulated_session

    torch.set_num_threads(1)
    bundle = load_bundle(bundle_with_head)
    session = simulated_session(sensor_shape=SHAPE, bundle=bundle_with_head)
    engine = session.pipeline.engine
    assert engine.openset is not None and engine.openset.method == "energy"
    white = np.asarray(engine.config.input_scale_dn)  # a white level per filter, DN
    assert white.shape == (bundle.responses.shape[0],) and (white > 0).all()
    session.start()
    try:
        assert session.wait_newer(0, 60.0), f"no frame decoded: {session.status()['error']}"
        status = session.status()
        assert status["error"] is None
        assert status["unknown_share"] is not None and 0.0 <= status["unknown_share"] <= 1.0
        assert status["class_names"] == list(bundle.class_names)
        unknown = session.latest.unknown
        assert unknown.shape == session.latest.labels.shape and np.isfinite(unknown).all()
        assert session.image("unknown") is not None
    finally:
        session.stop()


def test_view_command_serves_a_bundle_on_the_sim_camera(bundle_with_head, tmp_path):
    import json

    from typer.testing import CliRunner

    from hyplex.cli.app import app

    runner = CliRunner()
    args = ["view", "--camera", "sim", "--sim-shape", "120x160", "--port", "0"]
    result = runner.invoke(
        app, [*args, "--bundle", str(bundle_with_head), "--seconds", "6"], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["frames"] > 0 and status["error"] is None
    assert status["unknown_share"] is not None
    nothing = ["--bundle", str(tmp_path / "nothing"), "--seconds", "0"]
    missing = runner.invoke(app, [*args, *nothing], env={"COLUMNS": "400"})
    assert missing.exit_code == 2 and "no such bundle folder" in missing.output


def test_the_viewer_ignores_a_real_fake_head_it_never_shows(bundle_with_head, tmp_path):
    """The viewer shows no fake map, so a bundle's real/fake head, even a broken one, is not
    loaded: the session starts where ``hyplex segment --fake`` would refuse the head."""
    import shutil

    from hyplex.models.pretraining.realfake_files import REALFAKE_JSON
    from hyplex.viewer.server import simulated_session

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_with_head, copy)
    (copy / REALFAKE_JSON).write_text("{not json")
    session = simulated_session(sensor_shape=SHAPE, bundle=copy)
    assert session.pipeline.engine.openset is not None
