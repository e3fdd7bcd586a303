"""The macaroon is a bearer credential: the LND client refuses plain http to anything but this host."""
import pytest

from satflow.adapters.lnd import LndRestClient


@pytest.mark.parametrize("url", ["http://lnd.example.com:8080", "http://10.0.0.5:8080"])
def test_plain_http_to_a_remote_node_is_refused(url):
    with pytest.raises(ValueError, match="https"):
        LndRestClient(url, "00")


@pytest.mark.parametrize("url", ["https://lnd.example.com:8080", "http://127.0.0.1:9735", "http://localhost:8080"])
def test_https_or_loopback_is_accepted(url):
    assert "macaroon" not in repr(LndRestClient(url, "abcd"))
