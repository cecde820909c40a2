"""Tiny blocking AMQP 0-9-1 client used only to tell whether a broker is ready.

It opens a connection, logs in with PLAIN, opens the virtual host and closes the
connection again. Only the handful of frames needed for that are implemented, so the
harness needs no AMQP library (kiwipy keeps the real one behind its transport).
"""

from __future__ import annotations

import socket
import struct
import time

__all__ = ["AmqpProbeError", "amqp_handshake", "port_is_open", "wait_port_closed"]

_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1
_FRAME_END = 0xCE
_CONNECTION = 10
_START, _START_OK = 10, 11
_TUNE, _TUNE_OK = 30, 31
_OPEN, _OPEN_OK = 40, 41
_CLOSE, _CLOSE_OK = 50, 51


class AmqpProbeError(ConnectionError):
    """The peer did not complete an AMQP 0-9-1 handshake."""


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!B", len(raw)) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack("!I", len(raw)) + raw


def _method_frame(method_id: int, arguments: bytes) -> bytes:
    payload = struct.pack("!HH", _CONNECTION, method_id) + arguments
    return struct.pack("!BHI", _FRAME_METHOD, 0, len(payload)) + payload + bytes([_FRAME_END])


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise AmqpProbeError("connection closed during the AMQP handshake")
        chunks += chunk
    return bytes(chunks)


def _read_method(sock: socket.socket) -> tuple[int, bytes]:
    """Read one connection-class method frame; return ``(method_id, arguments)``."""
    header = _recv_exact(sock, 7)
    if header.startswith(b"AMQP"):
        raise AmqpProbeError("the broker rejected the AMQP 0-9-1 protocol header")
    frame_type, _channel, size = struct.unpack("!BHI", header)
    body = _recv_exact(sock, size + 1)
    if frame_type != _FRAME_METHOD or body[-1] != _FRAME_END or size < 4:
        raise AmqpProbeError(f"unexpected AMQP frame of type {frame_type}")
    class_id, method_id = struct.unpack("!HH", body[:4])
    if class_id != _CONNECTION:
        raise AmqpProbeError(f"unexpected AMQP method {class_id}.{method_id}")
    if method_id == _CLOSE:
        raise AmqpProbeError(f"the broker closed the connection: {body[4:-1]!r}")
    return method_id, body[4:-1]


def _expect(sock: socket.socket, method_id: int) -> bytes:
    got, arguments = _read_method(sock)
    if got != method_id:
        raise AmqpProbeError(f"expected connection method {method_id}, got {got}")
    return arguments


def _login(sock: socket.socket, user: str, password: str, vhost: str) -> None:
    sock.sendall(_PROTOCOL_HEADER)
    _expect(sock, _START)
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    start_ok = struct.pack("!I", 0) + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US")
    sock.sendall(_method_frame(_START_OK, start_ok))
    tune = _expect(sock, _TUNE)
    channel_max, frame_max, _heartbeat = struct.unpack("!HIH", tune[:8])
    sock.sendall(_method_frame(_TUNE_OK, struct.pack("!HIH", channel_max, frame_max, 0)))
    sock.sendall(_method_frame(_OPEN, _shortstr(vhost) + _shortstr("") + b"\x00"))
    _expect(sock, _OPEN_OK)
    close = struct.pack("!H", 200) + _shortstr("probe done") + struct.pack("!HH", 0, 0)
    sock.sendall(_method_frame(_CLOSE, close))
    _expect(sock, _CLOSE_OK)


def amqp_handshake(
    host: str,
    port: int,
    *,
    user: str = "guest",
    password: str = "guest",  # noqa: S107 - RabbitMQ's well-known default account
    vhost: str = "/",
    timeout: float = 5.0,
) -> None:
    """Open and cleanly close an AMQP connection; raise :class:`OSError` on any failure."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        _login(sock, user, password, vhost)


def port_is_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port_closed(host: str, port: int, timeout: float) -> bool:
    """Poll until ``host:port`` refuses connections; return whether it did in time."""
    deadline = time.monotonic() + timeout
    while port_is_open(host, port, timeout=0.5):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
