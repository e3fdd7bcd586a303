"""Fetching a sanctions list document from its configured location, streamed straight into the parser.

Locations: ``https://...`` (the default is OFAC's Sanctions List Service ``SDN.XML``; redirects are followed to
https only) and ``file:///abs/path`` (the local runtime and tests). Plain ``http://`` is refused: whoever could
alter the download in transit could delete entries from our screening.

Bounded: at most ``max_bytes`` of (decompressed) body, ``timeout_s`` per network operation and ``deadline_s`` in
total, so a stalled or endless response cannot hold the monitor until its Lambda timeout. Nothing is buffered:
each chunk is hashed and parsed as it arrives (a few MB of memory for the ~100 MB document).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from satflow.domain.sanctions import (
    SanctionsFormatError,
    SanctionsList,
    SanctionsSourceError,
    SdnXmlParser,
    redact,
)

MAX_LIST_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_DEADLINE_S = 80.0  # the monitor Lambda's timeout is 120 s: leave time to store the list
_MAX_REDIRECTS = 5
_FILE_CHUNK = 1024 * 1024


def fetch_sanctions_list(url: str, label: str, *, transport: Any = None, max_bytes: int = MAX_LIST_BYTES,
                         timeout_s: float = DEFAULT_TIMEOUT_S, deadline_s: float = DEFAULT_DEADLINE_S,
                         monotonic: Callable[[], float] = time.monotonic) -> SanctionsList:
    """Fetch ``url`` and parse it as an SDN XML list labelled ``label``."""
    parser = SdnXmlParser(label)
    scheme = urlsplit(url).scheme.lower()
    try:
        if scheme == "file":
            _read_file(url, parser, max_bytes)
        elif scheme == "https":
            _download(url, parser, transport=transport, max_bytes=max_bytes, timeout_s=timeout_s,
                      deadline=monotonic() + deadline_s, monotonic=monotonic)
        else:
            raise SanctionsSourceError(f"unsupported sanctions list location {redact(url)!r} (https:// or file://)")
        return parser.close()
    except SanctionsFormatError as exc:
        raise SanctionsSourceError(f"{redact(url)} is not a usable SDN list: {exc}") from exc


def _read_file(url: str, parser: SdnXmlParser, max_bytes: int) -> None:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SanctionsSourceError("file:// URLs must name a local absolute path (file:///path)")
    path = Path(unquote(parts.path))
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_FILE_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise SanctionsSourceError(f"{path} is larger than {max_bytes} bytes")
                parser.feed(chunk)
    except OSError as exc:
        raise SanctionsSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _download(url: str, parser: SdnXmlParser, *, transport: Any, max_bytes: int, timeout_s: float,
              deadline: float, monotonic: Callable[[], float]) -> None:
    import httpx

    kwargs: dict[str, Any] = {"timeout": httpx.Timeout(timeout_s), "follow_redirects": False,
                              "headers": {"accept": "application/xml, text/xml;q=0.9, */*;q=0.1"}}
    if transport is not None:
        kwargs["transport"] = transport
    try:
        with httpx.Client(**kwargs) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        target = str(response.url.join(response.headers.get("location", "")))
                        if urlsplit(target).scheme.lower() != "https":
                            raise SanctionsSourceError(f"{redact(url)} redirects to a non-https location")
                        url = target
                        continue
                    if response.status_code != 200:
                        raise SanctionsSourceError(f"{redact(url)} answered HTTP {response.status_code}")
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise SanctionsSourceError(f"{redact(url)} sent more than {max_bytes} bytes")
                        if monotonic() > deadline:
                            raise SanctionsSourceError(f"{redact(url)} took longer than the download deadline")
                        parser.feed(chunk)
                    return
            raise SanctionsSourceError(f"{redact(url)} redirected more than {_MAX_REDIRECTS} times")
    except httpx.HTTPError as exc:
        raise SanctionsSourceError(f"{redact(url)} could not be fetched: {type(exc).__name__}") from exc


__all__ = ["fetch_sanctions_list", "SanctionsSourceError", "redact", "MAX_LIST_BYTES"]
