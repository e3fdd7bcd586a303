"""One delivery attempt has one deadline (WebhookHttp.timeout_s) for everything it does.

Review proved the gap: httpx's timeout applies to each socket operation, so a receiver that sent one header line
every 0.3 s held a POST with timeout_s=0.5 open for as long as it liked (and with it the shared delivery function,
whose other messages then burned their receive counts)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from satflow.adapters.webhook_http import WebhookHttp
from satflow.domain.webhooks import WebhookTransportError, parse_target


def serve(respond, connections: int = 1) -> int:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def run() -> None:
        for _ in range(connections):
            conn, _ = srv.accept()
            with conn:
                while True:  # keep-alive: answer every request on this connection
                    if not conn.recv(65536):
                        break
                    if not respond(conn):
                        break
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def drip(conn) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    end = time.monotonic() + 4.0
    try:
        while time.monotonic() < end:
            conn.sendall(b"X-Slow: a\r\n")
            time.sleep(0.3)
        conn.sendall(b"Content-Length: 0\r\n\r\n")
    except OSError:
        pass  # the client gave up, as it should
    return False


def target(port: int):
    return parse_target(f"http://receiver.test:{port}/hook", allow_private=True)


def test_a_receiver_dripping_its_headers_is_cut_off_at_the_deadline():
    http = WebhookHttp(timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(WebhookTransportError):
        http.post(target(serve(drip)), "127.0.0.1", {}, b"{}")
    assert time.monotonic() - started < 1.5  # without the deadline: the whole 4 s drip


def test_prompt_receivers_are_unaffected_and_the_deadline_is_per_attempt():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses one connection

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        http = WebhookHttp(timeout_s=0.5)
        for _ in range(3):  # each attempt gets a fresh deadline, also on a kept-alive connection
            assert http.post(target(server.server_address[1]), "127.0.0.1", {}, b"{}") == 200
            time.sleep(0.3)
    finally:
        server.shutdown()
        server.server_close()


def test_name_resolution_has_the_same_deadline(monkeypatch):
    def slow_getaddrinfo(*args, **kwargs):
        time.sleep(2)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    http = WebhookHttp(timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(WebhookTransportError, match="no answer"):
        http.resolve("hooks.example.com", 443)
    assert time.monotonic() - started < 1.0
