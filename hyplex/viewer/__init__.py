"""The live viewer (``hyplex view``): a local web page over the video engine.

- :mod:`~hyplex.viewer.server`: the session that holds the latest frame, the FastAPI app and
  the uvicorn server on 127.0.0.1;
- :mod:`~hyplex.viewer.page`: the single HTML page it serves.
"""

from hyplex.viewer.server import LiveSession, ViewerServer, create_app, simulated_session

__all__ = ["LiveSession", "ViewerServer", "create_app", "simulated_session"]
