"""hyplex.models.restoration: decoders that know their uncertainty and denoise.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``conditional_flow``        HIDFlowNet-style conditional normalising flow p(cube | barcodes):
                            posterior samples, mean, per-pixel per-band std
``denoising``               low-light cubes, the flow as a denoiser, a plain CNN baseline
``spectral_attention``      SDA-GAN's FFT-domain attention block
==========================  ===========================================================
"""
