"""A TCP proxy that can cut, stall and refuse connections between client and broker.

The proxy runs its own event loop in a background thread, so both blocking and
asyncio tests can drive it; every public method may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy"]

_T = TypeVar("_T")
_CALL_TIMEOUT = 10.0
_RST_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


class _Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the broker's)."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.reading = True
        self.write_paused = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.link.closed:  # cut or shut down while this side was connecting
            self.abort()
            return
        self.link.side_connected(self)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def eof_received(self) -> bool:
        return False  # close our side; connection_lost then closes the other one

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.link.side_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.link.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.link.update_reading()

    def set_reading(self, wanted: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or wanted == self.reading:
            return
        self.reading = wanted
        if wanted:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def abort(self) -> None:
        """Close at once with a TCP reset, dropping buffered data."""
        transport = self.transport
        if transport is None:
            if not self.lost.done():
                self.lost.set_result(None)
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
        transport.abort()


class _Link:
    """A client connection and its upstream connection to the target."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.closed = False

    def peer(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def side_connected(self, side: _Side) -> None:
        if side is self.client:
            self.proxy._accepted(self)
        else:
            self.update_reading()

    def forward(self, side: _Side, data: bytes) -> None:
        transport = self.peer(side).transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def update_reading(self) -> None:
        """Read from a side only while the proxy flows and the other side keeps up."""
        connected = self.upstream.transport is not None
        for side in (self.client, self.upstream):
            peer = self.peer(side)
            side.set_reading(connected and not self.proxy.stalled and not peer.write_paused)

    def side_lost(self, side: _Side) -> None:
        if self.closed:
            return
        self.closed = True
        peer = self.peer(side).transport
        if peer is not None and not peer.is_closing():
            peer.close()  # flush what the other side already sent, then FIN
        self.proxy._forget(self)

    def abort(self) -> None:
        self.closed = True
        self.client.abort()
        self.upstream.abort()
        self.proxy._forget(self)

    async def wait_lost(self) -> None:
        await asyncio.gather(self.client.lost, self.upstream.lost)


class TcpProxy:
    """Forward ``listen_host:<port>`` to ``target_host:target_port`` with fault switches.

    ``cut()`` resets every current connection, ``stall()``/``resume()`` stop and restart
    the bytes in both directions (a partition: nothing is closed), ``refuse()``/
    ``accept()`` make new connections get reset at once or work again.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.stalled = False
        self.refusing = False
        self._links: set[_Link] = set()
        self._closing_links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._flowing: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kiwipy-tcp-proxy", daemon=True)
        self._thread.start()
        try:
            self.port: int = self._submit(self._open(listen_port))
        except BaseException:
            self._stop_thread()
            raise

    # -- public API (any thread) -------------------------------------------------------

    @property
    def connections(self) -> int:
        """Number of client connections currently proxied."""
        return len(self._links)

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    def url_for(self, broker_url: str) -> str:
        """``broker_url`` with host and port replaced by the proxy's."""
        parts = urlsplit(broker_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{self.listen_host}:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc}" if userinfo else netloc))

    def cut(self) -> None:
        """Reset every current connection on both sides; keep listening."""
        self._call(self._cut_all)

    def stall(self) -> None:
        """Stop forwarding bytes in both directions, keeping connections open."""
        self._call(lambda: self._set_stalled(True))

    def resume(self) -> None:
        """Forward bytes again after :meth:`stall`."""
        self._call(lambda: self._set_stalled(False))

    def refuse(self) -> None:
        """Reset new connections as soon as they are accepted."""
        self._call(lambda: setattr(self, "refusing", True))

    def accept(self) -> None:
        """Accept and forward new connections again after :meth:`refuse`."""
        self._call(lambda: setattr(self, "refusing", False))

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        """Block until exactly ``count`` connections are proxied."""
        deadline = time.monotonic() + timeout
        while self.connections != count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.connections} proxied connections, wanted {count}")
            time.sleep(0.01)

    async def await_connections(self, count: int, timeout: float = 10.0) -> None:
        """Like :meth:`wait_for_connections`, without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while self.connections != count:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.connections} proxied connections, wanted {count}")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Reset all connections, stop listening and stop the proxy's thread."""
        if self._loop.is_closed() or not self._thread.is_alive():
            return
        try:
            self._submit(self._shutdown())
        finally:
            self._stop_thread()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- loop thread ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _stop_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT)

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking TcpProxy call from the proxy's own thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)

    def _call(self, function: Callable[[], None]) -> None:
        if threading.current_thread() is self._thread:
            function()
            return

        async def run() -> None:
            function()

        self._submit(run())

    async def _open(self, listen_port: int) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        link_factory = _Link
        self._server = await asyncio.get_running_loop().create_server(
            lambda: link_factory(self).client, self.listen_host, listen_port
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _accepted(self, link: _Link) -> None:
        self._links.add(link)
        if self.refusing:
            link.abort()
            return
        link.update_reading()  # no upstream yet: holds the client's bytes
        task = asyncio.get_running_loop().create_task(self._connect_upstream(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_upstream(self, link: _Link) -> None:
        assert self._flowing is not None
        await self._flowing.wait()  # a partition also blocks new connections
        if link.closed:
            link.upstream.abort()
            return
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: link.upstream, self.target_host, self.target_port
            )
        except OSError:
            link.abort()

    def _forget(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            self._closing_links.add(link)
            task = asyncio.get_running_loop().create_task(self._reap(link))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reap(self, link: _Link) -> None:
        await link.wait_lost()
        self._closing_links.discard(link)

    def _cut_all(self) -> None:
        for link in list(self._links):
            link.abort()

    def _set_stalled(self, stalled: bool) -> None:
        self.stalled = stalled
        assert self._flowing is not None
        if stalled:
            self._flowing.clear()
        else:
            self._flowing.set()
        for link in list(self._links):
            link.update_reading()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sides = [side for link in self._closing_links for side in (link.client, link.upstream)]
        for side in sides:
            if not side.lost.done():
                side.abort()  # a graceful close may wait forever on a peer that stopped reading
        lost = [side.lost for side in sides]
        await asyncio.wait_for(asyncio.gather(*lost, return_exceptions=True), _CALL_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()
        for _ in range(3):  # let aborted transports run their close callbacks
            await asyncio.sleep(0)
