"""hyplex.calibration: dark/flat, EMVA 1288, mosaic registration, spectral response.

==========================  ===============================================================
module                      what
==========================  ===============================================================
``darkflat``                master darks, dark current, hot/dead pixels, per-channel flats
``emva``                    EMVA 1288 R4.0 photon transfer, dark current, DSNU/PRNU
``emva_spatial``            EMVA 1288 spectrograms and defect-pixel histograms
``emva_descriptor``         EMVA 1288 descriptor files: read, write, analyse a data set
``emva_datasheet``          EMVA 1288 summary data sheet (JSON + PNG)
``measured_import``         measured (spectrum, readings) pairs -> responses, LOO errors
``registration``            ``MosaicLayout`` from a flat frame (Fourier lattice + blocks)
``spectral_response``       monochromator sweep, auto-exposure, ridge deconvolution, bootstrap
``basis_fit``               the Hyplex method: NNLS on broadband samples, Gaussian/Lorentzian
``store``                   versioned HDF5 calibration files with provenance, atomic writes
``bench``                   radiometrically consistent simulated bench, white reference, truth
``pipeline``, ``report``    dark -> flat -> registration -> EMVA -> sweep; the PNG report
==========================  ===============================================================

This wing imports ``hyplex.devices``, ``hyplex.simulation`` and ``hyplex.optics``, never
``hyplex.models``.
"""
