"""hyplex.simulation: the digital twin of the camera (scenes, mosaic encoder, sensor)."""
