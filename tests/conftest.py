"""Suite-wide settings, loaded before any test module.

- One compute thread per test process: ``HYPLEX_THREADS=1`` unless the environment sets it
  (:mod:`hyplex.optics.threads`). The suite runs on 2 shared cores, often next to other jobs,
  where more threads than free cores cost 10-100x (see the module); results do not depend on
  the count (``tests/optics/test_parallel.py``), so set ``HYPLEX_THREADS`` to run with more.
- The test order is random (pytest-randomly): its seed is printed first even under ``-q``;
  ``-p randomly --randomly-seed=N`` replays an order, ``-p no:randomly`` turns it off.
"""

from __future__ import annotations

import os

os.environ.setdefault("HYPLEX_THREADS", "1")


def pytest_sessionstart(session):
    config = session.config
    seed = getattr(config.option, "randomly_seed", None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if seed is None or reporter is None:  # pytest-randomly absent or disabled
        return
    if config.get_verbosity() < 0:  # -q hides the header where pytest-randomly prints it
        reporter.write_line(f"random test order: -p randomly --randomly-seed={seed}")
