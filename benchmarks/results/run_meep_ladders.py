"""Fill the FDTD cache with every rung of benchmarks/fidelity.py's full ladders, one Meep
process at a time, cheapest rungs first, so a long run on a shared 2-core machine leaves
usable ladders behind as it goes. The benchmark then reads every rung from the cache:

    nohup .venv/bin/python benchmarks/results/run_meep_ladders.py > meep_ladders.log 2>&1 &
    .venv/bin/python benchmarks/fidelity.py --save-ladders benchmarks/results/fidelity_meep.npz
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fidelity import CASES, PERIOD_NM  # noqa: E402

from hyplex.optics import fdtd  # noqa: E402


def main() -> None:
    names = sys.argv[1:] or [case.name for case in CASES]
    tasks = [
        (case, r, case.wavelengths)
        for case in CASES
        if case.name in names
        for r in case.resolutions
    ]

    # Cheapest first within a priority class: the 1-D film and the cheap 2-D rungs; the 3-D
    # ladders to 160 px/um (the table's main rows); the expensive 2-D rungs (normal incidence
    # at 800 px/um, c-Si at 30 degrees); the 3-D rungs beyond 160 px/um.
    def cost(task):
        case, r, wavelengths = task
        dims = 1 if case.name == "film" else 2 if case.name.startswith("grating") else 3
        jobs = len(wavelengths) if case.angle_deg else 1
        estimate = r**dims * jobs
        if dims == 3:
            return (1 if r <= 160 else 3, estimate)
        return (2 if estimate > 2e5 else 0, estimate)

    for case, r, wavelengths in sorted(tasks, key=cost):
        start = time.perf_counter()
        result = fdtd.solve_many(
            [list(case.layers)],
            wavelengths,
            PERIOD_NM,
            substrate=case.substrate,
            settings=fdtd.FDTDSettings(resolution=r),
            angle_deg=case.angle_deg,
            workers=1,
            progress=False,
        )[0]
        state = "cached" if result.cached else f"{time.perf_counter() - start:.0f} s"
        print(
            f"{time.strftime('%H:%M:%S')} {case.name} {r} px/um: {state} "
            f"(compute {result.compute_s:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
