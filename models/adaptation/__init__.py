"""hyplex.models.adaptation: from the digital twin to the captured domain.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``spectral_translation``    SDA-GAN: unpaired, cycle-consistent twin -> captured barcode
                            translation with FFT-domain attention in the generators
==========================  ===========================================================
"""
