"""streaq: a fast, fully typed distributed task queue on Redis streams for asyncio and trio."""

import logging

#: streaq 8: the API of streaq 7.2 (code written for it runs unchanged), with its fixes
__version__ = "8.0.0"
VERSION = __version__

logger = logging.getLogger("streaq")
logger.addHandler(logging.NullHandler())

from ._groups import Group as Group  # noqa: E402
from .task import TaskStatus as TaskStatus  # noqa: E402
from .types import StreaqError as StreaqError  # noqa: E402
from .types import StreaqRetry as StreaqRetry  # noqa: E402
from .types import TaskContext as TaskContext  # noqa: E402
from .worker import RedisCommands as RedisCommands  # noqa: E402
from .worker import RedisPool as RedisPool  # noqa: E402
from .worker import Worker as Worker  # noqa: E402

__all__ = [
    "VERSION",
    "Group",
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
