"""Differentiable, realizable encoders (hyplex.models.encoder) and their noisy capture."""

import numpy as np
import pytest
import torch

from hyplex.models.encoder import (
    LibrarySelectionEncoder,
    SurrogateGeometryEncoder,
    UnconstrainedEncoder,
    identity_encoder,
    library_responses,
    nearest_library_designs,
    pca_target_encoder,
    pca_target_responses,
    resample_matrix,
    rgb_encoder,
    temperature_schedule,
)
from hyplex.models.encoder_capture import CameraCapture, CaptureSettings
from hyplex.models.metrics import mrae_loss
from hyplex.models.reconstruction import LinearDecoder
from hyplex.optics.library import LibraryError
from hyplex.optics.surrogate import SpectralSurrogate, describe

torch.set_num_threads(1)
GRID = np.linspace(420.0, 700.0, 10)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A real (RCWA) library of 32 silicon rectangles at low order (~1 s)."""
    from hyplex.models.codesign_library import quick_library

    return quick_library(tmp_path_factory.mktemp("lib") / "lib.h5", count=32)


@pytest.fixture(scope="module")
def capture():
    return CameraCapture(GRID)


def _cube(seed=0, batch=2, size=8):
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.rand(batch, 3, size, size, generator=generator)
    basis = torch.linspace(0, 1, GRID.size)
    spectra = torch.stack([0.2 + 0.5 * basis, 0.7 - 0.5 * basis, 0.4 + 0.3 * basis**2])
    return torch.einsum("bkhw,kl->blhw", smooth / smooth.sum(1, keepdim=True), spectra)


def _surrogate(library):
    box_low = np.append(library.params_nm.min(0), library.thickness_nm.min())
    box_high = np.append(library.params_nm.max(0), library.thickness_nm.max())
    return SpectralSurrogate(describe(library), box_low, box_high, hidden=16, blocks=1,
                             fourier_features=4)  # fmt: skip


def test_library_gradients_reach_selection_logits(library, capture):
    encoder = LibrarySelectionEncoder(library, GRID, 9, capture, temperature=0.5).train()
    decoder = LinearDecoder(9, GRID.size)
    cube = _cube()
    barcodes = encoder(cube, torch.Generator().manual_seed(1))
    assert barcodes.shape == (2, 9, 8, 8)
    mrae_loss(decoder(barcodes), cube).backward()
    grad = encoder.logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad.abs().sum(1) > 0).all(), "every filter's selection logits get a gradient"


def test_surrogate_gradients_reach_geometry_and_stay_in_bounds(library, capture):
    surrogate = _surrogate(library)
    encoder = SurrogateGeometryEncoder(surrogate, GRID, 9, capture, seed=3)
    geometry = encoder.geometry_nm()
    low, high = surrogate.low, surrogate.low + surrogate.span
    assert geometry.shape == (9, 3) and (geometry >= low).all() and (geometry <= high).all()
    cube = _cube()
    decoder = LinearDecoder(9, GRID.size)
    mrae_loss(decoder(encoder(cube, torch.Generator().manual_seed(0))), cube).backward()
    grad = encoder.latent.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad.abs().sum(1) > 0).all()
    assert all(p.grad is None for p in surrogate.parameters()), "the surrogate stays frozen"


def test_refine_with_rcwa_matches_the_library_solver(library, capture):
    from hyplex.optics.library import SolverSettings
    from hyplex.optics.library_spec import LibrarySpec, solve_designs

    encoder = SurrogateGeometryEncoder(_surrogate(library), GRID, 2, capture, seed=1)
    result = encoder.refine_with_rcwa(harmonics=1, grid=(32, 32), factorization="li")
    geometry = encoder.geometry_nm().detach().double().numpy()
    spec = LibrarySpec.from_library(library)  # the library's stack, at the refine's settings
    solver = SolverSettings(harmonics=(1, 1), grid=(32, 32), factorization="li")
    T, _ = solve_designs(spec, geometry[:, :-1], geometry[:, -1], solver=solver)  # noqa: N806
    expected = np.clip(T.mean(-1) @ resample_matrix(library.wavelengths_nm, GRID), 0, 1)
    np.testing.assert_allclose(result["responses"], expected, atol=2e-4)
    torch.testing.assert_close(encoder.responses().double(), torch.as_tensor(expected),
                               atol=2e-4, rtol=0)  # fmt: skip
    assert encoder.design()["refined_with_rcwa"]


def test_hardening_matches_the_relaxed_encoder_at_low_temperature(library, capture):
    """Stated tolerance: at tau = 1e-3 with logits separated by >= 0.05 the relaxed
    responses equal the hardened ones to 1e-6 (the softmax is one-hot to exp(-50))."""
    encoder = LibrarySelectionEncoder(library, GRID, 9, capture, gumbel=True, seed=2)
    with torch.no_grad():
        encoder.logits.copy_(torch.randn(encoder.logits.shape, generator=torch.Generator()
                                         .manual_seed(5)) * 3)  # fmt: skip
        top2 = encoder.logits.topk(2).values
    assert ((top2[:, 0] - top2[:, 1]) >= 0.05).all()
    encoder.set_temperature(1e-3)
    encoder.eval()
    cube = _cube()
    relaxed = encoder.responses().detach()
    relaxed_barcodes = encoder(cube, noise=False).detach()
    design = encoder.harden()
    torch.testing.assert_close(encoder.responses(), relaxed, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoder(cube, noise=False), relaxed_barcodes, atol=1e-6, rtol=0)
    rows = design["library_indices"]
    np.testing.assert_array_equal(design["params_nm"], library.params_nm[rows])
    spectra, _ = library_responses(library, GRID)
    np.testing.assert_allclose(design["responses"], spectra[rows], atol=1e-6)


def test_gumbel_samples_follow_the_softmax_of_the_logits(library, capture):
    """Gumbel-max: the argmax of the relaxed weights at tau = 1 is a draw from
    softmax(logits). 20 000 draws over ~32 designs; Pearson chi-square below its 99.9 %
    quantile (deterministic seed; a sign error in the noise gives chi-square ~ 10^4)."""
    from scipy.stats import chi2

    encoder = LibrarySelectionEncoder(library, GRID, 500, capture, gumbel=True).train()
    n_designs = encoder.logits.shape[1]
    logits = torch.linspace(1.5, -1.5, n_designs)
    with torch.no_grad():
        encoder.logits.copy_(logits.expand_as(encoder.logits))
    encoder.set_temperature(1.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = torch.cat([encoder.selection_weights(generator).argmax(-1) for _ in range(40)])
    counts = np.bincount(draws.numpy(), minlength=n_designs)
    expected = torch.softmax(logits.double(), 0).numpy() * draws.numel()
    assert expected.min() > 5, "every design expected often enough for chi-square"
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.ppf(0.999, n_designs - 1), (statistic, counts, expected.round())


def test_distinct_hardening_and_temperature(library, capture):
    encoder = LibrarySelectionEncoder(library, GRID, 9, capture)
    with torch.no_grad():
        encoder.logits.zero_()
        encoder.logits[:, 7] = 5.0  # every filter prefers design 7
    indices = encoder.harden(distinct=True)["library_indices"]
    assert len(set(indices.tolist())) == 9
    with pytest.raises(ValueError, match="temperature must be"):
        encoder.set_temperature(0.0)
    assert temperature_schedule(0, 100, 1.0, 0.01) == pytest.approx(1.0)
    assert temperature_schedule(50, 100, 1.0, 0.01) == pytest.approx(0.1)
    assert temperature_schedule(100, 100, 1.0, 0.01) == pytest.approx(0.01)


def test_library_grid_checks(library, capture):
    with pytest.raises(LibraryError, match="mismatched wavelength grids"):
        LibrarySelectionEncoder(library, GRID, 9, capture, resample_spectra=False)
    with pytest.raises(LibraryError, match="cannot resample"):
        library_responses(library, np.linspace(420.0, 900.0, 10))


def test_capture_noise_follows_emva_1288(capture):
    """Barcode variance of a flat grey scene = (mu_e + dark + sigma_read^2 + 1/(12 K^2)) /
    white^2 (EMVA 1288 eq. 12 in electrons), to 5 %."""
    responses = torch.full((1, GRID.size), 0.5)
    cube = torch.full((1, GRID.size, 64, 64), 0.4)
    barcodes = capture(cube, responses, torch.Generator().manual_seed(0))
    sensor = capture.sensor
    mean_e = float(capture.expected_electrons(cube[:, :, :1, :1], responses))
    dark = sensor.dark_current_e_per_s * capture.exposure_us * 1e-6
    variance_e = mean_e + dark + sensor.read_noise_e**2 + 1 / (12 * sensor.system_gain_dn_per_e**2)
    white = float(capture.white_electrons(responses))
    assert float(barcodes.mean()) == pytest.approx(0.4, rel=0.01)
    assert float(barcodes.var()) == pytest.approx(variance_e / white**2, rel=0.05)
    assert capture.exposure_us > 0 and 0.7 < white * 2 / sensor.full_well_e / 0.8 < 1.3


def test_capture_validates_inputs(capture):
    with pytest.raises(ValueError, match=r"cube must have shape \(B, L=10"):
        capture(torch.zeros(1, 5, 4, 4), torch.zeros(9, 10))
    with pytest.raises(ValueError, match="fill must lie"):
        CaptureSettings(fill=0.0)


def test_capture_settings_round_trip_with_a_qe_table():
    """to_dict -> JSON -> from_dict gives equal, hashable settings, the sensor's tabulated QE
    included (JSON turns its tuples into lists)."""
    import json

    from hyplex.simulation.sensor import SensorModel

    sensor = SensorModel(qe_wavelengths_nm=(400.0, 700.0), qe=(0.5, 0.4))
    settings = CaptureSettings(exposure_us=500.0, sensor=sensor)
    again = CaptureSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings and again.sensor == sensor
    assert hash(again) == hash(settings) and hash(again.sensor) == hash(sensor)
    assert isinstance(again.sensor.qe, tuple) and isinstance(again.sensor.shape, tuple)
    with pytest.raises(ValueError, match="unknown capture settings flash"):
        CaptureSettings.from_dict({**settings.to_dict(), "flash": True})
    with pytest.raises(ValueError, match="unknown sensor settings colour"):
        CaptureSettings.from_dict({**settings.to_dict(), "sensor": {"colour": "red"}})


def test_identity_and_rgb_encoders(capture):
    cube = _cube()
    torch.testing.assert_close(identity_encoder(GRID, capture)(cube, noise=False), cube)
    rgb = rgb_encoder(GRID, capture=capture)
    assert rgb.n_filters == 3 and rgb(cube).shape == (2, 3, 8, 8)
    free = UnconstrainedEncoder(GRID, 9, capture)
    assert free.responses().min() > 0 and free.responses().max() < 1


def test_pca_targets_and_nearest_designs(library, capture):
    rng = np.random.default_rng(0)
    spectra = rng.random((200, 3)) @ rng.random((3, GRID.size))
    targets = pca_target_responses(spectra, 3)
    assert targets.shape == (3, GRID.size)
    # Each target is a principal component shifted and scaled: it lies in span{PCA
    # components, flat response}, and together they span all of it (none degenerate).
    centred = spectra - spectra.mean(0)
    components = np.linalg.svd(centred, full_matrices=False)[2][:3]
    basis = np.vstack([components, np.ones(GRID.size)])
    assert np.linalg.matrix_rank(basis, tol=1e-8) == 4
    assert np.linalg.matrix_rank(np.vstack([basis, targets]), tol=1e-6) == 4
    assert np.linalg.matrix_rank(np.vstack([targets, np.ones(GRID.size)]), tol=1e-6) == 4
    other = np.random.default_rng(1).random(GRID.size)  # the check can fail
    assert np.linalg.matrix_rank(np.vstack([basis, other]), tol=1e-6) == 5
    responses, _ = library_responses(library, GRID)
    picked = nearest_library_designs(responses[[4, 9, 4]] + 1e-3, responses, distinct=True)
    assert picked[0] == 4 and picked[1] == 9 and len(set(picked.tolist())) == 3
    encoder = pca_target_encoder(spectra, GRID, library, n_filters=3, capture=capture)
    assert encoder.hardened and encoder(_cube()).shape == (2, 3, 8, 8)
    design = encoder.harden()  # already hardened: keeps the PCA choice
    np.testing.assert_allclose(design["responses"], responses[encoder.chosen.numpy()], atol=1e-6)
