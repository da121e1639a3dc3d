"""numba kernels and their interplay with torch."""

import pytest


def test_numba_kernels_keep_torch_thread_count():
    """numba's OpenMP layer sets libgomp's thread count when it launches, and torch reads the
    same setting: without the wrapper torch ends up on every core after a kernel."""
    import numba
    import torch

    from hyplex.simulation import kernels
    from hyplex.simulation.layout import MosaicLayout

    layout = MosaicLayout(metapixels=(4, 4), pitch_px=3.0, metapixels_per_block=(4, 4))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        matrix = torch.randn(256, 256)
        _ = matrix @ matrix  # torch has run a parallel region, as in any real session
        kernels._build_filter_maps(40, 40, layout.parameters())  # the raw numba kernel
        if numba.threading_layer() != "omp" or numba.get_num_threads() == 1:
            pytest.skip("the reset needs numba's OpenMP layer and more than one thread")
        assert torch.get_num_threads() != 1  # the side effect the wrapper exists for
        torch.set_num_threads(1)
        _ = matrix @ matrix
        layout.filter_maps((40, 40))  # through the wrapper
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
