"""Hardware in the loop: measured responses of a fabricated encoder, and decoders refitted to
them.

- :mod:`~hyplex.hil.measured_response`: a calibration's monochromator sweep turned into filter
  transmissions on the design's grid, with the channel-order check;
- :mod:`~hyplex.hil.refit`: decoders refitted to the measured responses, written as a new
  bundle.
"""

from hyplex.hil.measured_response import (
    check_channel_order,
    design_twin,
    measured_transmissions,
    unit_filter_weights,
)
from hyplex.hil.refit import RefitResult, RefitSettings, UncalibratedCamera, refit, refit_bundle

__all__ = [
    "check_channel_order",
    "design_twin",
    "measured_transmissions",
    "unit_filter_weights",
    "RefitResult",
    "RefitSettings",
    "UncalibratedCamera",
    "refit",
    "refit_bundle",
]
