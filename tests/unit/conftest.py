"""Unit tests are pure: any attempt to open a network connection fails the test."""
import socket

import pytest


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch):
    def guard(*args, **kwargs):
        raise AssertionError("unit tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket.socket, "connect_ex", guard)
    monkeypatch.setattr(socket, "create_connection", guard)
