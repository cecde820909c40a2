"""The local broker's wire: length-prefixed frames on a Unix socket, and where things live.

A frame is ``len(4) | header_len(4) | header (JSON) | body (bytes)``, both lengths big-endian.
The header carries the operation and the message properties; the body is the message body,
untouched. Standard library only: the broker process imports nothing else of kiwipy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = (
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "FrameError",
    "FrameProtocol",
    "FrameReader",
    "StatePaths",
    "decode_frame",
    "encode_frame",
    "encode_ok",
    "state_directory",
)

PROTOCOL_VERSION = 1
PRODUCT = "kiwipy-local-broker"
#: The largest frame either side accepts: the message size cap plus room for the header.
MAX_FRAME_BYTES = 64 * 1024 * 1024 + 65536
#: The read buffer of a connection (either side); a larger frame grows it while it is read.
READ_BUFFER_BYTES = 64 * 1024
_LENGTHS = struct.Struct(">II")
_LENGTH = struct.Struct(">I")
_HEADER = json.JSONEncoder(separators=(",", ":"), default=str)
#: Unix socket paths longer than this do not fit ``sockaddr_un`` on every system (104 on macOS).
_MAX_SOCKET_PATH = 100


class FrameError(ValueError):
    """A frame that cannot be read: too large, or not of this protocol."""


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = _HEADER.encode(header).encode()
    total = 4 + len(encoded) + len(body)
    if total > MAX_FRAME_BYTES:
        raise FrameError(f"A frame of {total} bytes is over the limit of {MAX_FRAME_BYTES}")
    return _LENGTHS.pack(total, len(encoded)) + encoded + body


def encode_ok(request: Any) -> bytes:
    """``encode_frame({"op": "ok", "id": request})``, made quickly for an int (a confirm)."""
    if type(request) is not int:
        return encode_frame({"op": "ok", "id": request})
    header = b'{"op":"ok","id":%d}' % request
    return _LENGTHS.pack(4 + len(header), len(header)) + header


def decode_frame(payload: bytes | memoryview) -> tuple[dict[str, Any], bytes]:
    """The header and body of a frame's payload (what follows its length)."""
    (header_length,) = _LENGTH.unpack_from(payload)
    if header_length > len(payload) - 4:
        raise FrameError("A frame's header is longer than the frame")
    try:
        header = json.loads(bytes(payload[4 : 4 + header_length]))
    except ValueError as exc:
        raise FrameError(f"A frame's header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise FrameError("A frame's header is not an object")
    return header, bytes(payload[4 + header_length :])


class FrameReader:
    """Reads frames straight into one buffer, for an :class:`asyncio.BufferedProtocol`.

    asyncio's plain protocols read with ``recv(256 KiB)``: a new 256 KiB object per read, which
    costs 20 to 30 µs on Linux for a frame of 60 bytes (the allocator maps and unmaps it),
    several times the rest of the read. Here the socket is read into a buffer that lives as long
    as the connection. A frame larger than it doubles it as its bytes arrive (so memory follows
    what was received, not what a frame announces, and each byte is moved twice at most on
    average); the room is given back once the buffer is empty.
    """

    def __init__(self, size: int = READ_BUFFER_BYTES) -> None:
        self._size = size
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        #: The unread bytes are ``[_start, _end)``.
        self._start = 0
        self._end = 0

    def get_buffer(self) -> memoryview:
        """Where the next read goes (never empty)."""
        if self._end == len(self._buffer):
            self._make_room(self._end - self._start + 1)
        return self._view[self._end :]

    def received(self, nbytes: int) -> None:
        """``nbytes`` were read into the buffer :meth:`get_buffer` gave."""
        self._end += nbytes

    def frames(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """The whole frames received, in order, then :class:`FrameError` if one is bad.
        Iterate to the end."""
        while self._end - self._start >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer, self._start)
            if length > MAX_FRAME_BYTES or length < 4:
                raise FrameError(f"A frame of {length} bytes is refused (limit {MAX_FRAME_BYTES})")
            if self._end - self._start - 4 < length:
                return  # the rest is read after it (get_buffer makes room as bytes arrive)
            offset = self._start + 4
            self._start = offset + length
            yield decode_frame(self._view[offset : self._start])
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buffer) > self._size:  # a large frame is gone: give its room back
                self._replace(bytearray(self._size))

    def _make_room(self, needed: int) -> None:
        """Move the unread bytes to the front, into a buffer twice as large if ``needed``
        bytes do not fit in this one."""
        unread = bytes(self._view[self._start : self._end])
        if needed > len(self._buffer):
            self._replace(bytearray(2 * len(self._buffer)))
        self._view[: len(unread)] = unread
        self._start, self._end = 0, len(unread)

    def _replace(self, buffer: bytearray) -> None:
        self._view.release()
        self._buffer = buffer
        self._view = memoryview(buffer)


class FrameProtocol(asyncio.BufferedProtocol):
    """One end of a connection (the broker's or a client's): its bytes read into a
    :class:`FrameReader`, each whole frame handed to :meth:`frame_received` as it arrives, a
    bad one to :meth:`frame_refused` (which stops the reading of what was received)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._frames = FrameReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._frames.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._frames.received(nbytes)
        try:
            for header, body in self._frames.frames():
                self.frame_received(header, body)
        except FrameError as exc:
            self.frame_refused(exc)

    def frame_received(self, header: dict[str, Any], body: bytes) -> None:
        raise NotImplementedError

    def frame_refused(self, error: FrameError) -> None:
        raise NotImplementedError


def state_directory(location: str = "", path: str = "") -> Path:
    """The state directory a ``local://`` URL names.

    ``local:///abs/dir`` is that directory; ``local://NAME`` a sibling of the default one;
    ``local://`` the default: ``$KIWIPY_HOME``, else ``$XDG_STATE_HOME/kiwipy/default``, else
    ``~/.local/state/kiwipy/default``.
    """
    if path and path != "/":
        return Path(path)
    home = os.environ.get("KIWIPY_HOME")
    if home:
        default = Path(home)
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        default = Path(state) / "kiwipy" / "default"
    return default.parent / location if location else default


class StatePaths:
    """The files of one state directory (made 0700: the directory is the access control)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.database = self.directory / "broker.sqlite3"
        self.broker_lock = self.directory / "broker.lock"
        self.spawn_lock = self.directory / "spawn.lock"
        self.pid_file = self.directory / "broker.pid"
        self.log = self.directory / "broker.log"

    def make(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def socket(self) -> Path:
        """``broker.sock`` in the directory, or a short path in the temp dir when that is
        too long for a Unix socket (the same for every client: it is derived from the path)."""
        socket = self.directory / "broker.sock"
        if len(str(socket)) <= _MAX_SOCKET_PATH:
            return socket
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        runtime = Path(tempfile.gettempdir()) / f"kiwipy-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        return runtime / f"{digest}.sock"

    def broker_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
