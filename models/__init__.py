"""hyplex.models: learning (encoder co-design, reconstruction, segmentation)."""
