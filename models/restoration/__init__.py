"""hyplex.models.restoration: decoders that know their uncertainty and denoise.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``conditional_flow``        HIDFlowNet-style conditional normalising flow p(cube | barcodes):
                            posterior samples, mean, per-pixel per-band std
``invertible_blocks``       the flow's invertible layers (1x1 conv, injector, coupling)
``flow_training``           the flow's training loop on random patches
``posterior_calibration``   split-conformal per-band scale of the flow's intervals, coverage
``denoising``               low-light cubes, the flow as a denoiser, a plain CNN baseline
``spectral_attention``      SDA-GAN's FFT-domain attention block
==========================  ===========================================================
"""
