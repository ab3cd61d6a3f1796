"""streaq: a fast, fully typed distributed task queue on Redis streams for asyncio and trio."""

import logging

__version__ = "0.1.0"
VERSION = __version__

logger = logging.getLogger("streaq")
logger.addHandler(logging.NullHandler())

from .task import TaskStatus as TaskStatus  # noqa: E402
from .types import StreaqError as StreaqError  # noqa: E402
from .types import StreaqRetry as StreaqRetry  # noqa: E402
from .types import TaskContext as TaskContext  # noqa: E402
from .worker import RedisCommands as RedisCommands  # noqa: E402
from .worker import RedisPool as RedisPool  # noqa: E402
from .worker import Worker as Worker  # noqa: E402

__all__ = [
    "VERSION",
    "RedisCommands",
    "RedisPool",
    "StreaqError",
    "StreaqRetry",
    "TaskContext",
    "TaskStatus",
    "Worker",
    "__version__",
    "logger",
]
