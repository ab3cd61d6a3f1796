"""streaq: a fast, fully typed distributed task queue on Redis streams for asyncio and trio."""

import logging

__version__ = "0.1.0"
VERSION = __version__

logger = logging.getLogger("streaq")
logger.addHandler(logging.NullHandler())

__all__ = ["VERSION", "__version__", "logger"]
