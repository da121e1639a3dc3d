"""hyplex.optics: the physics of one metasurface.

Materials (dispersion), thin-film transfer matrices, the differentiable RCWA solver and,
later, geometry, the FDTD reference, response libraries and surrogates.
This wing knows nothing of devices, calibration or learning (see docs/architecture.md).

Being the bottom wing, it also holds the plumbing every wing shares: the process's thread
policy (``threads``), imports of optional dependencies that name their extra (``extras``)
and atomic, durable file writes (``atomic_io``).
"""
