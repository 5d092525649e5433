"""A TCP proxy on loopback that can lose a reply: the server runs a command, the client
never hears back (its connection is cut instead), as when a primary dies after a write.

``ReplyCutter(upstream_port)`` listens on a free loopback port and pipes every
connection to the upstream server; after ``cut_next_reply(marker)`` the next bytes the
server sends back that hold ``marker`` (``*``: the array EXEC answers with, once the
transaction ran) are dropped and that client connection is closed. After
``cut_next_request(marker)`` the next bytes a client sends that hold ``marker`` are
dropped and both sides of that connection reset: the server never gets the command
whole, and a client still writing it fails while writing.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.support.servers import free_port

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class ReplyCutter:
    """One listener, a pair of pipe threads per connection; ``close`` stops it all."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._cut = threading.Event()
        self._marker = b""
        self._cut_request = threading.Event()
        self._request_marker = b""
        self.cuts = 0
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next_reply(self, marker: bytes = b"") -> None:
        """Drop the next reply the server sends that holds ``marker``, and close that
        client's connection."""
        self._marker = marker
        self._cut.set()

    def cut_next_request(self, marker: bytes) -> None:
        """Drop the next bytes a client sends that hold ``marker``, and reset that
        client's connection and its connection to the server."""
        self._request_marker = marker
        self._cut_request.set()

    def close(self) -> None:
        """Stop listening and close every connection."""
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if not replies and self._cut_request.is_set() and self._request_marker in data:
                    self._cut_request.clear()
                    self.cuts += 1
                    for sock in (source, target):  # a reset (SO_LINGER 0), not an orderly end
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                        sock.close()
                    return
                if replies and self._cut.is_set() and self._marker in data:
                    self._cut.clear()
                    self.cuts += 1
                    target.shutdown(socket.SHUT_RDWR)  # the client sees the connection end
                    target.close()
                    source.close()
                    return
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
