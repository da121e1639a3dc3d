"""The ``hyplex`` command line (``hyplex ...`` or ``python -m hyplex ...``).

The root app lives in :mod:`hyplex.cli.app`; each command group has its own module here.
"""

from hyplex.cli.app import app

__all__ = ["app"]
