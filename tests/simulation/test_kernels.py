"""numba kernels and their interplay with torch."""


def test_numba_kernels_keep_torch_thread_count():
    """numba's OpenMP layer resets libgomp's thread count on each launch; torch shares it."""
    import torch

    from hyplex.simulation.layout import MosaicLayout

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        layout = MosaicLayout(metapixels=(4, 4), pitch_px=3.0, metapixels_per_block=(4, 4))
        layout.filter_maps((40, 40))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
