"""Library selection by class separability (hyplex.models.encoder.separability_selection) and
the co-design option that uses it (``CodesignConfig(selection="separability")``)."""

import numpy as np
import pytest
import torch

from hyplex.models.codesign import select_by_separability, train_codesign
from hyplex.models.codesign_config import CodesignConfig
from hyplex.models.encoder import LibrarySelectionEncoder, separability_selection
from hyplex.models.encoder_capture import CameraCapture

torch.set_num_threads(1)
GRID = np.linspace(420.0, 700.0, 10)


def _notch_scenes(differences, seed=0, size=12, texture=0.01):
    """Scenes of classes whose spectra are a flat 0.5 plus ``differences[c]`` (a dict band ->
    offset), one class per image column block: cubes ``(S, L, H, W)``, labels ``(S, H, W)``."""
    rng = np.random.default_rng(seed)
    n_classes = len(differences)
    labels = np.repeat(np.arange(n_classes), size // n_classes + 1)[:size]
    labels = np.broadcast_to(labels, (2, size, size)).copy()
    cubes = 0.5 + texture * rng.standard_normal((2, GRID.size, size, size))
    for label, offsets in enumerate(differences):
        for band, offset in offsets.items():
            cubes[:, band][labels == label] += offset
    return torch.as_tensor(cubes, dtype=torch.float32), torch.as_tensor(labels)


def _bandpasses():
    """One narrow band-pass per band (0.9 in its band, 0.05 elsewhere) and a flat 0.9."""
    filters = np.full((GRID.size, GRID.size), 0.05)
    np.fill_diagonal(filters, 0.9)
    return np.vstack([filters, np.full(GRID.size, 0.9)])


def test_picks_the_band_that_tells_a_metamer_apart():
    # two classes equal but in band 7: the flat filter (brightest, most signal) cannot tell them
    # apart, the band-7 band-pass can
    cubes, labels = _notch_scenes([{}, {7: 0.1}])
    chosen = separability_selection(_bandpasses(), CameraCapture(GRID), cubes, labels, 1)
    assert chosen.tolist() == [7]


def test_second_filter_complements_the_first():
    # A/B differ in band 3 only, A/C in band 7 only: two filters must be {3, 7}; a criterion
    # that scores each filter on its own (or the summed between-class scatter) takes the
    # stronger band twice or its neighbour
    cubes, labels = _notch_scenes([{}, {3: 0.12}, {7: 0.06}])
    chosen = separability_selection(_bandpasses(), CameraCapture(GRID), cubes, labels, 2)
    assert sorted(chosen.tolist()) == [3, 7]


def test_duplicates_only_when_allowed():
    # one informative band and no texture (only sensor noise): without ``distinct`` its
    # second copy (independent noise) is the best second filter; with it, another design
    cubes, labels = _notch_scenes([{}, {5: 0.02}], texture=0.0)
    candidates, capture = _bandpasses(), CameraCapture(GRID)
    assert separability_selection(candidates, capture, cubes, labels, 2).tolist() == [5, 5]
    distinct = separability_selection(candidates, capture, cubes, labels, 2, distinct=True)
    assert distinct[0] == 5 and distinct[1] != 5


def test_is_deterministic_and_validates_input():
    cubes, labels = _notch_scenes([{}, {3: 0.1}, {7: 0.1}])
    capture = CameraCapture(GRID)
    first = separability_selection(_bandpasses(), capture, cubes, labels, 3, seed=4)
    assert first.tolist() == separability_selection(_bandpasses(), capture, cubes, labels, 3,
                                                    seed=4).tolist()  # fmt: skip
    with pytest.raises(ValueError, match=r"candidates must be \(N, L=10\)"):
        separability_selection(_bandpasses()[:, :5], capture, cubes, labels, 3)
    with pytest.raises(ValueError, match="labels must be"):
        separability_selection(_bandpasses(), capture, cubes, labels[:, :4], 3)
    with pytest.raises(ValueError, match="two classes"):
        separability_selection(_bandpasses(), capture, cubes, torch.zeros_like(labels), 3)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from hyplex.models.codesign_library import quick_library

    return quick_library(tmp_path_factory.mktemp("lib") / "lib.h5", count=32)


def test_fix_selection_hardens_onto_given_designs(library):
    encoder = LibrarySelectionEncoder(library, GRID, 3, CameraCapture(GRID))
    design = encoder.fix_selection([4, 4, 9])
    assert encoder.hardened and not encoder.logits.requires_grad
    assert np.allclose(design["responses"], encoder.library_spectra[[4, 4, 9]].double().numpy())
    assert design["library_indices"].tolist() == encoder.library_index[[4, 4, 9]].tolist()
    with pytest.raises(ValueError, match=r"3 indices in \[0, 32\)"):
        LibrarySelectionEncoder(library, GRID, 3).fix_selection([0, 1, 32])


def test_codesign_with_separability_selection_trains_on_the_chosen_designs(library, tmp_path):
    config = CodesignConfig(
        bands=8, wavelength_range_nm=(420.0, 700.0), scene_size=24, n_train_scenes=3,
        n_val_scenes=2, n_objects=3, patch_size=16, batch_size=4, steps=6, finetune_steps=2,
        checkpoint_every=6, reconstructor="linear", reconstructor_config={},
        segmenter_config={"base_channels": 4, "depth": 1}, device="cpu",
        selection="separability", evaluate_initial=False,
    )  # fmt: skip
    result = train_codesign(config, None, library=library, progress=False, scene_cache=tmp_path)
    encoder = result.model.encoder
    # the designs are the separability choice on the training scenes, untouched by training
    from hyplex.models.codesign import build_encoder, scene_options
    from hyplex.models.data import generate_scenes

    train = generate_scenes(config.wavelengths_nm, 3, config.seed,
                            **scene_options(config, tmp_path))  # fmt: skip
    fresh = build_encoder(config, config.wavelengths_nm, train, library)
    expected = select_by_separability(fresh, config, train)["library_indices"]
    assert result.design["library_indices"].tolist() == expected.tolist()
    assert encoder.logits.grad is None  # never trained: chosen before the first step
    assert result.metrics["relaxed"] == result.metrics["hardened"]
    assert np.isfinite(result.metrics["final"]["miou"])


def test_config_rejects_an_unknown_selection():
    with pytest.raises(ValueError, match="selection must be one of"):
        CodesignConfig(selection="random")


def test_hyplex_design_takes_the_selection_from_its_config(library, tmp_path):
    import typer
    from typer.testing import CliRunner

    from hyplex.cli.design import register
    from hyplex.models.bundle import load_bundle
    from hyplex.optics.library import write_library

    application = typer.Typer()
    register(application)
    application.command()(lambda: None)  # a second command keeps "design" a subcommand
    path = tmp_path / "lib.h5"
    write_library(path, library)
    config = tmp_path / "tiny.toml"
    config.write_text(
        'selection = "separability"\nbands = 8\nwavelength_range_nm = [420.0, 700.0]\n'
        "scene_size = 24\nn_train_scenes = 2\nn_val_scenes = 1\nn_objects = 3\n"
        'patch_size = 16\nbatch_size = 2\nsteps = 2\nfinetune_steps = 1\ndevice = "cpu"\n'
        'reconstructor = "linear"\nreconstructor_config = {}\n'
        "segmenter_config = {base_channels = 4, depth = 1}\n"
    )
    out = tmp_path / "run"
    arguments = ["design", "--config", str(config), "--library", str(path), "--out", str(out)]
    result = CliRunner().invoke(application, arguments)
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out / "bundle")
    assert bundle.config["selection"] == "separability"
    assert bundle.design["library_indices"].shape == (9,)
