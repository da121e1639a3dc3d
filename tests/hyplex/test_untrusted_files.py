"""Files a user hands in never run code (issue 20, "weights without pickle").

A ``torch.save``-d object whose ``__reduce__`` creates a marker file is handed to every command
that takes a file; each must fail with a clear message (exit code != 0, no traceback) and the
marker must not exist afterwards. Random bytes get a message too. The safetensors + JSON route
round-trips every decoder architecture and is what ``segment`` accepts; ``convert-weights``
turns one's own ``.pt`` into it. A source scan keeps unrestricted unpickling from coming back.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pathlib
import pickle
import time
import zipfile
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.models.reconstruction import build_reconstructor
from hyplex.models.segmentation import build_segmenter
from hyplex.pipeline.model_files import (
    ModelFileError,
    architectures,
    decoder_paths,
    load_decoder,
    save_decoder,
)
from hyplex.pipeline.models import PixelClassifier

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPE, PITCH = (64, 96), 3.0
RANDOM = np.random.default_rng(20).bytes(4096)  # "random bytes as a model file"


class Touch:
    """Unpickling this creates ``marker``: what a malicious model file would do."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class Shell:
    """The audit's variant: unpickling runs a shell command that writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture()
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a payload ran"


@pytest.fixture()
def evil(tmp_path, marker):
    """Malicious files under every name a command might expect."""
    torch.save({"state_dict": Touch(marker)}, tmp_path / "evil.pt")
    data = (tmp_path / "evil.pt").read_bytes()
    files = {"pt": tmp_path / "evil.pt"}
    torch.save(Shell(marker), tmp_path / "shell.pt", _use_new_zipfile_serialization=False)
    files["legacy"] = tmp_path / "shell.pt"  # a bare pickle stream, torch.save's old format
    for name in ("evil.safetensors", "evil.h5", "checkpoint.pt", "evil.pth", "evil.bin"):
        (tmp_path / name).write_bytes(data)
    pair = tmp_path / "pair"  # a valid config beside a pickle named .safetensors
    save_decoder(build_reconstructor("linear", n_filters=9, n_bands=34), pair)
    decoder_paths(pair)[0].write_bytes(data)
    files.update(
        safetensors=tmp_path / "evil.safetensors",
        h5=tmp_path / "evil.h5",
        pair_json=decoder_paths(pair)[1],
        pth=tmp_path / "evil.pth",
        pt2=_evil_pt2(tmp_path / "evil.pt2", marker),
    )
    return files


def _evil_pt2(path, marker):
    """A real torch.export program whose example inputs are replaced by the payload: torch
    2.13's ``torch.export.load`` falls back to unrestricted unpickling for them."""
    program = torch.export.export(nn.Conv2d(9, 4, 1), (torch.zeros(1, 9, 4, 4),))
    clean = path.with_name("clean.pt2")
    torch.export.save(program, clean)
    payload = io.BytesIO()
    torch.save(Touch(marker), payload)
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("sample_inputs/model.pt"):
                data = payload.getvalue()
            target.writestr(info, data)
    return path


def _squash(text: str) -> str:
    """``text`` without whitespace and box-drawing characters (a wrapped box, unwrapped)."""
    return "".join(c for c in text if not c.isspace() and c not in "│╭╮╰╯─")


def _refused(result, marker, *words):
    """Non-zero exit, a message (not a traceback) containing ``words``, no payload run."""
    text = result.output
    assert not marker.exists(), f"the payload ran: {text}"
    assert result.exit_code != 0, text
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"a traceback, not a message: {result.exception!r}\n{text}"
    )
    assert "Traceback" not in text
    flat = " ".join(text.replace("│", " ").split())
    for word in words:
        assert word in flat, f"{word!r} not in the message: {flat}"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 3-frame MONO12 recording, so that ``segment`` reaches the model files."""
    path = tmp_path_factory.mktemp("rec") / "clip.h5"
    rng = np.random.default_rng(0)
    with Recorder(path, StreamSpec(SHAPE, PixelFormat.MONO12)) as recorder:
        for i in range(3):
            data = rng.integers(0, 4095, SHAPE).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    return path


def _segment(recording, out, *options):
    arguments = ["segment", str(recording), "--out", str(out), "--pitch-px", str(PITCH)]
    return CliRunner().invoke(app, [*arguments, *options, "--no-video"])


# --------------------------------------------------------------------------- the payloads


def test_the_payloads_are_live(tmp_path):
    """Control: an unrestricted unpickler does run them, so a missing marker below means the
    commands did not unpickle, not that the payload is broken."""
    touched, shelled = tmp_path / "touched", tmp_path / "shelled"
    torch.save(Touch(touched), tmp_path / "a.pt")
    with zipfile.ZipFile(tmp_path / "a.pt") as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
        pickle.loads(archive.read(name))  # noqa: S301 - the point of the control
    assert touched.exists()
    pickle.loads(pickle.dumps(Shell(shelled)))  # noqa: S301
    assert shelled.exists()


@pytest.mark.skipif(not torch.__version__.startswith("2.13"), reason="checked on torch 2.13")
def test_torch_export_load_runs_a_crafted_pt2(tmp_path):
    """Why ``.pt2`` is refused (hyplex.pipeline.model_files): torch.export.load itself runs
    the payload of a crafted archive. If this starts failing, torch has closed the hole and
    the refusal can be revisited."""
    ran = tmp_path / "ran"
    path = _evil_pt2(tmp_path / "evil.pt2", ran)
    try:
        torch.export.load(path)
    except Exception:  # noqa: BLE001, S110 - it may fail after the payload has run
        pass
    assert ran.exists()


# --------------------------------------------------------------------------- every command


@pytest.mark.parametrize("option", ["--reconstructor", "--segmenter"])
@pytest.mark.parametrize("kind", ["pt", "legacy", "pt2", "safetensors", "pair_json", "pth"])
def test_segment_refuses_malicious_model_files(evil, marker, recording, tmp_path, option, kind):
    result = _segment(recording, tmp_path / "out", option, str(evil[kind]))
    _refused(result, marker, "NAME.safetensors + NAME.json", "convert-weights")
    assert not (tmp_path / "out" / "clip.labels.h5").exists()


def test_view_refuses_a_malicious_model_file(evil, marker):
    """``view`` loads model files for a real camera; the load fails before a camera is opened
    or a server started."""
    for kind in ("pt", "pt2"):
        result = CliRunner().invoke(
            app, ["view", "--camera", "opencv:0", "--reconstructor", str(evil[kind]), "--port", "0"]
        )
        _refused(result, marker, "NAME.safetensors + NAME.json", "convert-weights")


def test_view_loads_through_the_same_refusing_loader(evil, marker):
    from hyplex.pipeline.batch import SegmentJob, job_models

    for kind in ("pt", "legacy", "pt2", "safetensors"):
        job = SegmentJob(input="opencv:0", out_dir=".", segmenter=str(evil[kind]))
        with pytest.raises(ModelFileError, match="convert-weights"):
            job_models(job)


def _tiny_surrogate(path):
    from hyplex.optics.geometry import get_shape
    from hyplex.optics.surrogate import SpectralSurrogate, save_surrogate

    description = {
        "family": "disk",
        "parameter_names": list(get_shape("disk").parameter_names),
        "period_nm": 400.0,
        "material": "cSi",
        "substrate": "SiO2",
        "superstrate": "air",
        "wavelengths_nm": [500.0, 600.0, 700.0, 800.0],
    }
    p = len(description["parameter_names"])
    model = SpectralSurrogate(description, [20.0] * p + [50.0], [180.0] * p + [300.0], 8, 1, 4)
    return save_surrogate(model, path)


@pytest.fixture()
def target(tmp_path):
    path = tmp_path / "target.csv"
    path.write_text("wavelength_nm,T\n500,0.2\n600,0.5\n700,0.7\n")
    return path


@pytest.mark.parametrize("kind", ["pt", "legacy", "pt2", "safetensors", "weights_beside_json"])
def test_inverse_refuses_a_malicious_surrogate(evil, marker, target, tmp_path, kind):
    payload = evil["pt"].read_bytes()  # first: save_surrogate removes a stale evil.pt
    if kind == "weights_beside_json":  # a valid config with the payload as the old .pt weights
        weights, config = _tiny_surrogate(tmp_path / "sur")
        weights.unlink()
        config.with_suffix(".pt").write_bytes(payload)
        path, words = config, ["not a state dict of tensors", "restricted unpickler"]
    elif kind == "safetensors":  # evil.json beside a pickle named evil.safetensors
        weights, _ = _tiny_surrogate(tmp_path / "evil")
        weights.write_bytes(payload)
        path, words = weights, ["not a readable safetensors file"]
    else:
        path, words = evil[kind], ["--surrogate takes", "refused"]
    arguments = ["inverse", "--target", str(target), "--method", "surrogate"]
    result = CliRunner().invoke(app, [*arguments, "--surrogate", str(path)])
    _refused(result, marker, *words)


def test_inverse_takes_a_saved_surrogate_and_checks_it_fits(target, tmp_path):
    from hyplex.cli.inverse import _load_surrogate

    _, config = _tiny_surrogate(tmp_path / "sur")
    wavelengths = np.array([500.0, 600.0, 700.0])
    forward = _load_surrogate(config, wavelengths, "disk", 400.0, "cSi", "SiO2")
    designs = torch.tensor([[80.0, 150.0], [60.0, 120.0]])
    spectra = forward(designs)
    assert spectra.shape == (2, 3) and np.allclose(forward.wavelengths_nm, wavelengths)
    with pytest.raises(ValueError, match="family 'disk' \\(asked 'square'\\)"):
        _load_surrogate(config, wavelengths, "square", 400.0, "cSi", "SiO2")
    with pytest.raises(ValueError, match="not on the surrogate's grid"):
        _load_surrogate(config, [550.0], "disk", 400.0, "cSi", "SiO2")


def _fake_bundle(path, decoders=None, design=None):
    """A bundle directory that passes every check up to the part replaced by a payload."""
    from hyplex.models.bundle import FORMAT
    from hyplex.models.encoder_capture import CaptureSettings
    from hyplex.simulation.layout import MosaicLayout

    path.mkdir()
    wavelengths = np.linspace(420.0, 700.0, 8)
    classes = ["background", "real", "fake"]
    reconstructor = build_reconstructor("linear", n_filters=9, n_bands=8)
    segmenter = build_segmenter("unet", in_channels=9, n_classes=3, base_channels=4, depth=1)
    record = {
        "format": FORMAT,
        "format_version": 1,
        "wavelengths_nm": wavelengths.tolist(),
        "n_filters": 9,
        "encoder": {"kind": "design"},
        "layout": asdict(MosaicLayout()),
        "capture": CaptureSettings().to_dict(),
        "reconstructor": {"name": "linear", "config": reconstructor.config},
        "segmenter": {"name": "unet", "config": segmenter.config},
        "class_names": classes,
        "metrics": {},
    }
    (path / "bundle.json").write_text(json.dumps(record))
    (path / "config.json").write_text("{}")
    if design is None:
        np.savez(path / "design.npz", wavelengths_nm=wavelengths, responses=np.full((9, 8), 0.5))
    else:
        (path / "design.npz").write_bytes(design)
    if decoders is None:
        from safetensors.torch import save_file

        tensors = {f"reconstructor.{k}": v for k, v in reconstructor.state_dict().items()}
        tensors.update({f"segmenter.{k}": v for k, v in segmenter.state_dict().items()})
        save_file(tensors, path / "decoders.safetensors")
    else:
        (path / "decoders.safetensors").write_bytes(decoders)
    return path


@pytest.fixture()
def bundles(evil, marker, tmp_path):
    """A valid bundle, one whose decoders are the payload, one whose design.npz holds a
    pickled object array (``np.load`` without pickles refuses it)."""
    payload = evil["pt"].read_bytes()
    objects = io.BytesIO()
    np.savez(objects, wavelengths_nm=np.linspace(420.0, 700.0, 8),
             responses=np.array([Touch(marker)], dtype=object))  # fmt: skip
    return {
        "valid": _fake_bundle(tmp_path / "valid"),
        "decoders": _fake_bundle(tmp_path / "bad_decoders", decoders=payload),
        "design": _fake_bundle(tmp_path / "bad_design", design=objects.getvalue()),
    }


def test_the_fake_bundle_is_valid(bundles):
    from hyplex.models.bundle import load_bundle

    assert load_bundle(bundles["valid"]).segmenter.config["n_classes"] == 3


@pytest.mark.parametrize("part", ["decoders", "design"])
def test_refit_and_segment_refuse_a_malicious_bundle(bundles, evil, marker, recording, part):
    result = CliRunner().invoke(
        app, ["refit", "--design", str(bundles[part]), "--calibration", str(evil["h5"])]
    )
    _refused(result, marker, "decoders.safetensors" if part == "decoders" else "design.npz")
    result = _segment(recording, bundles[part].parent / "out", "--bundle", str(bundles[part]))
    _refused(result, marker, "FAILED", "BundleError")


def test_refit_refuses_a_malicious_calibration(bundles, evil, marker):
    result = CliRunner().invoke(app, _REFIT_CALIBRATION(bundles, evil))
    assert not marker.exists() and result.exit_code != 0, result.output
    assert "file signature not found" in f"{result.output} {result.exception}"


def _REFIT_CALIBRATION(bundles, evil):  # noqa: N802 - a command line, named like a constant
    return ["refit", "--design", str(bundles["valid"]), "--calibration", str(evil["h5"])]


@pytest.mark.parametrize("command", ["info", "plot"])
def test_library_refuses_a_malicious_file(evil, marker, command):
    result = CliRunner().invoke(app, ["library", command, str(evil["h5"])])
    _refused(result, marker, "not a readable HDF5 file")


def test_design_resume_refuses_a_malicious_checkpoint(evil, marker, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[codesign]\nencoder = "unconstrained"\nbands = 8\nwavelength_range_nm = [420.0, 700.0]\n'
        "scene_size = 16\nn_train_scenes = 1\nn_val_scenes = 1\nn_objects = 2\npatch_size = 16\n"
        'batch_size = 1\nsteps = 1\nfinetune_steps = 0\ndevice = "cpu"\n'
        "[codesign.reconstructor_config]\nwidth = 8\nn_blocks = 1\nn_stages = 1\n"
        "[codesign.segmenter_config]\nbase_channels = 4\ndepth = 1\n"
    )
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(evil["pt"].read_bytes())
    arguments = ["design", "--config", str(config), "--out", str(out), "--resume"]
    result = CliRunner().invoke(app, arguments)
    _refused(result, marker, "not a readable co-design checkpoint")


def _calibrate_commands(bundles, evil):
    return (
        ["calibrate", "--design", str(bundles["decoders"])],
        ["calibrate", "--resume", "--out", str(evil["h5"]), "--rows", "64", "--cols", "64",
         "--samples", "0"],
    )  # fmt: skip


def test_calibrate_refuses_a_malicious_design_and_resume_file(evil, marker, bundles):
    """calibrate reads --design (a bundle) and, with --resume, the partial --out: the payload
    never runs and the command fails naming the problem."""
    for arguments in _calibrate_commands(bundles, evil):
        result = CliRunner().invoke(app, arguments)
        assert not marker.exists() and result.exit_code != 0, result.output
        # Rich's error box wraps long paths mid-word at the terminal width: compare unboxed
        said = _squash(f"{result.output} {result.exception}")
        assert _squash("decoders.safetensors is corrupt") in said or (
            _squash("signature not found") in said
        ), said


def test_refit_and_calibrate_say_it_without_a_traceback(evil, marker, bundles):
    for arguments in (_REFIT_CALIBRATION(bundles, evil), *_calibrate_commands(bundles, evil)):
        _refused(CliRunner().invoke(app, arguments), marker)


def test_convert_weights_needs_trust_and_still_refuses_a_payload(evil, marker, tmp_path):
    out = tmp_path / "converted"
    result = CliRunner().invoke(app, ["convert-weights", str(evil["pt"]), str(out)])
    _refused(result, marker, "WARNING", "Unpickling a file can run any code", "--trust")
    for kind in ("pt", "legacy"):
        result = CliRunner().invoke(app, ["convert-weights", str(evil[kind]), str(out), "--trust"])
        _refused(result, marker, "outside the decoder classes hyplex can rebuild")
    result = CliRunner().invoke(app, ["convert-weights", str(evil["pt2"]), str(out), "--trust"])
    _refused(result, marker, "torch.export .pt2", "state_dict()")
    assert not any(p.exists() for p in decoder_paths(out))


# --------------------------------------------------------------------------- random bytes


def test_random_bytes_get_a_message_not_a_traceback(tmp_path, recording, target, marker):
    (tmp_path / "noise.pt").write_bytes(RANDOM)
    (tmp_path / "noise.safetensors").write_bytes(RANDOM)
    (tmp_path / "noise.json").write_bytes(RANDOM)
    weights, config = save_decoder(build_reconstructor("linear", n_filters=9, n_bands=4),
                                   tmp_path / "half")  # fmt: skip
    config.write_bytes(RANDOM)  # valid weights, a config of random bytes
    for path, words in (
        (tmp_path / "noise.pt", ["unrecognised bytes"]),
        (tmp_path / "noise.safetensors", ["unrecognised bytes"]),
        (weights, ["not a JSON decoder config"]),
    ):
        result = _segment(recording, tmp_path / "out", "--reconstructor", str(path))
        _refused(result, marker, *words)
    result = CliRunner().invoke(
        app, ["inverse", "--target", str(target), "--method", "surrogate", "--surrogate",
              str(tmp_path / "noise.json")],
    )  # fmt: skip
    _refused(result, marker, "not a JSON surrogate config")
    result = CliRunner().invoke(
        app, ["convert-weights", str(tmp_path / "noise.pt"), str(tmp_path / "o"), "--trust"]
    )
    _refused(result, marker, "convert-weights reads torch.save files")


# --------------------------------------------------------------------------- the safe route


def _decoders():
    torch.manual_seed(0)
    return {
        "linear": build_reconstructor("linear", n_filters=9, n_bands=12),
        "mst": build_reconstructor(
            "mst", in_channels=9, n_bands=12, width=8, n_blocks=1, n_stages=1
        ),  # fmt: skip
        "unet": build_segmenter("unet", in_channels=9, n_classes=4, base_channels=4, depth=1),
        "attention": build_segmenter("attention", in_channels=9, n_classes=4, width=8, depth=1),
        "pixel_classifier": PixelClassifier(9, 4, hidden=8),
        # the real-time profile (hyplex.models.realtime)
        "separable_projector": build_reconstructor(
            "separable_projector", in_channels=9, n_bands=12, width=8
        ),
        "separable": build_segmenter("separable", in_channels=9, n_classes=4, width=8),
        # the conditional flow (hyplex.models.restoration): its forward is the z = 0 decode
        "flow": build_reconstructor(
            "flow", in_channels=9, n_bands=12, width=8, hidden=8, n_blocks=1
        ),
    }


def test_every_architecture_round_trips_through_safetensors_and_json(tmp_path):
    decoders = _decoders()
    assert set(decoders) == set(architectures())
    probe = torch.rand(2, 9, 12, 10, generator=torch.Generator().manual_seed(1))
    for name, module in decoders.items():
        for parameter in module.parameters():  # not the initial values a fresh build has
            parameter.data.add_(0.01 * torch.randn_like(parameter))
        weights, config = save_decoder(module.eval(), tmp_path / name)
        assert json.loads(config.read_text())["name"] == name
        for given in (weights, config, weights.with_suffix("")):
            back = load_decoder(given, architectures()[name][0])
            assert type(back) is type(module) and not back.training
            with torch.no_grad():
                assert torch.equal(back(probe), module(probe)), name
    with pytest.raises(ModelFileError, match="exist"):
        save_decoder(decoders["linear"], tmp_path / "linear")
    with pytest.raises(ModelFileError, match="describes a segmenter"):
        load_decoder(tmp_path / "unet.json", "reconstructor")


def test_a_config_cannot_ask_for_more_than_the_file_holds(tmp_path):
    weights, config = save_decoder(build_reconstructor("linear", n_filters=9, n_bands=4),
                                   tmp_path / "small")  # fmt: skip
    record = json.loads(config.read_text())
    for change, words in (
        ({"config": {"n_filters": 9, "n_bands": 10**9}}, "n_bands = 1000000000 is more than"),
        ({"config": {"n_filters": 9, "n_bands": 60_000}}, "shape"),  # under the caps: meta
        ({"name": "os.system"}, "not a known architecture"),
        ({"config": {"n_filters": 9, "n_bands": 4, "evil": 1}}, "does not build"),
        ({"role": "segmenter"}, "does not fit architecture"),
        ({"format_version": 2}, "format_version 2"),
    ):
        config.write_text(json.dumps({**record, **change}))
        with pytest.raises(ModelFileError, match=words):
            load_decoder(weights)


def test_a_structural_config_is_refused_before_anything_is_built(tmp_path):
    """Counts of repeated modules are capped before the meta build (which holds no storage
    but still makes every module: 10,000 MST stages took 84 s and 2.6 GB), and a U-Net
    depth that overflows its 2**depth channels is a clear error, not a traceback."""
    mst = build_reconstructor("mst", in_channels=9, n_bands=4, width=8, n_blocks=1, n_stages=1)
    weights, config = save_decoder(mst, tmp_path / "mst")
    record = json.loads(config.read_text())
    config.write_text(json.dumps(record | {"config": record["config"] | {"n_stages": 10**6}}))
    began = time.perf_counter()
    with pytest.raises(ModelFileError, match="n_stages = 1000000 is more than 64"):
        load_decoder(weights)
    assert time.perf_counter() - began < 5.0
    unet = build_segmenter("unet", in_channels=9, n_classes=3, base_channels=4, depth=1)
    weights, config = save_decoder(unet, tmp_path / "unet")
    record = json.loads(config.read_text())
    config.write_text(json.dumps(record | {"config": record["config"] | {"depth": 200}}))
    with pytest.raises(ModelFileError, match="depth = 200 is more than 12"):
        load_decoder(weights)
    huge = record["config"] | {"base_channels": 2**16, "depth": 12}  # under the caps: meta
    config.write_text(json.dumps(record | {"config": huge}))
    with pytest.raises(ModelFileError, match="does not build|do not fit"):
        load_decoder(weights)


def test_convert_weights_then_segment(tmp_path, recording):
    """One's own torch.save files -> safetensors + JSON -> accepted by segment."""
    torch.manual_seed(0)
    reconstructor = build_reconstructor("linear", n_filters=9, n_bands=6)
    torch.save(reconstructor, tmp_path / "rec.pt")  # a whole module
    segmenter = PixelClassifier(9, 3, hidden=8)
    torch.save(segmenter.state_dict(), tmp_path / "seg.pt")  # a state dict
    runner = CliRunner()
    result = runner.invoke(app, ["convert-weights", str(tmp_path / "rec.pt"),
                                 str(tmp_path / "rec"), "--trust"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "max output difference 0.0e+00" in result.output
    result = runner.invoke(app, ["convert-weights", str(tmp_path / "seg.pt"),
                                 str(tmp_path / "seg"), "--trust"])  # fmt: skip
    assert result.exit_code != 0 and "--name" in result.output
    arguments = ["convert-weights", str(tmp_path / "seg.pt"), str(tmp_path / "seg"), "--trust"]
    arguments += ["--name", "pixel_classifier", "--config", json.dumps(segmenter.config)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    twin = nn.Conv2d(9, 6, 1)  # what hyplex.pipeline.models.fit_linear_reconstructor returns
    torch.save(twin, tmp_path / "twin.pt")
    result = runner.invoke(app, ["convert-weights", str(tmp_path / "twin.pt"),
                                 str(tmp_path / "twin.json"), "--trust"])  # fmt: skip
    assert result.exit_code == 0 and "LinearDecoder" in result.output, result.output

    out = tmp_path / "out"
    result = _segment(recording, out, "--reconstructor", str(tmp_path / "rec.safetensors"),
                      "--segmenter", str(tmp_path / "seg.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    from hyplex.pipeline.outputs import read_decoded

    stored = read_decoded(out / "clip.labels.h5")
    assert stored["cube"].shape[-1] == 6 and stored["labels"].max() < 3


# --------------------------------------------------------------------------- the source tree

PACKAGES = ("optics", "simulation", "models", "devices", "calibration", "hyplex", "benchmarks")


def _sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_unrestricted_unpickling_in_the_source_tree():
    """No ``weights_only`` switched off, no ``allow_pickle`` switched on (as text: in code,
    docstrings or comments), and by AST: every ``torch.load`` passes ``weights_only=True``,
    no ``np.load`` allows pickles, and nothing calls ``pickle.load(s)``, ``torch.jit.load``,
    ``torch.export.load`` or imports ``dill``."""
    banned_text = ("weights_only" + "=False", "allow_pickle" + "=True")
    banned_calls = {("pickle", "load"), ("pickle", "loads"), ("jit", "load"), ("export", "load")}
    problems = []
    sources = list(_sources())
    assert len(sources) > 100 and ROOT / "hyplex" / "pipeline" / "model_files.py" in sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        problems += [f"{where}: {word}" for word in banned_text if word in text.replace(" ", "")]
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] == "dill" for n in names):
                    problems.append(f"{where}:{node.lineno}: imports dill")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            call = (owner_name, node.func.attr)
            keywords = {k.arg: k.value for k in node.keywords}
            if call in banned_calls:
                problems.append(f"{where}:{node.lineno}: {'.'.join(call)}")
            if call == ("torch", "load"):
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if call in {("np", "load"), ("numpy", "load")} and "allow_pickle" in keywords:
                value = keywords["allow_pickle"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}:{node.lineno}: np.load with allow_pickle")
    assert not problems, "\n".join(problems)
