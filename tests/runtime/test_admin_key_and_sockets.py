"""`make run` refuses an account-shaped SATFLOW_ADMIN_KEY before starting anything; every dev HTTP server flushes
responses without the Nagle delay (TCP_NODELAY on each connection, the gateway's response in one write)."""
from __future__ import annotations

import http.client
import json
import socket
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from satflow_dev.runtime.background_http import BackgroundHttpServer


def test_make_run_refuses_an_account_shaped_admin_key_with_a_clear_message(tiny_template, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "satflow_dev.runtime", "--port", "0", "--template", str(tiny_template),
         "--dynamodb", "moto"],
        env={"PATH": "/usr/bin:/bin", "SATFLOW_ADMIN_KEY": "sk_" + "z" * 43, "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SATFLOW_ADMIN_KEY refused" in result.stderr and "prefix of account API keys" in result.stderr
    assert "z" * 43 not in result.stderr + result.stdout  # the refused secret is not echoed
    assert not (tiny_template.parent / ".build" / "local-admin-key").exists()


def test_the_runtime_refuses_it_before_binding_anything(tiny_template):
    from satflow.app.accounts import AdminKeyMisconfigured
    from satflow_dev.runtime.local_runtime import LocalRuntime

    runtime = LocalRuntime(tiny_template, port=0, service_factories=[], environ={"SATFLOW_ADMIN_KEY": "sk_x"})
    with pytest.raises(AdminKeyMisconfigured, match="SATFLOW_ADMIN_KEY refused"):
        runtime.start()
    assert runtime.gateway is None and runtime.moto_url == ""


def test_a_generated_admin_key_never_has_the_account_prefix(monkeypatch):
    from satflow_dev.runtime import resources

    drawn = iter(["sk_unlucky-draw-000000000000000000000000", "lucky-draw-00000000000000000000000000000"])
    monkeypatch.setattr(resources.token_source, "token_urlsafe", lambda n: next(drawn))
    assert resources._generated_admin_key() == "lucky-draw-00000000000000000000000000000"


class _ReportsNoDelay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
        body = json.dumps({"nodelay": self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_every_background_http_server_sets_tcp_nodelay_on_its_connections():
    """The gateway and the simulators' fronts (Lightning, chain) are all BackgroundHttpServers."""
    from satflow_dev.runtime.chain_server import ChainRpcHttpServer
    from satflow_dev.runtime.http_gateway import HttpGateway
    from satflow_dev.runtime.lightning_server import LightningHttpServer

    assert all(issubclass(cls, BackgroundHttpServer) for cls in (HttpGateway, LightningHttpServer, ChainRpcHttpServer))
    server = BackgroundHttpServer(_ReportsNoDelay, "127.0.0.1", 0)
    server.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for _ in range(3):  # the same keep-alive connection
            connection.request("GET", "/")
            assert json.loads(connection.getresponse().read())["nodelay"] != 0
        connection.close()
    finally:
        server.stop()


def test_the_gateway_writes_each_keep_alive_response_in_one_send(tiny_runtime, monkeypatch):
    writes: dict[int, int] = {}
    original = socketserver._SocketWriter.write

    def counting_write(self, data):
        thread = threading.get_ident()
        writes[thread] = writes.get(thread, 0) + 1
        return original(self, data)

    monkeypatch.setattr(socketserver._SocketWriter, "write", counting_write)
    connection = http.client.HTTPConnection("127.0.0.1", tiny_runtime.gateway.port, timeout=10)
    for n in range(5):
        connection.request("GET", f"/proxy/plain?n={n}")
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"hello": "world"})
    connection.close()
    assert list(writes.values()) == [5]  # one connection thread, one write per response (headers + body)
