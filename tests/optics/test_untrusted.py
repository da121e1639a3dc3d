"""Caps on configs read from user files (hyplex.optics.untrusted)."""

import pytest
import torch

from hyplex.optics.untrusted import (
    MAX_COUNT,
    MAX_DEPTH,
    MAX_SIZE,
    check_config_limits,
    check_state_shapes,
)


def test_caps_per_kind_of_integer():
    fine = {"n_stages": MAX_COUNT, "depth": MAX_DEPTH, "width": MAX_SIZE, "seed": 2**40,
            "whiten": True, "scale": 1e9, "name": "mst", "channels": [8, 16]}  # fmt: skip
    check_config_limits(fine, "ok.json")  # a seed sizes nothing; floats and bools are not sizes
    for key, value in (("n_blocks", MAX_COUNT + 1), ("levels", MAX_DEPTH + 1),
                       ("hidden", MAX_SIZE + 1), ("channels", [8, MAX_SIZE + 1])):  # fmt: skip
        with pytest.raises(
            ValueError, match=rf"bad.json: {key} = {MAX_SIZE + 1 if key == 'channels' else value}"
        ):  # noqa: E501
            check_config_limits({key: value}, "bad.json")


def test_state_shapes_name_the_difference():
    expected = {"a": torch.empty(2, 3, device="meta"), "b": torch.empty(4, device="meta")}
    check_state_shapes(expected, {"a": torch.zeros(2, 3), "b": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"f.json: tensor a has shape \(3, 2\)"):
        check_state_shapes(expected, {"a": torch.zeros(3, 2), "b": torch.zeros(4)}, "f.json")
    with pytest.raises(ValueError, match=r"tensor b has shape \(5,\)"):  # a header's shapes
        check_state_shapes(expected, {"a": (2, 3), "b": (5,)})
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        check_state_shapes(expected, {"a": torch.zeros(2, 3), "c": torch.zeros(4)})
