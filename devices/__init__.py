"""hyplex.devices: cameras, frame ring buffer, recorder and serial instruments."""
