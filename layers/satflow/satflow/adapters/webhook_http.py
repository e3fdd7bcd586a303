"""Webhook HTTP: resolve a target's host, and POST one signed delivery to an address already vetted.

The request connects to the IP address the caller checked (never resolving the name again, so a DNS answer that
changes between check and connect - "DNS rebinding" - cannot redirect it inside our network), while the Host
header and the TLS server name (SNI and certificate check) stay the URL's host. Redirects are not followed (a 3xx
is a failed delivery), proxies from the environment are ignored, the response body is not read beyond a few KB.
"""
from __future__ import annotations

import socket
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

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (an IP literal resolves to itself)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise WebhookTransportError(f"cannot resolve {host}: {exc}") from exc
        return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))

    def post(self, target: WebhookTarget, address: str, headers: Mapping[str, str], body: bytes) -> int:
        """POST ``body`` to ``target`` at ``address``; the HTTP status code."""
        import httpx

        request_headers = {"Host": _host_header(target), "Content-Type": "application/json",
                           "User-Agent": USER_AGENT, **headers}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with self._http().stream("POST", target.url_for(address), headers=request_headers, content=body,
                                     extensions=extensions) as response:
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read >= _RESPONSE_LIMIT:
                        break
                return response.status_code
        except httpx.HTTPError as exc:
            raise WebhookTransportError(f"{type(exc).__name__}: {exc}") from exc

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False, trust_env=False,
                                        transport=self._transport)
        return self._client


def _host_header(target: WebhookTarget) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"
