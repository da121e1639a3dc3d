"""Synthetic scenes and video: labels, physics, real/fake objects, HDF5 round trips."""

import h5py
import numpy as np
import pytest

from hyplex.simulation.colorimetry import reflectance_to_xyz
from hyplex.simulation.illuminants import get_illuminant
from hyplex.simulation.scene_io import read_scene, write_scene, write_video
from hyplex.simulation.scenes import make_scene, scene_library
from hyplex.simulation.video import make_video


@pytest.fixture(scope="module")
def scene(grid34):
    return make_scene(
        (64, 80),
        grid34,
        n_objects=7,
        fake_fraction=1.0,
        seed=11,
        classes=("vegetation", "soil", "metal", "paint"),
    )


def test_scene_cubes_labels_and_radiance(scene, grid34):
    height, width = 64, 80
    assert scene.reflectance.shape == (height, width, 34) and scene.reflectance.dtype == np.float32
    assert 0 <= scene.reflectance.min() and scene.reflectance.max() <= 1
    assert scene.class_map.shape == (height, width) and scene.class_names[0] == "background"
    assert scene.class_names[-1] == "fake_vegetation"
    assert set(np.unique(scene.class_map)) <= set(range(len(scene.class_names)))
    assert np.all(scene.fake_map == (scene.class_map == len(scene.class_names) - 1))
    expected = (
        scene.reflectance * scene.shading[..., None] * scene.illuminant.spectral_irradiance / np.pi
    )
    assert np.allclose(scene.radiance, expected, rtol=1e-6)
    srgb = scene.srgb()
    assert srgb.shape == (height, width, 3) and 0 <= srgb.min() and srgb.max() <= 1


def test_objects_vary_within_their_class(scene):
    for instance in np.unique(scene.instance_map)[1:]:
        pixels = scene.reflectance[scene.instance_map == instance]
        if len(pixels) > 20:
            assert pixels.std(0).max() > 1e-4  # mixtures of library spectra, not one spectrum


def test_fake_plants_look_like_plants_but_lack_the_red_edge(grid204):
    scene = make_scene(
        (64, 64),
        grid204,
        n_objects=6,
        classes=("vegetation",),
        fake_fraction=0.5,
        seed=2,
        background="soil",
    )
    fake = scene.reflectance[scene.fake_map].mean(0)
    real = scene.reflectance[(scene.class_map == 1)].mean(0)
    assert scene.fake_map.any() and (scene.class_map == 1).any()
    d65 = get_illuminant("D65", grid204).spectral_irradiance
    xyz_fake, xyz_real = reflectance_to_xyz(np.stack([fake, real]), grid204, d65)
    assert np.abs(xyz_fake[1] - xyz_real[1]) < 0.05  # similar lightness (both green plants)
    red, nir = np.argmin(abs(grid204 - 670)), np.argmin(abs(grid204 - 850))
    assert real[nir] / real[red] > 2 * fake[nir] / fake[red]


def test_scene_rejects_bad_input(grid34):
    with pytest.raises(ValueError, match="classes"):
        make_scene((32, 32), grid34, classes=("unobtainium",))
    library = scene_library(np.linspace(400, 700, 31), ("soil",), ("soil",))
    with pytest.raises(ValueError, match="mismatched wavelength grids"):
        make_scene((32, 32), grid34, classes=("soil",), fake_classes=(), library=library)


def test_scene_hdf5_round_trip_is_atomic_and_documented(scene, tmp_path):
    raw = np.arange(100, dtype=np.uint16).reshape(10, 10)
    path = write_scene(tmp_path / "scene.h5", scene, raw, {"exposure_us": 100.0}, {"seed": 11})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.h5"]  # no temporary left
    back, raw_back = read_scene(path)
    assert np.array_equal(back.reflectance, scene.reflectance)
    assert np.array_equal(back.class_map, scene.class_map) and back.class_names == scene.class_names
    assert np.array_equal(raw_back, raw)
    with h5py.File(path) as file:
        assert file["radiance"].attrs["units"] == "W m^-2 sr^-1 nm^-1"
        assert file["wavelengths_nm"].attrs["units"] == "nm"
        assert file.attrs["kind"] == "scene" and file.attrs["seed"] == 11
        assert file["raw"].attrs["exposure_us"] == 100.0


def test_video_motion_occlusion_illumination_and_ground_truth(grid34, tmp_path):
    video = make_video(6, (48, 64), grid34, n_objects=4, seed=5, speed_px=(3.0, 5.0))
    labels = video.labels()
    assert labels["class_map"].shape == (6, 48, 64)
    # objects move: the instance maps change between frames
    assert not np.array_equal(labels["instance_map"][0], labels["instance_map"][-1])
    # the light changes from D65 to A (warmer: more red than blue at the end)
    first, last = (
        video.illuminants[0].spectral_irradiance,
        video.illuminants[-1].spectral_irradiance,
    )
    assert last[-1] / last[0] > 2 * first[-1] / first[0]
    for t in (0, 3, 5):  # ground truth of every frame equals the rendered frame's labels
        frame = video.frame(t)
        assert np.array_equal(frame.class_map, labels["class_map"][t])
        assert np.array_equal(frame.instance_map, labels["instance_map"][t])
    # occlusion: a nearer (later) sprite hides a farther one where both cover a pixel
    sprites = video.sprites
    for t in range(6):
        covered = np.zeros((48, 64), int)
        for number, sprite in enumerate(sprites):
            top, left = video.positions[t, number]
            canvas = np.zeros((48 + 200, 64 + 200), bool)
            h, w = sprite.mask.shape
            canvas[top + 100 : top + 100 + h, left + 100 : left + 100 + w] = sprite.mask
            covered[canvas[100:148, 100:164]] = number + 1
        assert np.array_equal(covered, labels["instance_map"][t])
    path = write_video(tmp_path / "clip.h5", video)
    scene, raw = read_scene(path, frame=4)
    assert raw is None and np.allclose(scene.radiance, video.frame(4).radiance, rtol=1e-6)
    with pytest.raises(ValueError, match="video"):
        read_scene(path)
