"""The socket under aiormq: frames written in one loop turn leave in one ``send``.

aiormq hands each publish, ack and method to the stream writer as its own ``write``, and an
idle asyncio transport turns every ``write`` into a system call and a TCP segment. Under load
that is most of a sender's socket cost, and the broker pays again per segment. The
:class:`CoalescingWriter` here keeps what aiormq's writer writes while more frames wait in its
queue, and sends it all as one buffer with the last of them, so ``n`` frames cost one call
instead of ``n``, and a lone frame (a request waiting for its answer) leaves at once. Nothing
waits longer than the end of the loop turn, and a ``drain`` or ``close`` flushes first.

The dialler also gives aiormq's write queue more room than its default of ten frames, so that
many concurrent publishes queue without each waking the writer for a turn of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Callable
from typing import Any

import aiormq
from aiormq.connection import TransportFactory
from pamqp import commands
from yarl import URL

from kiwipy.transports.amqp._errors import ClosedByBroker

#: Frames aiormq's writer may hold before a publisher waits (aiormq's own default is 10).
WRITE_QUEUE_FRAMES = 256
#: Above this many unsent bytes in the socket's buffer, a publish waits for it to drain.
CONGESTED_BYTES = 1 << 20
#: How much one read of the socket takes at most (:class:`BufferedStreamProtocol`).
_READ_BUFFER_BYTES = 2**16
#: asyncio's default read limit, as ``asyncio.open_connection`` uses.
_READ_LIMIT = 2**16
_DEFAULT_HOST = "localhost"
_DEFAULT_PORT = 5672


def _no_backlog() -> bool:
    return False


class CoalescingWriter(asyncio.StreamWriter):
    """A stream writer that sends a batch of frames with one write.

    ``backlog()`` tells whether more frames are queued to be written right after this one;
    while it does, writes are kept (and flushed at the end of the loop turn at the latest).
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.BaseProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
        backlog: Callable[[], bool] = _no_backlog,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._loop_ref = loop
        self._backlog = backlog
        self._pending: list[bytes] = []
        self._flush_scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending.append(bytes(data))
        if not self._backlog():
            self.flush()  # the last frame of a batch, or a lone one: no reason to wait
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop_ref.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what was written so far to the transport (a no-op when nothing is)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    @property
    def congested(self) -> bool:
        """Whether the socket's send buffer holds more than :data:`CONGESTED_BYTES`."""
        transport: Any = self.transport
        return bool(transport.get_write_buffer_size() > CONGESTED_BYTES)

    async def drain(self) -> None:
        self.flush()
        await super().drain()

    def write_eof(self) -> None:
        self.flush()
        super().write_eof()

    def close(self) -> None:
        self.flush()
        super().close()


class BufferedStreamProtocol(asyncio.StreamReaderProtocol, asyncio.BufferedProtocol):
    """A stream protocol that reads the socket into one buffer of its own.

    With a plain protocol asyncio reads with ``recv(256 KiB)``: a new 256 KiB object per read,
    which the allocator maps and unmaps, 20 to 30 µs on Linux even for one small frame (a
    confirm, a reply). Here each read goes into the same buffer and only what arrived is
    copied out to the stream reader.
    """

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self._read_view = memoryview(bytearray(_READ_BUFFER_BYTES))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._read_view[:nbytes]))


class CoalescingTransportFactory(TransportFactory):
    """Opens the TCP (or TLS) connection aiormq talks over, with a :class:`CoalescingWriter`.

    It remembers the writer of its latest connection, so that publishers can ask whether the
    socket is congested.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        self.writer: CoalescingWriter | None = None
        #: Whether aiormq's writer has more frames queued (set once the connection exists).
        self.backlog: Callable[[], bool] = _no_backlog

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kwargs.pop("ssl_context_provider", None)  # TLS comes from our own context
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_LIMIT, loop=loop)
        protocol = BufferedStreamProtocol(reader, loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol,
                url.host or _DEFAULT_HOST,
                url.port or _DEFAULT_PORT,
                ssl=self._ssl_context,
                **kwargs,
            )
        except OSError as exc:
            # As aiormq's own factories do, so errors are classified the same way.
            raise aiormq.AMQPConnectionError(*exc.args) from exc
        self.writer = CoalescingWriter(transport, protocol, reader, loop, self.backlog)
        return reader, self.writer

    @property
    def congested(self) -> bool:
        writer = self.writer
        return writer is not None and writer.congested


class _CloseSniffer:
    """Reads the handshake's frames for aiormq, and raises :class:`ClosedByBroker` for a
    ``connection.close``: the broker's reason (``530 NOT_ALLOWED - vhost x not found``), which
    aiormq reports only as an unexpected ``<Connection.Close object at 0x...>``."""

    def __init__(self, receiver: Any) -> None:
        self._receiver = receiver

    async def get_frame(self) -> Any:
        received = await self._receiver.get_frame()
        frame = received[-1]
        if isinstance(frame, commands.Connection.Close):
            raise ClosedByBroker(frame.reply_code or 0, frame.reply_text or "")
        return received

    def __getattr__(self, name: str) -> Any:
        return getattr(self._receiver, name)


def _handshake_rpc_takes_a_receiver() -> bool:
    """Whether this aiormq sends the handshake through ``Connection._rpc(request, writer,
    frame_receiver, wait_response)`` (aiormq 7), which we can hand a :class:`_CloseSniffer`."""
    rpc = getattr(aiormq.Connection, "_rpc", None)
    if rpc is None:
        return False
    try:
        names = list(inspect.signature(rpc).parameters)
    except (TypeError, ValueError):
        return False
    return names == ["request", "writer", "frame_receiver", "wait_response"]


_SNIFF_HANDSHAKE = _handshake_rpc_takes_a_receiver()


#: Heartbeat intervals without a frame after which the broker is taken for dead.
HEARTBEATS_OF_SILENCE = 2
_GRACE_ATTRIBUTE = "_Connection__heartbeat_grace_timeout"


def silence_limit(heartbeat: int) -> float:
    """Seconds without a frame before the connection is dropped: aiormq looks every
    ``max(1, heartbeat // 2)`` s, so the drop comes at most ``2 x heartbeat + 1`` s after the
    last frame (the broker sends one every ``heartbeat / 2`` s: three or more were missed)."""
    checked_every = max(1, heartbeat // 2)
    return float(HEARTBEATS_OF_SILENCE * heartbeat + 1 - checked_every)


class WideQueueConnection(aiormq.Connection):
    """aiormq's connection with room for :data:`WRITE_QUEUE_FRAMES` frames in its write queue,
    the broker's reason when it refuses the handshake, and a silent broker dropped within two
    heartbeat intervals and a second (:func:`silence_limit`), not aiormq's three intervals plus
    three seconds: 9 to 11 s instead of 18 to 20 s with a 5 s heartbeat (a frozen node)."""

    FRAME_BUFFER_SIZE = WRITE_QUEUE_FRAMES
    wire: CoalescingTransportFactory

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aiormq's grace, (heartbeat + 1) * 3 s, lives in a private attribute: set where known.
        if self.heartbeat_timeout > 0 and hasattr(self, _GRACE_ATTRIBUTE):
            setattr(self, _GRACE_ATTRIBUTE, silence_limit(self.heartbeat_timeout))

    if _SNIFF_HANDSHAKE:

        @staticmethod
        async def _rpc(
            request: Any, writer: Any, frame_receiver: Any, wait_response: bool = True
        ) -> Any:
            rpc: Any = getattr(aiormq.Connection, "_rpc")  # noqa: B009 -- untyped on aiormq 6
            return await rpc(
                request,
                writer=writer,
                frame_receiver=_CloseSniffer(frame_receiver),
                wait_response=wait_response,
            )

    @property
    def congested(self) -> bool:
        """Whether a publish should wait for the socket to drain (backpressure)."""
        return self.wire.congested


async def dial(url: str, options: dict[str, Any]) -> WideQueueConnection:
    """Open an aiormq connection over a coalescing socket writer.

    ``options`` are ``aiormq.connect``'s keyword arguments; ``context`` (the TLS context, for
    ``amqps://``) is used by the socket factory, the rest go to the connection.
    """
    options = dict(options)
    wire = CoalescingTransportFactory(options.pop("context", None))
    connection = WideQueueConnection(url, transport_factory=wire, **options)
    connection.wire = wire
    queue = connection.write_queue
    wire.backlog = lambda: not queue.empty()
    await connection.connect()
    return connection
