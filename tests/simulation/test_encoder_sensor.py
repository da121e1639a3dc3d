"""Energy bookkeeping, the EMVA 1288 noise model, and the numba / numpy / torch agreement."""

import numpy as np
import pytest

from hyplex.simulation.camera import CameraTwin
from hyplex.simulation.encoder import Encoder
from hyplex.simulation.grids import resample
from hyplex.simulation.kernels_numpy import project_mosaic_numpy
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.radiometry import LIGHT_SPEED_M_PER_S, PLANCK_J_S, LensModel
from hyplex.simulation.sensor import SensorModel


def unit_camera(grid, shape=(64, 64), transmission=1.0, qe=1.0, **sensor_options):
    """Unit-transmission filters, flat QE (default 1), f/2 lens, on a small sensor."""
    layout = MosaicLayout.fit(shape, pitch_px=5.0)
    ones = np.ones((9, grid.size))
    encoder = Encoder(grid, ones, layout, unpatterned=np.ones(grid.size), name="unit")
    options = dict(qe_wavelengths_nm=tuple(grid), qe=tuple(np.full(grid.size, qe)))
    options.update(sensor_options)
    sensor = SensorModel(shape=shape, **options)
    return CameraTwin(encoder, sensor, LensModel(f_number=2.0, transmission=transmission))


def photons_per_pixel(radiance, low_nm, high_nm, exposure_s, pitch_um, tau=1.0, qe=None):
    """Reference count: t A tau pi / (4 N^2) integral L(lambda) QE lambda / (h c) dlambda,
    N = 2, integrated on a fine grid; ``radiance`` and ``qe`` are functions of lambda (nm)."""
    fine = np.linspace(low_nm, high_nm, 200_001)
    integrand = radiance(fine) * fine * 1e-9 / (PLANCK_J_S * LIGHT_SPEED_M_PER_S)
    if qe is not None:
        integrand = integrand * qe(fine)
    scale = exposure_s * (pitch_um * 1e-6) ** 2 * tau * np.pi / (4 * 2.0**2)
    return scale * np.trapezoid(integrand, fine)


def test_flat_white_scene_through_unit_filters_recovers_the_photon_count(grid34):
    camera = unit_camera(grid34)
    exposure_s, pitch = 2e-3, camera.sensor.pixel_pitch_um
    # grid values are band averages over bins whose edges are the midpoints, the end bins
    # symmetric: the 34-band 400-730 nm grid covers 395-735 nm (a trapezoid over 400-730 nm
    # would count 3 % fewer photons)
    photons = photons_per_pixel(lambda x: np.full_like(x, 0.01), 395, 735, exposure_s, pitch)
    cube = np.full((16, 16, grid34.size), 0.01, np.float32)  # W m^-2 sr^-1 nm^-1, flat
    electrons = camera.expected_electrons(cube, grid34, exposure_s * 1e6)
    assert np.allclose(electrons, photons, rtol=1e-5)
    assert np.allclose(camera.encoder.encode(np.ones(34), grid34), 340.0)  # nm of bins
    # a sloped spectrum band-averaged by resample keeps its integral over the bins
    fine = np.linspace(380.0, 750.0, 3701)

    def sloped(x):
        return 0.01 * (0.2 + (x - 380.0) / 300.0)

    cube = np.broadcast_to(resample(fine, sloped(fine), grid34).astype(np.float32), (8, 8, 34))
    electrons = camera.expected_electrons(cube, grid34, exposure_s * 1e6)
    expected = photons_per_pixel(sloped, 395, 735, exposure_s, pitch)
    assert np.allclose(electrons, expected, rtol=1e-4)
    # lens transmission 0.9 and QE 0.5 scale the count by 0.45
    dim = unit_camera(grid34, transmission=0.9, qe=0.5)
    scaled = dim.expected_electrons(cube, grid34, exposure_s * 1e6)
    assert np.allclose(scaled, 0.45 * expected, rtol=1e-4)

    # a sloped QE table (1 nm steps) is band-averaged onto the grid like any spectrum
    def slope_qe(x):
        return 0.2 + 0.6 * (x - 380.0) / 370.0

    sloped_qe = SensorModel(shape=(64, 64), qe_wavelengths_nm=tuple(fine), qe=tuple(slope_qe(fine)))
    twin = CameraTwin(dim.encoder, sloped_qe, dim.lens)
    electrons = twin.expected_electrons(cube, grid34, exposure_s * 1e6)
    reference = photons_per_pixel(sloped, 395, 735, exposure_s, pitch, 0.9, slope_qe)
    assert np.allclose(electrons, reference, rtol=1e-3)
    # and through a noise-free sensor with K = 1: the raw value is the photon count
    noiseless = unit_camera(
        grid34,
        system_gain_dn_per_e=1.0,
        read_noise_e=0.0,
        dark_current_e_per_s=0.0,
        dsnu_e=0.0,
        prnu_percent=0.0,
        black_level_dn=0.0,
        full_well_e=1e6,
        adc_bits=16,
    )
    flat = np.full((16, 16, grid34.size), 0.01, np.float32)
    electrons = noiseless.expected_electrons(flat, grid34, exposure_s * 1e6)
    raw = noiseless.capture(electrons, exposure_s * 1e6, noise=False)
    assert raw.dtype == np.uint16 and np.all(raw == np.round(photons))


def test_bad_inputs_are_clear_errors(camera34, grid34, grid204):
    cube = np.zeros((8, 8, 34), np.float32)
    with pytest.raises(ValueError, match="exposure_us must be finite and >= 0"):
        camera34.expected_electrons(cube, grid34, exposure_us=-5.0)
    with pytest.raises(ValueError, match="mismatched wavelength grids"):
        camera34.expected_electrons(np.zeros((8, 8, 204)), grid204, exposure_us=10.0)
    with pytest.raises(ValueError, match="larger than the sensor"):
        CameraTwin(camera34.encoder, SensorModel(shape=(40, 40)))
    with pytest.raises(ValueError, match="adc_bits"):
        SensorModel(adc_bits=11)
    with pytest.raises(ValueError, match="responses must be finite and >= 0"):
        Encoder(grid34, -np.ones((9, 34)))


def test_adc_bit_depths_and_saturation(grid34):
    for bits in (8, 10, 12, 16):
        camera = unit_camera(grid34, adc_bits=bits, system_gain_dn_per_e=2.0**bits / 1e4)
        raw = camera.capture(np.full((64, 64), 1e6, np.float32), 1000.0)
        assert raw.dtype == np.uint16 and raw.max() == 2**bits - 1  # saturated


def photon_transfer(camera, levels, backend="numba"):
    """EMVA 1288 mean and temporal variance from pairs of frames at each level."""
    means, variances = [], []
    for index, level in enumerate(levels):
        electrons = np.full(camera.sensor.shape, level, np.float32)
        a, b = (
            camera.capture(
                electrons, 5000.0, seed=7, frame_index=2 * index + k, backend=backend
            ).astype(np.float64)
            for k in (0, 1)
        )
        means.append(0.5 * (a.mean() + b.mean()))
        variances.append(0.5 * np.var(a - b))
    return np.array(means), np.array(variances)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_photon_transfer_matches_emva_1288(grid34, backend):
    camera = unit_camera(grid34, shape=(256, 256))  # default K, noise, DSNU, PRNU
    sensor = camera.sensor
    levels = np.array([0.0, 200.0, 800.0, 2000.0, 4000.0, 7000.0])
    means, variances = photon_transfer(camera, levels, backend)
    # mean: mu_y = black + K (mu_e + mu_I t)   (EMVA 1288 eq. 9)
    assert np.allclose(means, sensor.mean_dn(levels, 5000.0), atol=0.3)  # 3 sigma of a mean
    # variance: sigma_y^2 = K^2 sigma_d^2 + 1/12 + K (mu_y - mu_y.dark)   (eq. 12)
    assert np.allclose(variances, sensor.variance_dn2(levels, 5000.0), rtol=0.03)
    slope = np.polyfit(means - means[0], variances - variances[0], 1)[0]
    assert slope == pytest.approx(sensor.system_gain_dn_per_e, rel=0.02)


def test_fixed_pattern_is_reproducible_and_has_the_set_size():
    sensor = SensorModel(shape=(200, 300), prnu_percent=1.0, dsnu_e=3.0, fixed_pattern_seed=4)
    prnu, dsnu = sensor.fixed_pattern()
    assert np.array_equal(prnu, sensor.fixed_pattern()[0])
    assert prnu.std() == pytest.approx(0.01, rel=0.03) and dsnu.std() == pytest.approx(3, rel=0.03)


def test_numba_projection_agrees_with_numpy_with_crosstalk(grid34, rng):
    layout = MosaicLayout.fit((60, 80), pitch_px=6.3, rotation_deg=0.7, crosstalk_length_px=1.5)
    encoder = Encoder(grid34, rng.random((9, 34)), layout)
    camera = CameraTwin(encoder, SensorModel(shape=(60, 80)))
    cube = rng.random((30, 40, 34)).astype(np.float32) * 0.01
    ours = camera.expected_electrons(cube, grid34, 1000.0)
    codes, neighbours, mix = camera.maps
    from hyplex.simulation.camera import scene_index

    reference = project_mosaic_numpy(
        cube.astype(np.float64),
        camera.weights(1000.0),
        codes,
        neighbours,
        mix,
        scene_index(60, 30),
        scene_index(80, 40),
    )
    assert np.allclose(ours, reference, rtol=2e-5)
    # the upsampled path (all filters, then gather) gives the same frame
    small = cube[:6, :8]
    direct = camera.expected_electrons(small, grid34, 1000.0)
    reference = project_mosaic_numpy(
        small.astype(np.float64),
        camera.weights(1000.0),
        codes,
        neighbours,
        mix,
        scene_index(60, 6),
        scene_index(80, 8),
    )
    assert np.allclose(direct, reference, rtol=2e-5)
