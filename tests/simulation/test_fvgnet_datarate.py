"""The FVgNET reader on a tiny fake tree, and the data-rate accounting."""

import h5py
import numpy as np
import pytest

from hyplex.simulation.datarate import (
    equivalent_data_rate_bps,
    format_rate,
    prototype_data_rate_bps,
)
from hyplex.simulation.fvgnet import FVgNetDataset


def make_tree(root, rng):
    (root / "normalizedHSI").mkdir(parents=True)
    (root / "labeledDataNPY").mkdir()
    cubes = {}
    for name, layout in (("plant_001", "hwl"), ("plant_002", "lhw")):
        cube = rng.random((12, 10, 204), dtype=np.float32)
        cubes[name] = cube
        stored = cube if layout == "hwl" else np.moveaxis(cube, -1, 0)
        with h5py.File(root / "normalizedHSI" / f"{name}.h5", "w") as file:
            file.create_dataset("hsi", data=stored)
            file.create_dataset("small", data=np.zeros((2, 2, 2)))
        np.save(root / "labeledDataNPY" / f"{name}.npy", (cube[..., 0] > 0.5).astype(np.int64))
    (root / "data.csv").write_text(
        ",left,right,frame,folder\n0,6,6,4120,plant_001\n1,0,0,1195,background/\n"
    )
    return cubes


def test_reader_loads_cubes_labels_and_metadata(tmp_path, rng):
    cubes = make_tree(tmp_path, rng)
    dataset = FVgNetDataset(tmp_path)
    assert len(dataset) == 2 and dataset.names == ["plant_001", "plant_002"]
    for name, cube in cubes.items():
        sample = dataset[name]
        assert sample.cube.shape == (12, 10, 204) and np.array_equal(sample.cube, cube)
        assert sample.wavelengths_nm[[0, -1]].tolist() == [397.0, 1003.0]
        assert np.array_equal(sample.labels, (cube[..., 0] > 0.5).astype(np.int64))
    assert dataset[0].metadata == [
        {"": "0", "left": "6", "right": "6", "frame": "4120", "folder": "plant_001"}
    ]


def test_reader_errors_are_clear(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="normalizedHSI"):
        FVgNetDataset(tmp_path)
    make_tree(tmp_path, rng)
    with pytest.raises(ValueError, match="no axis of 34 bands"):
        FVgNetDataset(tmp_path, wavelengths_nm=np.linspace(400, 730, 34))[0]
    np.save(tmp_path / "labeledDataNPY" / "plant_001.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="do not match"):
        FVgNetDataset(tmp_path)["plant_001"]


def test_prototype_data_rate_is_1_18_terabit_per_second():
    rate = prototype_data_rate_bps()
    assert rate == 4000 * 3000 * 204 * 16 * 30 == 1.17504e12
    assert format_rate(rate) == "1.18 Tb/s"
    assert format_rate(equivalent_data_rate_bps(640, 480, 34, 8, 1)) == "83.6 Mb/s"
    with pytest.raises(ValueError, match="fps"):
        equivalent_data_rate_bps(1, 1, 1, 1, 0)
