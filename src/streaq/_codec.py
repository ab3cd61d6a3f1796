"""Serialization: the task payload, result records and exception records.

Theory of operation. A task travels as stream entry fields (see ``lua/*.lua``); its arguments
are one payload ``d``: msgpack ``[args, kwargs]`` (or the user's serializer applied to
``(args, kwargs)``). With a signing secret the task's fields are signed and result payloads sealed
(:mod:`streaq._signing`). Every payload decoded is bounded in size (``MAX_PAYLOAD``) and depth
(msgspec's recursion limit); a payload past either is an error, never a crash. Arguments are
decoded untyped, then each one is converted into its parameter's annotated type by msgspec, so a
dataclass or Struct parameter arrives as itself and a wrong type is reported with the parameter's
name.

A result record is a msgpack array ``[fn, created, enqueued, kind, start, finish, tries, worker,
payload]`` (kind 0 value, 1 tuple, 2 exception). The payload is decoded only when asked for, with
the task's return type (``msgspec.Raw`` defers it). Exceptions travel as
:class:`ExceptionRecord`; only builtin and streaq exception types deriving from ``Exception`` are
rebuilt as themselves (never ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``), every other
type arrives as :class:`~streaq.types.RemoteTaskError`: queue data never names code to run.
"""

from __future__ import annotations

import builtins
import inspect
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from ._encryption import ARGUMENTS, LAST_ERROR, RESULT, Cipher
from ._signing import SignatureError, Signer
from .types import RemoteTaskError, StreaqCancelled, StreaqError, StreaqRetry

Serializer = Callable[[Any], Any]
Deserializer = Callable[[Any], Any]

#: the kinds of a result record (the Lua library's ``KIND``)
KIND_VALUE = 0
KIND_TUPLE = 1
KIND_ERROR = 2
#: a group's outcome (``[first failed member or None, [[member id, record], ...]]``), fed to
#: the task linked to it as its members' values or as their results
KIND_VALUES = 3
KIND_RESULTS = 4

_STREAQ_ERRORS: dict[str, type[BaseException]] = {}
_SIMPLE = (str, int, float, bool, type(None))
#: types whose values need no conversion when they already have exactly that type
_SCALARS = frozenset((str, int, float, bool, bytes))


class ArgumentError(StreaqError, TypeError):
    """A task's arguments do not fit its signature or its parameter types."""


_STREAQ_ERRORS.update(
    (cls.__name__, cls)
    for cls in (StreaqError, StreaqCancelled, StreaqRetry, ArgumentError, SignatureError)
)


class ExceptionRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """An exception as data: type name, module, message, remote traceback and simple args."""

    type: str
    module: str
    message: str
    traceback: str = ""
    args: list[Any] = []


class ResultRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A stored result, its payload still encoded."""

    fn_name: str
    created: int
    enqueued: int
    kind: int
    start: int
    finish: int
    tries: int
    worker_id: str
    payload: msgspec.Raw


_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_decode_any = msgspec.msgpack.Decoder().decode
_record_decoder = msgspec.msgpack.Decoder(ResultRecord)
_exception_decoder = msgspec.msgpack.Decoder(ExceptionRecord)


def encode(value: Any) -> bytes:
    """msgpack-encode ``value`` with streaq's encoder (raises ``TypeError`` if unsupported)."""
    return _encode(value)


def decode_any(data: bytes) -> Any:
    """msgpack-decode ``data`` untyped (raises ``msgspec.DecodeError`` when it is not msgpack)."""
    return _decode_any(data)


def decode_record(data: bytes) -> ResultRecord:
    """Decode a stored or published result record."""
    return _record_decoder.decode(data)


def exception_to_record(exc: BaseException) -> ExceptionRecord:
    """Describe ``exc`` as data that any client can decode safely."""
    cls = type(exc)
    args = [a for a in exc.args if isinstance(a, _SIMPLE)]
    if len(args) != len(exc.args):
        args = []
    tb = "".join(traceback.format_exception(exc))
    return ExceptionRecord(cls.__qualname__, cls.__module__, str(exc), tb, args)


def record_to_exception(rec: ExceptionRecord) -> BaseException:
    """Rebuild an exception: builtin and streaq types as themselves, others as RemoteTaskError."""
    cls: Any = None
    if rec.module == "builtins":
        cls = getattr(builtins, rec.type, None)
    elif rec.module.startswith("streaq."):
        cls = _STREAQ_ERRORS.get(rec.type)
    # only Exception subclasses: never SystemExit, KeyboardInterrupt or GeneratorExit, which
    # would stop whoever looks at the result
    if isinstance(cls, type) and issubclass(cls, Exception) and rec.type != "RemoteTaskError":
        try:
            exc = cls(*rec.args) if rec.args else cls(rec.message)
        except Exception:
            exc = cls(rec.message)
    else:
        exc = RemoteTaskError(f"{rec.module}.{rec.type}", rec.message, rec.traceback)
    if rec.traceback:
        exc.add_note(f"remote traceback:\n{rec.traceback}")
    return exc


def encode_exception(exc: BaseException) -> bytes:
    """Encode ``exc`` as an exception record payload."""
    return _encode(exception_to_record(exc))


def decode_exception(payload: bytes) -> BaseException:
    """Decode an exception record payload into an exception."""
    return record_to_exception(_exception_decoder.decode(payload))


def _lua_str(data: bytes) -> bytes:
    n = len(data)
    if n < 32:
        return bytes((0xA0 | n,)) + data
    if n < 256:
        return b"\xd9" + bytes((n,)) + data
    if n < 65536:
        return b"\xda" + n.to_bytes(2, "big") + data
    return b"\xdb" + n.to_bytes(4, "big") + data


def lua_bytes(data: bytes) -> msgspec.Raw:
    """``data`` as a pre-encoded msgpack str (what Lua's ``cmsgpack`` reads), for :func:`encode`."""
    return msgspec.Raw(_lua_str(data))


def _lua_ready(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    append = out.append
    for v in value:
        if isinstance(v, bytes):
            append(msgspec.Raw(_lua_str(v)))
        elif isinstance(v, list | tuple):
            append(_lua_ready(v))
        else:
            append(v)
    return out


def pack_for_lua(value: Any) -> bytes:
    """msgpack for Redis' Lua ``cmsgpack``, which rejects the bin type: bytes travel as str.

    Handles lists/tuples of str, bytes, int and nested lists, which is all the library takes.
    msgspec encodes everything; only the bytes leaves are pre-encoded (as ``msgspec.Raw`` str).
    """
    if isinstance(value, bytes):
        return _lua_str(value)
    if isinstance(value, list | tuple):
        return _encode(_lua_ready(value))
    return _encode(value)


def encode_fields(fields: list[Any]) -> bytes:
    """Pack stream entry fields for the server-side library."""
    return pack_for_lua(fields)


def _resolve_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        # unresolvable forward references: fall back to untyped values for every parameter
        return {}


def _needs_conversion(tp: Any) -> bool:
    return tp is not Any and tp is not object and tp is not inspect.Parameter.empty


class Codec:
    """Encodes and decodes one queue's payloads: serializer, signing secret, encryption key.

    Either side may be given alone: a missing serializer or deserializer is msgpack's, so a
    ``serializer`` alone must produce msgpack (e.g. ``msgspec.msgpack.Encoder(enc_hook=...)``).
    With a signing secret, tasks are signed and results sealed (:mod:`streaq._signing`); with an
    encryption key, arguments, results and errors are encrypted (:mod:`streaq._encryption`).

    :param serializer: user serializer replacing msgpack for arguments and results
    :param deserializer: user deserializer replacing msgpack's decoder
    :param signing_secret: the HMAC secret, or several (the first signs, any verifies)
    :param encryption_key: the encryption secret, or several (the first encrypts, any decrypts)
    """

    __slots__ = ("_cipher", "_deserializer", "_serializer", "_signer")

    def __init__(
        self,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        signing_secret: str | bytes | Sequence[str | bytes] | None = None,
        encryption_key: str | bytes | Sequence[str | bytes] | None = None,
    ) -> None:
        self._serializer = serializer
        self._deserializer = deserializer
        self._signer = Signer(signing_secret) if signing_secret else None
        self._cipher = Cipher(encryption_key) if encryption_key else None

    @property
    def signs(self) -> bool:
        """Whether tasks are signed and results sealed."""
        return self._signer is not None

    def _user_serialize(self, value: Any) -> Any:
        assert self._serializer is not None
        data = self._serializer(value)
        if self._signer is not None and not isinstance(data, bytes):
            # as in 7.2: the signature covers exact bytes, which a str does not have
            raise StreaqError(
                f"with signing_secret the serializer must return bytes, not {type(data).__name__}"
            )
        return data

    # tasks

    def encode_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """A task's arguments serialized (what :meth:`arguments` stores, before encryption).

        :raises Exception: whatever the serializer raises (``TypeError`` for msgpack)
        :raises StreaqError: when signing is on and the user serializer returns no ``bytes``
        """
        if self._serializer is not None:
            data = self._user_serialize((args, kwargs))
            return data if isinstance(data, bytes) else str(data).encode()
        return _encode((args, kwargs))

    def arguments(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The payload field of a task: its arguments serialized, and encrypted when on.

        :raises Exception: as :meth:`encode_call`
        """
        data = self.encode_call(args, kwargs)
        if self._cipher is None:
            return data
        return self._cipher.encrypt(data, ARGUMENTS + task_id.encode())

    def decode_call(self, task_id: str, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
        """Arguments from a task's payload field, untyped.

        :raises ArgumentError: when the payload is too large or cannot be decoded
        :raises DecryptionError: when encryption is on and the payload cannot be decrypted
        """
        _check_size(task_id, payload, "arguments")
        if self._cipher is not None:
            payload = self._cipher.decrypt(
                payload, ARGUMENTS + task_id.encode(), f"the arguments of task {task_id}"
            )
        try:
            if self._deserializer is not None:
                args, kwargs = self._deserializer(payload)
            else:
                args, kwargs = _decode_any(payload)
        except Exception as e:
            # RecursionError included: msgspec bounds the depth of what it decodes
            raise ArgumentError(f"cannot decode the arguments of task {task_id}: {e}") from None
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise ArgumentError(f"malformed arguments of task {task_id}")
        return list(args), kwargs

    def sign_task(self, fields: Mapping[str, Any]) -> bytes | None:
        """The signature of a task's fields, or ``None`` without a signing secret."""
        return None if self._signer is None else self._signer.sign_task(fields)

    def verify_task(self, task_id: str, fields: Mapping[str, Any]) -> None:
        """Check a task's signature (nothing to check without a signing secret).

        :raises SignatureError: when it is missing or wrong
        """
        if self._signer is not None:
            self._signer.verify_task(task_id, fields)

    def encode_last_error(self, task_id: str, exc: BaseException) -> bytes:
        """The last-error field a retried task carries (encrypted when on)."""
        record = encode_exception(exc)
        if self._cipher is None:
            return record
        return self._cipher.encrypt(record, LAST_ERROR + task_id.encode())

    def decode_last_error(self, task_id: str, data: bytes) -> BaseException:
        """The exception of a last-error field.

        :raises DecryptionError: when encryption is on and it cannot be decrypted
        """
        if self._cipher is not None:
            data = self._cipher.decrypt(
                data, LAST_ERROR + task_id.encode(), f"the last error of task {task_id}"
            )
        return record_to_exception(_exception_record(task_id, data))

    # results: a plain msgpack value, or msgpack bytes holding what the options made of it

    def _protect(self, kind: int, data: bytes) -> bytes:
        if self._cipher is not None:
            data = self._cipher.encrypt(data, RESULT + bytes((kind,)))
        if self._signer is not None:
            data = self._signer.seal(kind, data)
        return _encode(data)

    def _unprotect(self, task_id: str, kind: int, data: bytes) -> bytes:
        if self._signer is not None:
            data = self._signer.unseal(kind, data, task_id)
        if self._cipher is not None:
            data = self._cipher.decrypt(
                data, RESULT + bytes((kind,)), f"the result of task {task_id}"
            )
        return data

    def encode_value(self, value: Any) -> tuple[int, bytes]:
        """The kind (``KIND_TUPLE`` for a tuple, else ``KIND_VALUE``) and payload of a result.

        :raises Exception: when the value cannot be serialized
        """
        kind = KIND_TUPLE if isinstance(value, tuple) else KIND_VALUE
        if self._serializer is None and self._signer is None and self._cipher is None:
            return kind, _encode(value)
        data = self._user_serialize(value) if self._serializer is not None else _encode(value)
        return kind, self._protect(kind, data)

    def decode_value(self, task_id: str, kind: int, payload: bytes, tp: Any = Any) -> Any:
        """A successful result from its payload, converted to ``tp`` when given.

        :raises SignatureError: when signing is on and the seal is missing or wrong
        :raises DecryptionError: when encryption is on and the value cannot be decrypted
        :raises StreaqError: when the payload is too large or cannot be decoded
        """
        _check_size(task_id, payload, "result")
        try:
            if self._serializer is None and self._signer is None and self._cipher is None:
                if self._deserializer is not None:
                    return self._deserializer(payload)
                if tp is Any:
                    return _decode_any(payload)
                return msgspec.msgpack.decode(payload, type=tp)
            data = _decode_any(payload)
            if not isinstance(data, bytes):
                raise SignatureError(f"the result of task {task_id} is not sealed or encrypted")
            data = self._unprotect(task_id, kind, data)
            if self._deserializer is not None:
                return self._deserializer(data)
            value = _decode_any(data)
            return value if tp is Any else msgspec.convert(value, tp)
        except (StreaqError, msgspec.ValidationError):
            raise
        except Exception as e:
            raise StreaqError(f"cannot decode the result of task {task_id}: {e}") from None

    def encode_error(self, exc: BaseException) -> bytes:
        """The payload of a failed result: the exception record, sealed and encrypted when on."""
        record = encode_exception(exc)
        if self._signer is None and self._cipher is None:
            return record
        return self._protect(KIND_ERROR, record)

    def decode_error(self, task_id: str, payload: bytes) -> BaseException:
        """The exception of a failed result.

        With a signing secret or an encryption key, the record must be sealed or encrypted -- or
        be one the server decides itself (an abort, a failed dependency), which holds no value.

        :raises SignatureError: when the record is neither
        :raises DecryptionError: when encryption is on and it cannot be decrypted
        """
        _check_size(task_id, payload, "exception record")
        try:
            data = _decode_any(payload)
        except Exception as e:
            raise StreaqError(f"cannot decode the failure of task {task_id}: {e}") from None
        if isinstance(data, bytes):
            if self._signer is None and self._cipher is None:
                raise SignatureError(
                    f"the failure of task {task_id} is sealed or encrypted, and this client has "
                    "no signing_secret or encryption_key"
                )
            return decode_exception(self._unprotect(task_id, KIND_ERROR, data))
        record = _exception_record(task_id, payload)
        protected = self._signer is not None or self._cipher is not None
        if protected and (record.module, record.type) not in _SERVER_FAILURES:
            raise SignatureError(f"the failure of task {task_id} is not sealed")
        return record_to_exception(record)


#: the failures the server writes itself (``failure_payload`` in the library)
_SERVER_FAILURES = frozenset(("streaq.types", name) for name in ("StreaqCancelled", "StreaqError"))

#: the largest payload decoded (arguments, results, exception records), in bytes
MAX_PAYLOAD = 64 * 1024 * 1024


def _check_size(task_id: str, payload: bytes, what: str) -> None:
    if len(payload) > MAX_PAYLOAD:
        raise ArgumentError(
            f"the {what} of task {task_id} take {len(payload)} bytes, more than {MAX_PAYLOAD}"
        )


def _exception_record(task_id: str, payload: bytes) -> ExceptionRecord:
    try:
        return _exception_decoder.decode(payload)
    except Exception as e:
        raise StreaqError(f"cannot decode the failure of task {task_id}: {e}") from None


class CallSpec:
    """How to turn decoded arguments into a call of one task function.

    Built once at registration: per parameter, the type to convert to (if any).

    :param fn: the task function
    """

    __slots__ = (
        "_by_name",
        "_convert_at",
        "_max_args",
        "_min_args",
        "_positional",
        "_return_type",
        "_signature",
        "name",
    )

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.name = name
        self._signature = inspect.signature(fn)
        hints = _resolve_hints(fn)
        self._return_type: Any = hints.get("return", Any)
        self._positional: list[tuple[str, Any]] = []
        self._by_name: dict[str, Any] = {}
        for param in self._signature.parameters.values():
            tp = hints.get(param.name, Any)
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self._positional.append((param.name, tp))
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                self._by_name[param.name] = tp
        # a positional-only call binds without ``Signature.bind`` when its length is within
        # [required positional, all positional] and no keyword-only parameter is required
        params = list(self._signature.parameters.values())
        self._min_args = sum(
            1
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        )
        self._max_args = len(self._positional)
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            self._max_args = -1  # always bind (extra positionals go to *args)
        if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
            self._min_args, self._max_args = 1, 0  # never satisfied: always bind
        self._convert_at: list[tuple[str, Any] | None] = [
            (name, tp) if _needs_conversion(tp) else None for name, tp in self._positional
        ]

    @property
    def return_type(self) -> Any:
        """The annotated return type (``Any`` when unknown)."""
        return self._return_type

    def check(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` when the arguments do not bind to the signature."""
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ArgumentError(f"task {self.name}: {e}") from None

    def convert(self, args: list[Any], kwargs: dict[str, Any], start: int = 0) -> None:
        """Convert decoded arguments in place into the parameters' types.

        :param start: the first positional argument to convert (the ones before are typed)
        :raises ArgumentError: naming the parameter whose value has the wrong type
        """
        n_args = len(args)
        if kwargs or not self._min_args <= n_args <= self._max_args:
            # only a positional call within the plain arity needs no ``Signature.bind``
            self.check(args, kwargs)
        positional = self._convert_at
        for n in range(start, min(n_args, len(positional))):
            target = positional[n]
            if target is None:
                continue
            value = args[n]
            pname, tp = target
            vt = type(value)
            if vt is tp and vt in _SCALARS:
                continue
            if tp is float and vt is int:
                args[n] = float(value)
                continue
            args[n] = self._convert_one(pname, value, tp)
        if kwargs:
            for key, value in kwargs.items():
                tp = self._by_name.get(key, Any)
                if _needs_conversion(tp) and not (type(value) is tp and tp in _SCALARS):
                    kwargs[key] = self._convert_one(key, value, tp)

    def _convert_one(self, pname: str, value: Any, tp: Any) -> Any:
        try:
            return msgspec.convert(value, tp)
        except (msgspec.ValidationError, TypeError) as e:
            raise ArgumentError(f"task {self.name}: argument {pname!r}: {e}") from None

    def first_param_type(self) -> Any:
        """Type of the first positional parameter (what a `then` link feeds)."""
        return self._positional[0][1] if self._positional else Any


def index_state(entry: bytes) -> str:
    """The state letter (``_schema.QUEUED`` ...) of a task index entry, without decoding it all.

    The server writes each entry as a msgpack array whose first element is the one-letter state
    (a fixarray header, then a one-byte fixstr header, then the letter); a waiting or delayed
    entry also holds the task's fields, which listing thousands of ids need not decode.
    """
    return chr(entry[2]) if len(entry) > 2 else ""
