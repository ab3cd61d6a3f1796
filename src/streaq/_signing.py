"""Signing: what a worker executes and what a caller receives was written by holders of the secret.

Theory of operation. With ``signing_secret`` set, two things are signed with HMAC-SHA256:

* **the task**: every stream field a worker acts on -- id, function, payload, creation time, ttl,
  expiry, pipeline link, crontab, trace context, tries so far, last error and flow-control group
  key (``SIGNED``, in that order) -- in a canonical encoding (each field's name, then whether it
  is present, then its length-prefixed value), under a domain string. The signature travels as
  one more field, ``s``. Whoever changes a signed field signs again: the producer at enqueue, the
  worker when it schedules a retry or the next run of a repeating task, ``replay_dead_letters``
  when it queues a dead letter afresh. The server never changes a signed field. The fields it does
  write -- the parent result fed to a ``then`` link (``pk``/``pv``/``pi``) -- carry a sealed
  result (below).
* **results**: a result's payload (a value, or an exception record) is *sealed*: the signature of
  its kind and bytes, then the bytes. Callers and the worker feeding a ``then`` link check it. The
  failures the server decides itself -- an abort, a failed dependency -- are not sealed (the
  server has no secret); a caller accepts an unsealed record only in that exact form, which holds
  no value.

A signature is ``version (1 byte) | key id (4 bytes) | HMAC (32 bytes)``. The key id names the
secret that signed (the first 4 bytes of its SHA-256), so ``signing_secret`` may be a list: the
first signs, any verifies. To rotate: give every process ``[old, new]``; once all run with it,
``[new, old]``; once nothing signed with the old secret is left in the queue (tasks, results
within their ttl), ``[new]``.

What signing does *not* do: hide anything (payloads are not encrypted), or stop a genuine entry
from being copied. Delivery is at least once, so a task whose entry is copied within its queue by
someone who can write to Redis runs again; a sealed result copied onto another task verifies too.
Signing stops that someone from making a worker run a function or arguments of their choosing, or
a caller accept a value they made up.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._schema import (
    F_CREATED,
    F_CRONTAB,
    F_EXPIRE,
    F_FN,
    F_GROUP,
    F_ID,
    F_LAST_ERROR,
    F_LINK,
    F_PAYLOAD,
    F_TRACE,
    F_TRIES,
    F_TTL,
)
from .types import StreaqError

__all__ = ["SIGNED", "SignatureError", "Signer"]

#: the stream field holding a task's signature
F_SIGNATURE: Final = "s"
#: the fields a task's signature covers, in the order they are encoded
SIGNED: Final = (
    F_ID,
    F_FN,
    F_PAYLOAD,
    F_CREATED,
    F_TTL,
    F_EXPIRE,
    F_LINK,
    F_CRONTAB,
    F_TRACE,
    F_TRIES,
    F_LAST_ERROR,
    F_GROUP,
)

_VERSION: Final = b"\x01"
_KEY_ID_LEN: Final = 4
_MAC_LEN: Final = 32
SIGNATURE_LEN: Final = 1 + _KEY_ID_LEN + _MAC_LEN
_TASK_DOMAIN: Final = b"streaq task v1\x00"
_RESULT_DOMAIN: Final = b"streaq result v1\x00"


class SignatureError(StreaqError):
    """A signature is missing or wrong: the data was not written by this queue's producers and
    workers (or was signed with a secret this process does not know)."""


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    # ints travel as their decimal text, which is what a worker reads back
    return str(value).encode()


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class Signer:
    """Signs and verifies with one queue's secrets.

    :param secrets: the signing secret, or several: the first signs, any verifies
    :raises StreaqError: for an empty list
    """

    __slots__ = ("_keys", "_signing")

    def __init__(self, secrets: str | bytes | Sequence[str | bytes]) -> None:
        listed = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
        keys = [s.encode() if isinstance(s, str) else bytes(s) for s in listed]
        if not keys or not all(keys):
            raise StreaqError("signing_secret must be a non-empty secret or list of secrets")
        self._keys = {hashlib.sha256(k).digest()[:_KEY_ID_LEN]: k for k in reversed(keys)}
        first = keys[0]
        self._signing = (hashlib.sha256(first).digest()[:_KEY_ID_LEN], first)

    def _mac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()

    def _signature(self, message: bytes) -> bytes:
        key_id, key = self._signing
        return _VERSION + key_id + self._mac(key, message)

    def _verify(self, signature: bytes, message: bytes) -> bool:
        if len(signature) != SIGNATURE_LEN or signature[:1] != _VERSION:
            return False
        key = self._keys.get(signature[1 : 1 + _KEY_ID_LEN])
        if key is None:
            return False
        return hmac.compare_digest(signature[1 + _KEY_ID_LEN :], self._mac(key, message))

    # tasks

    @staticmethod
    def _task_message(fields: Mapping[str, Any]) -> bytes:
        parts = [_TASK_DOMAIN]
        for name in SIGNED:
            value = fields.get(name)
            parts.append(_length_prefixed(name.encode()))
            if value is None:
                parts.append(b"\x00")
            else:
                parts.append(b"\x01" + _length_prefixed(_as_bytes(value)))
        return b"".join(parts)

    def sign_task(self, fields: Mapping[str, Any]) -> bytes:
        """The signature of a task's fields (bytes, ``str`` or ``int`` values)."""
        return self._signature(self._task_message(fields))

    def verify_task(self, task_id: str, fields: Mapping[str, Any]) -> None:
        """Check the signature field of a task read from its stream.

        :raises SignatureError: when it is missing or does not match the fields
        """
        signature = fields.get(F_SIGNATURE)
        if signature is None or not self._verify(_as_bytes(signature), self._task_message(fields)):
            raise SignatureError(f"task {task_id} has a missing or invalid signature")

    # results

    def seal(self, kind: int, data: bytes) -> bytes:
        """``data`` (a result's value or exception record) behind the signature of its kind."""
        message = _RESULT_DOMAIN + bytes((kind,)) + data
        return self._signature(message) + data

    def unseal(self, kind: int, sealed: bytes, task_id: str) -> bytes:
        """The data of a sealed result, once its signature is checked.

        :raises SignatureError: when the seal is missing or does not match
        """
        signature, data = sealed[:SIGNATURE_LEN], sealed[SIGNATURE_LEN:]
        if not self._verify(signature, _RESULT_DOMAIN + bytes((kind,)) + data):
            raise SignatureError(f"the result of task {task_id} has a missing or invalid signature")
        return data
