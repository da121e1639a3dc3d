"""Illuminants in absolute units, colorimetry, and metamers that only hyperspectral can tell."""

import numpy as np
import pytest

from hyplex.simulation.barcodes import BarcodeExtractor
from hyplex.simulation.camera import CameraTwin
from hyplex.simulation.colorimetry import (
    metamer,
    observer_functions,
    reflectance_to_xyz,
    xyz_to_srgb,
)
from hyplex.simulation.encoder import thin_film_encoder
from hyplex.simulation.grids import hyplex_grid
from hyplex.simulation.illuminants import (
    get_illuminant,
    planck_relative,
    relative_spectrum,
)
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.radiometry import lambertian_radiance
from hyplex.simulation.sensor import SensorModel
from hyplex.simulation.spectra import load_earthlib


def colour_reference(name):
    """colour-science's own spectral distribution of an illuminant (independent of ours)."""
    import colour

    if name == "halogen":
        return colour.sd_blackbody(3200)
    return colour.SDS_ILLUMINANTS.get(name) or colour.SDS_LIGHT_SOURCES[name]


@pytest.mark.parametrize(
    "name, worst", [("D65", 0.025), ("A", 1e-3), ("halogen", 1e-3), ("FL2", None), ("LED-B1", None)]
)
def test_illuminance_in_lux_agrees_with_colour_science(name, worst):
    """Against colour-science, not against our own integral: its luminous_flux (its own
    integrator and photopic table) of our spectrum on a 2 nm grid, and its own SPD of the
    illuminant scaled to 500 lx by its luminous_flux."""
    import colour

    grid = np.arange(380.0, 781.0, 2.0)  # not the 1 nm grid get_illuminant integrates on
    ours = get_illuminant(name, grid, illuminance_lux=500.0).spectral_irradiance
    ours_sd = colour.SpectralDistribution(dict(zip(grid, ours, strict=True)))
    # colour uses K_m = 683 lm/W, we use 683.002 (CIE 15:2018): 3e-6
    assert colour.luminous_flux(ours_sd) == pytest.approx(500.0, rel=1e-4)
    table = colour_reference(name)
    reference = np.interp(grid, table.wavelengths, table.values) * 500 / colour.luminous_flux(table)
    bright = reference > 0.05 * reference.max()
    ratio = ours[bright] / reference[bright]
    assert np.median(ratio) == pytest.approx(1.0, abs=1e-3)  # absolute scale in W m^-2 nm^-1
    if worst is not None:  # smooth spectra agree band by band (bands average over the kinks
        # of a 5 nm table and the lines of lamps)
        assert np.abs(ratio - 1).max() < worst
    # and the same lamp on the 204-band grid has the same absolute level where they overlap
    coarse = get_illuminant(name, hyplex_grid(), illuminance_lux=500.0)
    at_600 = np.interp(600.0, coarse.wavelengths_nm, coarse.spectral_irradiance)
    if worst is not None:
        assert at_600 == pytest.approx(np.interp(600.0, grid, ours), rel=0.02)


def test_illuminant_a_and_d65_match_the_cie_tables():
    import colour

    wl = np.arange(400.0, 781.0, 5.0)
    a = colour.SDS_ILLUMINANTS["A"]
    assert np.allclose(planck_relative(wl, 2848.0, 1.435e-2), a[wl] / 100, atol=1e-4)
    fine = np.arange(380.0, 781.0, 1.0)
    d65, _ = relative_spectrum("D65", fine)
    table = colour.SDS_ILLUMINANTS["D65"]
    linear = np.interp(fine, table.wavelengths, table.values)
    # 1 nm band averages of the S0, S1, S2 construction vs the official 5 nm table; averaging
    # over a kink of the table (the O2 dip at 760 nm) shifts a band by up to ~1 %
    ratio = (d65 / d65[180]) / (linear / linear[180])
    assert np.abs(ratio - 1).max() < 0.015 and np.abs(ratio - 1).mean() < 2e-3


def test_lamps_end_at_their_tables_and_daylight_continues_into_the_nir(grid204):
    fl2 = get_illuminant("FL2", grid204).spectral_irradiance
    assert np.all(fl2[grid204 > 790] == 0)
    d65 = get_illuminant("D65", grid204).spectral_irradiance
    assert np.all(d65[grid204 > 830] > 0) and d65[-1] < d65[grid204 > 830][0]


def test_unknown_illuminant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown illuminant 'D65x'"):
        get_illuminant("D65x")
    with pytest.raises(ValueError, match="illuminance_lux"):
        get_illuminant("D65", illuminance_lux=-1)


def test_white_is_the_srgb_white_under_d65(grid204):
    visible = np.arange(380.0, 781.0, 5.0)
    d65 = get_illuminant("D65", visible).spectral_irradiance
    xyz = reflectance_to_xyz(np.ones(visible.size), visible, d65)
    assert np.allclose(xyz, [0.95047, 1.0, 1.08883], atol=1e-3)  # CIE 15 D65 white point
    assert np.allclose(xyz_to_srgb(xyz), 1.0, atol=2e-3)
    # on the 204-band grid (from 397 nm) the blue end is cut: Z loses ~0.2 %
    d65 = get_illuminant("D65", grid204).spectral_irradiance
    assert reflectance_to_xyz(np.ones(204), grid204, d65)[2] == pytest.approx(1.0888, rel=5e-3)
    assert observer_functions(grid204)[:, grid204 > 830].max() == 0


def test_metamers_match_in_rgb_but_not_in_the_9_channel_encoding(grid204):
    library = load_earthlib(grid204, ["vegetation", "paint"], max_per_class=8, seed=3)
    plants, paints = library.select("vegetation"), library.select("paint")
    d65 = get_illuminant("D65", grid204).spectral_irradiance
    lamp_a = get_illuminant("A", grid204).spectral_irradiance
    encoder = thin_film_encoder(grid204)
    shape = (96, 128)
    camera = CameraTwin(
        encoder.with_layout(MosaicLayout.fit(shape, pitch_px=5.5)), SensorModel(shape=shape)
    )
    extractor = BarcodeExtractor(camera.encoder.layout, shape)
    for number, (natural, base) in enumerate(
        zip(plants.reflectance, paints.reflectance, strict=True)
    ):
        fake = metamer(natural, base, grid204, d65)
        assert fake.min() >= 0 and fake.max() <= 1
        rgb_natural = xyz_to_srgb(reflectance_to_xyz(natural, grid204, d65))
        rgb_fake = xyz_to_srgb(reflectance_to_xyz(fake, grid204, d65))
        assert np.abs(rgb_natural - rgb_fake).max() < 1e-6  # identical colour for RGB
        codes = encoder.encode(np.stack([natural, fake]), grid204, d65)
        relative = np.abs(codes[0] - codes[1]) / codes.max()
        assert relative.max() > 0.05  # but a clearly different barcode
        # and through the camera twin with sensor noise, one metapixel tells them apart
        cubes = [
            np.broadcast_to(lambertian_radiance(r, d65).astype(np.float32), (12, 16, 204))
            for r in (natural, fake)
        ]
        exposure = camera.auto_exposure_us(cubes[0], grid204)
        measured = [
            extractor(camera.render(cube, grid204, exposure, seed=number, frame_index=k))
            for k, cube in enumerate(cubes)
        ]
        noise = measured[0].reshape(-1, 9).std(0)  # per metapixel, all noise sources
        gap = np.abs(measured[0] - measured[1]).reshape(-1, 9).mean(0)
        assert (gap / noise).max() > 10
        # the fake keeps the paint's near infrared (no red edge)
        nir = grid204 > 835  # beyond the colour-matching functions' table
        assert np.allclose(fake[nir], np.clip(base, 0, 1)[nir])
        # and the match is specific to D65 (illuminant metamerism)
        xyz_a = reflectance_to_xyz(np.stack([natural, fake]), grid204, lamp_a)
        assert np.abs(xyz_a[0] - xyz_a[1]).max() > 1e-5


def test_metamer_colour_agrees_with_colour_science_integration(grid204):
    import colour

    library = load_earthlib(grid204, ["vegetation", "paint"], max_per_class=1, seed=5)
    natural, base = library.reflectance
    d65 = get_illuminant("D65", grid204).spectral_irradiance
    fake = metamer(natural, base, grid204, d65)
    lab, visible = [], np.arange(400.0, 781.0, 5.0)
    for spectrum in (natural, fake):
        values = np.interp(visible, grid204, spectrum)
        sd = colour.SpectralDistribution(dict(zip(visible, values, strict=True)))
        xyz = colour.sd_to_XYZ(sd, illuminant=colour.SDS_ILLUMINANTS["D65"]) / 100
        lab.append(colour.XYZ_to_Lab(xyz))
    assert colour.delta_E(lab[0], lab[1], method="CIE 2000") < 0.5  # indistinguishable
