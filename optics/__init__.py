"""hyplex.optics: the physics of one metasurface.

Materials (dispersion), thin-film transfer matrices, the differentiable RCWA solver and,
later, geometry, the FDTD reference, response libraries and surrogates.
This wing knows nothing of devices, calibration or learning (see docs/architecture.md).
"""
