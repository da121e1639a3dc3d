"""Exceptions of ``hyplex.devices``: one hierarchy for cameras, recordings and instruments.

::

    DeviceError
    ├── CameraError
    │   ├── CameraTimeout          no frame within the timeout (also a TimeoutError)
    │   ├── CameraDisconnected     the device went away; the stream is over
    │   ├── CameraBusy             the setting cannot change while streaming
    │   ├── SettingUnavailable     the backend has no such control (see ``capabilities()``)
    │   └── StreamEnded            the stream delivered its ``n`` frames or the source ran out
    ├── RecordingError             a recording that cannot be written or read (also an OSError)
    │   ├── RecordingExists        the file exists and overwriting was not asked for
    │   ├── RecordingInUse         another writer holds the file's lock
    │   └── RecordingTruncated     the file ends before data its own header or index points to
    └── InstrumentError            a serial instrument refused a command or failed to answer
        ├── InstrumentTimeout      no complete reply after every retry (also a TimeoutError)
        └── GarbledReply           replies that do not parse after every retry
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error raised by ``hyplex.devices``."""


class CameraError(DeviceError):
    """A camera failed or was used in the wrong state."""


class CameraTimeout(CameraError, TimeoutError):
    """No frame arrived within the timeout."""


class CameraDisconnected(CameraError):
    """The device was lost (cable, power, driver); frames committed before it stay valid."""


class CameraBusy(CameraError):
    """The operation needs the camera to be stopped (ROI and pixel format fix the buffers)."""


class SettingUnavailable(CameraError):
    """The backend does not provide this setting."""


class StreamEnded(CameraError):
    """The acquisition finished: ``n`` frames delivered, or the source (a file) ran out."""


class RecordingError(DeviceError, OSError):
    """A recording (or another file written frame by frame) cannot be written or read."""


class RecordingExists(RecordingError, FileExistsError):
    """The file to record into exists and ``overwrite`` was not given."""


class RecordingInUse(RecordingError):
    """Another writer (this process or another one) holds the file's writer lock."""


class RecordingTruncated(RecordingError):
    """The file is shorter than its HDF5 header or its committed frames say: it was cut short
    (an interrupted copy, a full disk), and reading on would return zeros or fail."""


class InstrumentError(DeviceError):
    """A serial instrument refused a command, or answered something unexpected."""


class InstrumentTimeout(InstrumentError, TimeoutError):
    """No complete reply (terminator included) arrived after every retry."""


class GarbledReply(InstrumentError):
    """Every reply to a command failed to parse (noise on the line, wrong baud rate)."""
