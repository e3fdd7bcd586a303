"""Webhook HTTP: resolve a target's host, and POST one signed delivery to an address already vetted.

The request connects to the IP address the caller checked (never resolving the name again, so a DNS answer that
changes between check and connect - "DNS rebinding" - cannot redirect it inside our network), while the Host
header and the TLS server name (SNI and certificate check) stay the URL's host. Redirects are not followed (a 3xx
is a failed delivery), proxies from the environment are ignored, the response body is not read beyond a few KB.
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Mapping

from satflow.domain.webhooks import WebhookTarget, WebhookTransportError  # noqa: F401  (re-exported)

USER_AGENT = "satflow-webhooks/1"
DEFAULT_TIMEOUT_S = 5.0
_RESPONSE_LIMIT = 4096


class WebhookHttp:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, transport: Any = None) -> None:
        self.timeout_s = timeout_s
        self._transport = transport  # tests: an httpx transport instead of sockets
        self._client: Any = None
        self._backend = _DeadlineBackend()  # one deadline per attempt, read by every socket operation

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (an IP literal resolves to itself), within ``timeout_s``: getaddrinfo
        has no timeout of its own, so it runs on a worker thread we stop waiting for."""
        future = _resolver().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=self.timeout_s)
        except FutureTimeout as exc:
            raise WebhookTransportError(f"cannot resolve {host}: no answer within {self.timeout_s:g} s") from exc
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise WebhookTransportError(f"cannot resolve {host}: {exc}") from exc
        return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))

    def post(self, target: WebhookTarget, address: str, headers: Mapping[str, str], body: bytes) -> int:
        """POST ``body`` to ``target`` at ``address``; the HTTP status code."""
        import httpx

        request_headers = {"Host": _host_header(target), "Content-Type": "application/json",
                           "User-Agent": USER_AGENT, **headers}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        client = self._http()
        # One deadline for the whole attempt (connect, TLS, request, every header line, the body): httpx's timeout
        # applies to each socket operation, so a receiver dripping its headers could otherwise hold the shared
        # delivery function for as long as it likes (found by review).
        self._backend.deadline = time.monotonic() + self.timeout_s
        try:
            with client.stream("POST", target.url_for(address), headers=request_headers, content=body,
                                     extensions=extensions) as response:
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read >= _RESPONSE_LIMIT:
                        break
                return response.status_code
        except httpx.HTTPError as exc:
            raise WebhookTransportError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._backend.deadline = None

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            transport = self._transport
            if transport is None:
                transport = httpx.HTTPTransport(retries=0)
                # httpx exposes no network backend option; the pool's is the documented httpcore extension point.
                transport._pool._network_backend = self._backend.wrap(transport._pool._network_backend)
            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False, trust_env=False,
                                        transport=transport)
        return self._client


def _host_header(target: WebhookTarget) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"


_RESOLVER: list[ThreadPoolExecutor] = []


def _resolver() -> ThreadPoolExecutor:
    if not _RESOLVER:
        _RESOLVER.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns"))
    return _RESOLVER[0]


class _DeadlineBackend:
    """An httpcore network backend whose streams cap every socket operation's timeout by the time left until
    ``deadline`` (time.monotonic), and fail once it has passed. ``deadline`` None = the per-operation timeouts."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self._inner: Any = None

    def wrap(self, inner: Any) -> "_DeadlineBackend":
        self._inner = inner
        return self

    def left(self, timeout: float | None) -> float | None:
        if self.deadline is None:
            return timeout
        import httpcore

        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout("the delivery attempt ran out of time")
        return remaining if timeout is None else min(timeout, remaining)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> "_DeadlineStream":
        return _DeadlineStream(self._inner.connect_tcp(host, port, self.left(timeout), local_address,
                                                       socket_options), self)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise NotImplementedError("webhooks are delivered over TCP only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineStream:
    def __init__(self, inner: Any, backend: _DeadlineBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> "_DeadlineStream":
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, self._backend.left(timeout)),
                               self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
