"""benchmarks/learning_methods.py's ``auto_labels`` row: its own random stream, the global torch
generator left as it was, the same figures on every call, and CE and IDLN given equal steps."""

import numpy as np
import torch

from ..benchmark_scripts import load_benchmark


def test_auto_label_row_draws_from_its_own_stream_and_leaves_the_global_generator_alone():
    bench = load_benchmark("learning_methods")
    config = bench.settings(quick=False, smoke=True)
    data = bench.twin_data(0, config, bench.gaussian_encoder())
    torch.manual_seed(123)
    np.random.seed(7)
    state, numpy_state = torch.get_rng_state(), np.random.get_state()
    row = bench.auto_labels_row(0, config, data)
    assert torch.equal(torch.get_rng_state(), state)  # the rows after it see the same draws
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    torch.manual_seed(999)  # another global state: the row's figures do not move
    assert bench.auto_labels_row(0, config, data) == row
    assert set(row) == {"measured_noise", "label_miou", "ce", "idln", "steps"}
    assert row["steps"] == config["pixel_steps"] // bench.AUTO_LABEL_STEP_FRACTION
    assert 0.0 < row["measured_noise"] < 0.6
