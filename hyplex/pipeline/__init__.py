"""The video engine: raw frames in, barcodes, cubes and labels out.

One module per concept:

- :mod:`~hyplex.pipeline.types`: configuration and per-frame results;
- :mod:`~hyplex.pipeline.sources`: cameras, HDF5 recordings, video files, image folders;
- :mod:`~hyplex.pipeline.stages`: dark/flat, registration and barcode extraction (numba);
- :mod:`~hyplex.pipeline.inference`: batched torch decoding and segmentation;
- :mod:`~hyplex.pipeline.engine`: the concurrent stages with bounded queues;
- :mod:`~hyplex.pipeline.outputs`: HDF5 labels/cubes, overlay video, statistics;
- :mod:`~hyplex.pipeline.models`: the decoders the engine runs (bundles, safe weight files);
- :mod:`~hyplex.pipeline.model_files`: decoder files, safetensors + JSON (pickles refused);
- :mod:`~hyplex.pipeline.trusted_pickles`: convert-weights' restricted read of one's own .pt;
- :mod:`~hyplex.pipeline.batch`: many recordings at once, on Dask.
"""

from hyplex.pipeline.engine import Pipeline
from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
from hyplex.pipeline.types import FrameResult, PipelineConfig, PipelineFailed, PipelineSummary

__all__ = [
    "Pipeline",
    "PipelineFailed",
    "PipelineConfig",
    "PipelineSummary",
    "FrameResult",
    "InferenceConfig",
    "InferenceEngine",
]
