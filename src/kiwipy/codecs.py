"""Message body codecs: turning Python values into bytes and back, safely.

Choices made here:

* **JSON is the default codec.** It is fast, compact (no spaces after separators), readable by
  any language, and cannot build anything but plain data. Tuples become lists. Bodies are ASCII
  (non-ASCII characters are escaped), so lone surrogates round-trip and no body is invalid UTF-8.
* **msgpack is optional.** It is imported only when used; without it, using the codec raises an
  error whose message says ``pip install kiwipy[msgpack]``. Decoding keeps msgpack's safe
  defaults (map keys must be ``str`` or ``bytes``, size limits derived from the body length) and
  ``raw=False`` (strings come back as ``str``).
* **YAML is read with a safe loader only.** kiwipy 0.9 peers send ``yaml.dump(...)`` output with
  no content type, e.g. a task is ``!!python/tuple [task, no_reply]``. The loader here is a
  :class:`yaml.SafeLoader` (the libyaml one when available) that also accepts exactly the
  ``!!python/tuple`` tag and nothing else from the ``python/`` family: ``!!python/object``,
  ``!!python/name``, ``!!python/object/apply``... raise :class:`~kiwipy.exceptions.DecodeError`.
  Values are dumped with a safe dumper (tuples as lists).
* **Messages without a content type** come from kiwipy 0.9 peers. They are decoded with the
  user's decoder when one is configured, else as YAML (a superset of JSON, so JSON bodies decode
  as well).
* **Errors have one type per direction.** :meth:`Codec.encode` raises only
  :class:`~kiwipy.exceptions.EncodeError` and :meth:`Codec.decode` only
  :class:`~kiwipy.exceptions.DecodeError`, whatever went wrong underneath (bad UTF-8, bad syntax,
  too deep nesting, a failing user function); the original error is chained as ``__cause__``.
* **The size cap is checked first.** :meth:`MessageCodec.decode` refuses an oversized body with
  :class:`~kiwipy.exceptions.MessageTooLarge` before any parser sees it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

from kiwipy.exceptions import DecodeError, EncodeError, KiwipyError, MessageTooLarge, type_name
from kiwipy.settings import Settings

__all__ = ("JSON", "MSGPACK", "YAML_SAFE", "Codec", "MessageCodec", "custom_codec")

MSGPACK_INSTALL_HINT = "msgpack is not installed; install it with: pip install kiwipy[msgpack]"


@dataclasses.dataclass(frozen=True)
class Codec:
    """A named pair of functions between Python values and message bodies.

    ``content_type`` is announced with every message sent with this codec (``None`` announces
    nothing, as kiwipy 0.9 did).
    """

    name: str
    content_type: str | None
    dumps: Callable[[Any], bytes] = dataclasses.field(repr=False)
    loads: Callable[[bytes], Any] = dataclasses.field(repr=False)

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as bytes; any failure raises :class:`EncodeError`."""
        try:
            body = self.dumps(value)
        except EncodeError:
            raise
        except Exception as exc:
            raise EncodeError(
                f"Cannot encode a value of type {type_name(value)} with the {self.name} codec: "
                f"{_describe(exc)}"
            ) from exc
        return _as_bytes(body, self.name)

    def decode(self, body: bytes) -> Any:
        """Return the value in ``body``; any failure raises :class:`DecodeError`."""
        try:
            return self.loads(body)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"Cannot decode the body with the {self.name} codec: {_describe(exc)}"
            ) from exc


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _as_bytes(body: object, codec_name: str) -> bytes:
    """Accept ``bytes`` (and ``str``, as UTF-8) from an encoder; refuse anything else."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"The {codec_name} encoder returned a str that is not UTF-8") from exc
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise EncodeError(f"The {codec_name} encoder returned {type_name(body)}; expected bytes or str")


# --- JSON ----------------------------------------------------------------------------------------


def _json_default(value: object) -> NoReturn:
    raise EncodeError.unsupported(value, "JSON")


# kiwipy 0.9 peers read JSON with a YAML 1.1 parser, which takes ``1e+20`` for a string: a float
# needs a dot in its mantissa there. Strings are matched first so that their text is left alone.
_EXPONENT_HINT = re.compile(rb"[0-9]e[-+]?[0-9]")
_STRING_OR_BARE_EXPONENT = re.compile(rb'("(?:[^"\\]|\\.)*")|(?<![0-9.])(-?[0-9]+)(e[-+]?[0-9]+)')


def _dotted_exponents(body: bytes) -> bytes:
    def fix(match: re.Match[bytes]) -> bytes:
        if match.group(1) is not None:
            return match.group(1)
        return match.group(2) + b".0" + match.group(3)

    return _STRING_OR_BARE_EXPONENT.sub(fix, body)


def _json_dumps(value: Any) -> bytes:
    try:
        # Raw UTF-8, not \ud83d-style escapes: YAML 1.1 reads escaped surrogate pairs as two
        # lone surrogates.
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: escape everything instead
        text = json.dumps(value, separators=(",", ":"), default=_json_default)
        body = text.encode("ascii")
    if _EXPONENT_HINT.search(body):
        body = _dotted_exponents(body)
    return body


def _json_loads(body: bytes) -> Any:
    # Decode explicitly: ``json.loads(bytes)`` would also guess UTF-16 and UTF-32.
    return json.loads(body.decode("utf-8"))


JSON = Codec("JSON", "application/json", _json_dumps, _json_loads)


# --- msgpack -------------------------------------------------------------------------------------


def _msgpack() -> Any:
    """Import msgpack on first use; it is an optional dependency."""
    try:
        import msgpack
    except ImportError as exc:
        raise KiwipyError(MSGPACK_INSTALL_HINT) from exc
    return msgpack


def _msgpack_default(value: object) -> NoReturn:
    raise EncodeError.unsupported(value, "msgpack")


def _msgpack_dumps(value: Any) -> bytes:
    body: bytes = _msgpack().packb(value, use_bin_type=True, default=_msgpack_default)
    return body


def _msgpack_loads(body: bytes) -> Any:
    return _msgpack().unpackb(body, raw=False)


MSGPACK = Codec("msgpack", "application/msgpack", _msgpack_dumps, _msgpack_loads)


# --- YAML ----------------------------------------------------------------------------------------

# The YAML machinery lives in kiwipy._yaml, imported on first use: only kiwipy 0.9 peers (or
# ``codec="yaml"``) need it, and PyYAML takes as long to import as the rest of kiwipy.


def _yaml_dumps(value: Any) -> bytes:
    from kiwipy import _yaml

    return _yaml.dumps(value)


def _yaml_loads(body: bytes) -> Any:
    from kiwipy import _yaml

    return _yaml.loads(body)


YAML_SAFE = Codec("YAML", "application/x-yaml", _yaml_dumps, _yaml_loads)


# --- user codecs ---------------------------------------------------------------------------------


def custom_codec(encoder: Callable[[Any], bytes], decoder: Callable[[bytes], Any]) -> Codec:
    """Wrap a kiwipy 0.9 style ``encoder``/``decoder`` pair; it announces no content type.

    The encoder may return ``str`` (sent as UTF-8). Exceptions from either function become
    :class:`EncodeError` / :class:`DecodeError`, with the original as ``__cause__``.
    """
    return Codec("custom", None, encoder, decoder)


# --- choosing a codec per message ----------------------------------------------------------------

_BY_NAME: dict[str, Codec] = {"json": JSON, "msgpack": MSGPACK, "yaml": YAML_SAFE}
_BY_CONTENT_TYPE: dict[str, Codec] = {
    "application/json": JSON,
    "text/json": JSON,
    "application/msgpack": MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/x-yaml": YAML_SAFE,
    "application/yaml": YAML_SAFE,
    "text/yaml": YAML_SAFE,
}


def _media_type(content_type: str) -> str:
    """``'Application/JSON; charset=utf-8'`` -> ``'application/json'``."""
    return content_type.split(";", 1)[0].strip().lower()


def _sending_codec(settings: Settings) -> Codec:
    if settings.encoder is not None and settings.decoder is not None:
        return custom_codec(settings.encoder, settings.decoder)
    try:
        codec = _BY_NAME[settings.codec.strip().lower()]
    except KeyError:
        known = ", ".join(repr(name) for name in _BY_NAME)
        raise ValueError(f"Unknown codec {settings.codec!r}; expected one of {known}") from None
    if codec is MSGPACK:
        _msgpack()  # fail now, not on the first message
    return codec


class MessageCodec:
    """Encodes outgoing bodies with the configured codec; decodes incoming ones by content type.

    Raises ``ValueError`` for an unknown ``settings.codec`` and :class:`KiwipyError` when
    ``settings.codec == 'msgpack'`` but msgpack is not installed.
    """

    def __init__(self, settings: Settings) -> None:
        self._max_bytes = settings.max_message_bytes
        self._sending = _sending_codec(settings)
        self._untyped = self._sending if self._sending.content_type is None else YAML_SAFE

    @property
    def codec(self) -> Codec:
        """The codec outgoing messages are encoded with."""
        return self._sending

    @property
    def content_type(self) -> str | None:
        """The content type announced with outgoing messages."""
        return self._sending.content_type

    @property
    def max_message_bytes(self) -> int:
        return self._max_bytes

    def encode(self, value: Any) -> tuple[bytes, str | None]:
        """Return the body for ``value`` and its content type.

        Raises :class:`EncodeError`, or :class:`MessageTooLarge` over the size cap.
        """
        body = self._sending.encode(value)
        self._check_size(len(body))
        return body, self._sending.content_type

    def decode(self, body: bytes, content_type: str | None) -> Any:
        """Return the value in ``body``, choosing the codec by ``content_type``.

        Raises :class:`MessageTooLarge` over the size cap (before parsing), else only
        :class:`DecodeError`.
        """
        self._check_size(len(body))
        return self._codec_for(content_type).decode(body)

    def _codec_for(self, content_type: str | None) -> Codec:
        media_type = _media_type(content_type or "")
        if not media_type:
            return self._untyped
        try:
            return _BY_CONTENT_TYPE[media_type]
        except KeyError:
            raise DecodeError(f"Unsupported content type {content_type!r}") from None

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise MessageTooLarge(
                f"Message body of {size} bytes is over the cap of {self._max_bytes} bytes"
            )

    def __repr__(self) -> str:
        return f"MessageCodec(codec={self._sending.name}, max_message_bytes={self._max_bytes})"
