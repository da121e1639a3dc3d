"""hyplex.calibration: dark/flat, EMVA 1288, mosaic registration, spectral response."""
