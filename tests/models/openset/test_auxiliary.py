"""The open-set split of the twin: disjoint groups, planted unknowns, surrogate outliers."""

import numpy as np
import pytest

from hyplex.models.openset import UNKNOWN, OpenSetSplit, make_openset_scenes
from hyplex.models.openset.auxiliary import auxiliary_library, mix_spectra, perturb_spectra

from .conftest import GRID_NM


def test_split_groups_must_be_disjoint():
    with pytest.raises(ValueError, match="disjoint"):
        OpenSetSplit(auxiliary=("wood", "paint"))
    with pytest.raises(ValueError, match="earthlib classes"):
        OpenSetSplit(known_classes=("unobtainium",))
    split = OpenSetSplit.for_class_names(
        ["background", "vegetation", "soil", "paint", "metal", "fake_vegetation"]
    )
    assert split.known_classes == ("vegetation", "soil", "paint", "metal")
    assert split.fake_classes == ("vegetation",)
    assert not set(split.auxiliary) & set(split.test_unknown)
    assert split.class_names[-1] == "fake_vegetation"


def test_planted_unknowns_are_labelled_and_only_where_asked():
    split = OpenSetSplit()
    scenes = make_openset_scenes(split, GRID_NM, 3, "test", (24, 24), seed=1)
    assert scenes.cubes.shape == (3, 24, 24, GRID_NM.size)
    assert scenes.unknown.any(axis=(1, 2)).all()
    assert all(c in split.test_unknown for cats in scenes.categories for c in cats)
    known = scenes.labels[~scenes.unknown]
    assert known.min() >= 0 and known.max() < len(split.class_names)
    clean = make_openset_scenes(split, GRID_NM, 2, "id", (24, 24), seed=1)
    assert not (clean.labels == UNKNOWN).any()
    again = make_openset_scenes(split, GRID_NM, 3, "test", (24, 24), seed=1)
    np.testing.assert_array_equal(again.cubes, scenes.cubes)


def test_mixed_perturbed_and_generated_outliers():
    split = OpenSetSplit()
    rng = np.random.default_rng(0)
    generated = np.full((5, GRID_NM.size), 0.4)
    pool = auxiliary_library(split, GRID_NM, n_mixed=10, n_perturbed=10, generated=generated)
    assert {"mixed", "perturbed", "generated"} <= set(pool.labels)
    assert not set(pool.labels) & set(split.test_unknown)
    mixed = mix_spectra(pool, 4, rng)
    assert mixed.shape == (4, GRID_NM.size) and mixed.min() >= 0 and mixed.max() <= 1
    perturbed = perturb_spectra(np.full((2, GRID_NM.size), 0.5), rng, strength=0.2)
    assert not np.allclose(perturbed, 0.5)
    with pytest.raises(ValueError, match="generated spectra"):
        auxiliary_library(split, GRID_NM, generated=np.ones((3, 7)))
