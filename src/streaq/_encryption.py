"""Encryption (``encryption_key``): arguments, results and errors are unreadable in Redis.

Theory of operation. With ``Worker(encryption_key=...)`` (extra ``streaq[encryption]``, which
installs ``cryptography``), every payload that holds user data -- a task's arguments, a result's
value, an exception record (message and traceback may hold data too), the last error a retried
task carries -- is encrypted with AES-256-GCM before it is stored, and decrypted where it is read:
by the worker for arguments, by callers for results. Everything else (function names, ids,
times) stays readable, so that ``streaq info``, the web UI and the server-side library still work.

A ciphertext is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | AES-GCM output``. The
AES key is derived from the secret (SHA-256 under a domain string), so any string of enough
entropy serves; the key id names it, so ``encryption_key`` may be a list: the first encrypts, any
decrypts (rotate as with ``signing_secret``). The associated data binds the ciphertext to what it
is: a task's arguments to its task id, a result to its kind, so that a ciphertext moved elsewhere
fails to decrypt. GCM authenticates, so a ciphertext altered in Redis fails to decrypt too, with
:class:`DecryptionError`. Nonces are random: 2**32 payloads per key stay far below the collision
risk that GCM's 96-bit nonces allow.

Encryption and signing combine: signatures cover the ciphertexts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Final

from .types import StreaqError

__all__ = ["Cipher", "DecryptionError"]

_VERSION: Final = b"\x01"
_KEY_ID_LEN: Final = 4
_NONCE_LEN: Final = 12
_HEADER_LEN: Final = 1 + _KEY_ID_LEN + _NONCE_LEN
_KEY_DOMAIN: Final = b"streaq encryption key v1\x00"
#: associated data: what a ciphertext is (a task's arguments, a result, a task's last error)
ARGUMENTS: Final = b"streaq arguments\x00"
RESULT: Final = b"streaq result\x00"
LAST_ERROR: Final = b"streaq last error\x00"


class DecryptionError(StreaqError):
    """A payload cannot be decrypted: altered, moved from elsewhere, or encrypted with a key this
    process does not have."""


class Cipher:
    """AES-256-GCM with one queue's keys.

    :param secrets: the encryption secret, or several: the first encrypts, any decrypts
    :raises StreaqError: when ``cryptography`` is not installed, or for an empty secret
    """

    __slots__ = ("_encrypting", "_keys")

    def __init__(self, secrets: str | bytes | Sequence[str | bytes]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise StreaqError(
                "encryption_key needs the cryptography package: pip install 'streaq[encryption]'"
            ) from None
        listed = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
        raw = [s.encode() if isinstance(s, str) else bytes(s) for s in listed]
        if not raw or not all(raw):
            raise StreaqError("encryption_key must be a non-empty secret or list of secrets")
        ciphers = []
        for secret in raw:
            key = hashlib.sha256(_KEY_DOMAIN + secret).digest()
            ciphers.append((hashlib.sha256(key).digest()[:_KEY_ID_LEN], AESGCM(key)))
        self._keys = dict(reversed(ciphers))
        self._encrypting = ciphers[0]

    def encrypt(self, data: bytes, context: bytes) -> bytes:
        """``data`` encrypted; ``context`` (what it is) must be given again to decrypt it."""
        key_id, aead = self._encrypting
        nonce = os.urandom(_NONCE_LEN)
        return _VERSION + key_id + nonce + aead.encrypt(nonce, data, context)

    def decrypt(self, blob: bytes, context: bytes, what: str) -> bytes:
        """The plaintext of ``blob``.

        :param what: what it is, for the error (e.g. ``"the arguments of task 1234"``)
        :raises DecryptionError: when it was altered, belongs elsewhere or the key is unknown
        """
        from cryptography.exceptions import InvalidTag

        aead = self._keys.get(blob[1 : 1 + _KEY_ID_LEN]) if blob[:1] == _VERSION else None
        if aead is None or len(blob) < _HEADER_LEN:
            raise DecryptionError(f"{what} are not encrypted with a key of this queue")
        try:
            return aead.decrypt(blob[1 + _KEY_ID_LEN : _HEADER_LEN], blob[_HEADER_LEN:], context)
        except InvalidTag:
            raise DecryptionError(f"{what} cannot be decrypted (altered in Redis?)") from None
