"""Helpers of the operations suite: worker modules for the CLI, key cleanup, free ports."""

from __future__ import annotations

from children import SRC as SRC
from children import child_env as child_env
from children import delete_queue_keys as delete_queue_keys
from children import spawn_streaq as spawn_streaq
from children import streaq_command as streaq_command
from servers import free_port as free_port
