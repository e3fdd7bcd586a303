"""Child processes for the regtest stack: free loopback ports, logged subprocesses, wait-for-ready loops."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
LOOPBACK = "127.0.0.1"


class NotReady(Exception):
    """A readiness probe's "not yet" (anything else a probe raises is a real failure)."""


class StartupFailed(RuntimeError):
    """A process exited or did not become ready in time; the message names its log."""


def free_port() -> int:
    """A loopback TCP port free right now (the kernel picks it; the short race with other binders is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """One child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # A new session: a Ctrl-C in the terminal reaches us, and we stop the children in order.
            self._proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(self._env or {})}, cwd=self._cwd, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def wait_ready(self, probe: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.2) -> T:
        """Poll ``probe`` until it returns; it raises NotReady (or a connection error) while not ready."""
        return wait_until(probe, timeout_s=timeout_s, what=f"{self.name}: {what}", interval_s=interval_s,
                          alive=self)


def wait_until(probe: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.2,
               alive: ManagedProcess | None = None) -> T:
    """The first value ``probe`` returns; NotReady and connection errors mean "not yet". Bounded, no fixed sleeps
    beyond the poll interval; fails early when ``alive``'s process has exited."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        if alive is not None and not alive.running():
            raise StartupFailed(f"{what}: process exited; log {alive.log_path}:\n{alive.log_tail()}")
        try:
            return probe()
        except (NotReady, OSError) as exc:  # OSError: refused connections, missing files
            last = exc
        except Exception as exc:  # httpx errors are not OSError subclasses
            if type(exc).__module__.split(".")[0] not in ("httpx", "httpcore"):
                raise
            last = exc
        if time.monotonic() >= deadline:
            tail = f"; log {alive.log_path}:\n{alive.log_tail()}" if alive is not None else ""
            raise StartupFailed(f"{what}: not ready after {timeout_s:.0f}s (last: {last!r}){tail}")
        time.sleep(interval_s)
