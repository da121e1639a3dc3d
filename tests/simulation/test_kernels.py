"""numba kernels and their interplay with torch."""

import subprocess
import sys
import textwrap

import torch

from hyplex.simulation.kernels import keeps_torch_threads

# Before the wrapper this printed 2: building the twin's maps through numba's OpenMP layer
# reset libgomp's thread count, which torch reads (measured in a fresh process).
SCRIPT = textwrap.dedent(
    """
    import torch
    torch.set_num_threads(1)
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.differentiable import TorchCamera
    from hyplex.simulation.grids import prototype_grid
    TorchCamera(default_camera(prototype_grid(), (60, 64), 5.3))
    print(torch.get_num_threads())
    """
)


def test_wrapper_restores_torch_threads_after_a_kernel_changes_them():
    def kernel():
        torch.set_num_threads(2)  # what numba's OpenMP layer does to the shared setting
        return "done"

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert keeps_torch_threads(kernel)() == "done"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_building_a_torch_camera_keeps_torch_on_one_thread():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "1"
