"""The vocabulary a queue's data is written in, shared with the server-side library.

Python and ``lua/*.lua`` must agree on every letter below: the one-letter states of the task
index, the outcome codes the worker hands to ``finish``, the field names of a stream entry, the
link kinds of pipelines, the dedup modes and answers of ``enqueue``, and the kinds and fields of
the event stream. The Lua library declares the same names in tables at its top (``STATE``,
``OUTCOME``, ``FIELD``, ``LINK``, ``DEDUP``, ``DEDUPED``, ``EVENT``, ``EVENT_FIELD``; key suffixes
in ``KEY``, mirrored by :mod:`._keys`), and ``tests/test_schema.py``
checks that both sides agree. Code on either side uses these names, never
the letters themselves.

The values are short because every stream entry and index entry carries them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

# states of a task in the index (hash ``t``): in a stream, delayed, waiting for dependencies,
# waiting at a gate of flow control
QUEUED: Final = "q"
DELAYED: Final = "d"
WAITING: Final = "w"
GATED: Final = "g"
STATES: Final = {"queued": QUEUED, "delayed": DELAYED, "waiting": WAITING, "gated": GATED}

# outcomes of a claimed message, applied by the ``finish`` server function
RESULT: Final = "r"  # a result record
REPEAT: Final = "c"  # a result, and the next run of a task repeating on a crontab
RETRY: Final = "y"  # another try, at a given time
HAND_BACK: Final = "h"  # back to its stream, unchanged, for another worker
CANCELLED: Final = "x"  # decided by the server: an abort requested while it ran
OUTCOMES: Final = {
    "result": RESULT,
    "repeat": REPEAT,
    "retry": RETRY,
    "hand_back": HAND_BACK,
    "cancelled": CANCELLED,
}

# fields of a stream entry (and of a waiting or delayed task's index entry)
F_ID: Final = "i"
F_FN: Final = "f"
F_PAYLOAD: Final = "d"
F_CREATED: Final = "c"
F_TTL: Final = "l"
F_TRIES: Final = "r"  # tries so far, set by retries
F_LAST_ERROR: Final = "le"
F_EXPIRE: Final = "x"  # deadline to start by (ms)
F_LINK: Final = "k"  # how a pipeline link depends on its parent (LINK_*)
F_PARENT_KIND: Final = "pk"  # the parent result's kind, payload and id, fed to a `then` link
F_PARENT_VALUE: Final = "pv"
F_PARENT_ID: Final = "pi"
F_CRONTAB: Final = "cr"
F_TRACE: Final = "tc"
F_GROUP: Final = "g"  # the group key of flow control
FIELDS: Final = {
    "id": F_ID,
    "fn": F_FN,
    "payload": F_PAYLOAD,
    "created": F_CREATED,
    "ttl": F_TTL,
    "tries": F_TRIES,
    "last_error": F_LAST_ERROR,
    "expire": F_EXPIRE,
    "link": F_LINK,
    "parent_kind": F_PARENT_KIND,
    "parent_value": F_PARENT_VALUE,
    "parent_id": F_PARENT_ID,
    "crontab": F_CRONTAB,
    "trace": F_TRACE,
    "group": F_GROUP,
}

# link kinds of F_LINK: a `then` link takes its parent's result; an `otherwise` fallback runs
# only when its parent fails; a group waits for its members (it never runs); an `all` link takes
# a group's values, and fails when one of its members failed
LINK_THEN: Final = "t"
LINK_OTHERWISE: Final = "o"
LINK_GROUP: Final = "g"
LINK_ALL: Final = "a"
LINKS: Final = {
    "then": LINK_THEN,
    "otherwise": LINK_OTHERWISE,
    "group": LINK_GROUP,
    "all": LINK_ALL,
}

# dedup modes of a task's dedup key, as the enqueue server function takes them (Lua DEDUP)
DEDUP_THROTTLE: Final = "t"
DEDUP_DEBOUNCE: Final = "d"
DEDUP_KEEP_LAST: Final = "l"
DEDUP_MODES: Final = {
    "throttle": DEDUP_THROTTLE,
    "debounce": DEDUP_DEBOUNCE,
    "keep_last": DEDUP_KEEP_LAST,
}
# what enqueue answers for a task with a dedup key, with the other task's id (Lua DEDUPED);
# 1 is "enqueued", as for any task
DEDUPED_ENQUEUED: Final = 1
DEDUPED_DROPPED: Final = 3
DEDUPED_REPLACED: Final = 4
DEDUPED_FOLLOWS: Final = 5
DEDUPED: Final = {
    "enqueued": DEDUPED_ENQUEUED,
    "dropped": DEDUPED_DROPPED,
    "replaced": DEDUPED_REPLACED,
    "follows": DEDUPED_FOLLOWS,
}

# kinds of an entry of the event stream (``ev``): the public names are those of
# :class:`streaq.types.EventKind`
EVENT_KINDS: Final = {
    "enqueued": "q",
    "started": "s",
    "progress": "p",
    "retried": "y",
    "finished": "d",
    "failed": "f",
    "aborted": "a",
    "dead_lettered": "l",
}
# fields of an entry of the event stream
EV_KIND: Final = "k"
EV_ID: Final = "i"
EV_FN: Final = "f"
EV_TIME: Final = "t"
EV_TRIES: Final = "r"
EV_VALUE: Final = "v"  # a progress event's encoded value
EVENT_FIELDS: Final = {
    "kind": EV_KIND,
    "id": EV_ID,
    "fn": EV_FN,
    "time": EV_TIME,
    "tries": EV_TRIES,
    "value": EV_VALUE,
}

#: how long a result is kept when the task does not say (``ttl=``)
DEFAULT_TTL: Final = timedelta(minutes=5)
DEFAULT_TTL_MS: Final = int(DEFAULT_TTL.total_seconds() * 1000)
