"""A ThreadingHTTPServer served from a daemon thread: the lifecycle shared by the API gateway and the simulators'
HTTP fronts (port 0 = a free port; stop() is safe to call twice).

Every accepted connection gets TCP_NODELAY: BaseHTTPRequestHandler writes the headers and the body in separate
sends, and on a keep-alive connection Nagle's algorithm then holds the body until the client's delayed ACK,
~40 ms per response (measured, see tooling-notes). `write_response` also sends a whole response in one write.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class NoDelayThreadingHTTPServer(ThreadingHTTPServer):
    # socketserver's default backlog is 5: an 8th simultaneous connect was dropped and retried by the client's
    # kernel after 1 s (SYN retransmission), measured as a 1 s p99 on GET /v1/health with 8 clients.
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def write_response(handler: BaseHTTPRequestHandler, status: int, headers: Iterable[tuple[str, str]],
                   body: bytes) -> None:
    """Status line, headers (plus Server, Date and Content-Length) and body in ONE write; no body for HEAD."""
    handler.log_request(status)
    reason = handler.responses.get(status, ("",))[0]
    lines = [f"{handler.protocol_version} {status} {reason}\r\n", f"Server: {handler.version_string()}\r\n",
             f"Date: {handler.date_time_string()}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    handler.wfile.write("".join(lines).encode("latin-1", "strict") + (b"" if handler.command == "HEAD" else body))


class BackgroundHttpServer:
    thread_name = "http"

    def __init__(self, handler_class: type[BaseHTTPRequestHandler], host: str, port: int) -> None:
        self._server = NoDelayThreadingHTTPServer((host, port), handler_class)
        self._server.daemon_threads = True  # a hung client connection must not keep the process alive
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> None:
        # A short poll interval keeps stop() quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.thread_name}:{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._before_stop()
        if self._thread is not None:  # shutdown() would wait forever for a loop that never ran
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def _before_stop(self) -> None:
        """Subclasses wake long-running handlers (streams) here."""
