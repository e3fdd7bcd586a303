"""The refresh job (app.sanctions.refresh_sanctions_list) and the source adapter (file:// and https://)."""
from __future__ import annotations

import gzip
from dataclasses import replace

import httpx
import pytest

from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore
from satflow.adapters.sanctions_source import fetch_sanctions_list
from satflow.app.sanctions import refresh_sanctions_list
from satflow.domain.sanctions import SanctionsSourceError

from tests.conftest import TABLE

from .conftest import NODE_PUBKEY, REGTEST_P2PKH, SAMPLE_BYTES, SAMPLE_URL, UNLISTED_REGTEST

OFAC_URL = "https://sanctionslistservice.ofac.treas.gov/api/PublicationPreview/exports/SDN.XML"


@pytest.fixture
def fresh(ssvc, ddb):
    """ssvc with an EMPTY sanctions store (build_services preloads the sample into the shared table's store)."""
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "SANCTIONS"}, "sk": {"S": "HEAD"}})
    ssvc.sanctions = DynamoSanctionsStore(ddb, TABLE)
    return ssvc


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return path.as_uri()


def entry(uid: int, *ids: str) -> bytes:
    inner = "".join(f"<id><uid>{uid}{i}</uid><idType>Digital Currency Address - XBT</idType><idNumber>{n}</idNumber>"
                    f"</id>" for i, n in enumerate(ids))
    return f"<sdnEntry><uid>{uid}</uid><lastName>X</lastName><idList>{inner}</idList></sdnEntry>".encode()


def sdn(*entries: bytes) -> bytes:
    return b'<?xml version="1.0" standalone="yes"?><sdnList xmlns="http://tempuri.org/sdnList.xsd">' + b"".join(
        entries) + b"</sdnList>"


# ------------------------------------------------------------------------------------------------ the job
def test_a_file_list_is_stored_then_an_unchanged_one_is_only_touched(fresh):
    first = refresh_sanctions_list(fresh)
    assert first["status"] == "stored" and first["version"] == 1
    assert (first["addresses"], first["node_pubkeys"], first["invalid_ids"]) == (8, 2, 4)
    assert first["sources"][0]["location"].startswith("file:///") and first["sources"][0]["entries"] == 6
    assert fresh.sanctions.current().list.lookup("node", NODE_PUBKEY) == "sdn:90003"
    loaded_at = fresh.sanctions.head().loaded_at
    fresh.clock = lambda: "2026-11-22T00:00:00.000Z"
    again = refresh_sanctions_list(fresh)
    assert again["status"] == "unchanged" and again["version"] == 1
    head = fresh.sanctions.head()
    assert head.loaded_at == loaded_at and head.checked_at == "2026-11-22T00:00:00.000Z"


def test_a_republication_with_the_same_destinations_is_unchanged(fresh, tmp_path):
    refresh_sanctions_list(fresh)
    renamed = SAMPLE_BYTES.replace(b"11/20/2026", b"11/21/2026").replace(b"EXAMPLE TANKER", b"RENAMED TANKER")
    fresh.sanctions_sources = (("sdn", write(tmp_path, "sdn.xml", renamed)),)
    result = refresh_sanctions_list(fresh)
    assert result["status"] == "unchanged"
    assert fresh.sanctions.head().sources[0].publish_date == "11/21/2026"  # the check is recorded


def test_a_changed_list_is_stored_as_the_next_version(fresh, tmp_path):
    refresh_sanctions_list(fresh)
    grown = SAMPLE_BYTES.replace(b"</sdnList>", entry(777, UNLISTED_REGTEST) + b"</sdnList>")
    fresh.sanctions_sources = (("sdn", write(tmp_path, "sdn.xml", grown)),)
    result = refresh_sanctions_list(fresh)
    assert result["status"] == "stored" and result["version"] == 2 and result["addresses"] == 9
    assert fresh.sanctions.current().list.lookup("address", UNLISTED_REGTEST) == "sdn:777"


def test_a_drastically_shrunk_list_is_refused_unless_accepted(fresh, tmp_path):
    refresh_sanctions_list(fresh)  # 10 destinations
    fresh.sanctions_sources = (("sdn", write(tmp_path, "sdn.xml", sdn(entry(1, REGTEST_P2PKH),
                                                                       entry(2, UNLISTED_REGTEST)))),)
    refused = refresh_sanctions_list(fresh)
    assert refused["status"] == "refused" and "fewer than 50%" in refused["reason"]
    assert refused["stored_version"] == 1
    assert fresh.sanctions.head().version == 1 and fresh.sanctions.current().list.size == 10
    accepted = refresh_sanctions_list(fresh, accept_shrink=True)
    assert accepted["status"] == "stored" and accepted["version"] == 2 and fresh.sanctions.current().list.size == 2


@pytest.mark.parametrize("payload, reason", [
    (sdn(), "no sdnEntry"),
    (sdn(b"<sdnEntry><uid>1</uid><lastName>X</lastName></sdnEntry>"), "no bitcoin address"),
])
def test_an_empty_list_is_refused_even_as_the_first_one(fresh, tmp_path, payload, reason):
    fresh.sanctions_sources = (("sdn", write(tmp_path, "sdn.xml", payload)),)
    result = refresh_sanctions_list(fresh)
    assert result["status"] == "refused" and reason in result["reason"]
    assert fresh.sanctions.head() is None


@pytest.mark.parametrize("payload", [b"<html>maintenance</html>", SAMPLE_BYTES[:3000],
                                     b'<!DOCTYPE sdnList [<!ENTITY x "y">]><sdnList/>'])
def test_a_broken_download_fails_and_the_stored_list_stays(fresh, tmp_path, payload):
    refresh_sanctions_list(fresh)
    fresh.sanctions_sources = (("sdn", write(tmp_path, "sdn.xml", payload)),)
    result = refresh_sanctions_list(fresh)
    assert result["status"] == "failed" and "not a usable SDN list" in result["reason"]
    assert fresh.sanctions.head().version == 1 and fresh.sanctions.current().list.size == 10


def test_a_missing_file_fails(fresh, tmp_path):
    fresh.sanctions_sources = (("sdn", (tmp_path / "absent.xml").as_uri()),)
    assert refresh_sanctions_list(fresh)["status"] == "failed"


def test_no_location_configured_keeps_the_stored_list(fresh):
    refresh_sanctions_list(fresh)
    fresh.sanctions_sources = (("sdn", ""), ("extra", ""))
    assert refresh_sanctions_list(fresh) == {"status": "not_configured"}
    assert fresh.sanctions.head().version == 1


def test_the_operators_supplementary_list_is_merged(fresh, tmp_path):
    extra = write(tmp_path, "extra.xml", sdn(entry(5, UNLISTED_REGTEST)))
    fresh.sanctions_sources = (("sdn", SAMPLE_URL), ("extra", extra))
    result = refresh_sanctions_list(fresh)
    assert result["status"] == "stored" and result["addresses"] == 9
    assert [s["label"] for s in result["sources"]] == ["sdn", "extra"]
    assert fresh.sanctions.current().list.lookup("address", UNLISTED_REGTEST) == "extra:5"
    only_extra = refresh_sanctions_list(replace(fresh, sanctions_sources=(("sdn", ""), ("extra", extra))))
    assert only_extra["status"] == "refused"  # 1 of 11: a shrink, even from the extra list alone


def test_a_concurrent_refresh_that_stored_first_wins(fresh, ddb):
    """Two runs read head v0; the second to flip loses cleanly."""
    real_head = fresh.sanctions.head
    other = DynamoSanctionsStore(ddb, TABLE)

    def head_then_race():
        h = real_head()
        other.store(fresh.fetch_sanctions(SAMPLE_URL, "sdn"), expected_version=0, now="2026-11-21T00:00:00.000Z")
        return h

    fresh.sanctions.head = head_then_race  # type: ignore[method-assign]
    assert refresh_sanctions_list(fresh)["status"] == "conflict"
    assert other.head().version == 1


# ------------------------------------------------------------------------------------------------ the adapter
def mock(handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def test_https_download_streams_into_the_parser():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=SAMPLE_BYTES, headers={"content-type": "application/xml"})

    lst = fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(handler))
    assert seen == [OFAC_URL] and lst.size == 10 and lst.sources[0].size_bytes == len(SAMPLE_BYTES)


def test_https_follows_redirects_to_https_only():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "sanctionslistservice.ofac.treas.gov":
            return httpx.Response(302, headers={"location": "https://bucket.example.com/SDN.XML?X-Amz-Signature=s"})
        return httpx.Response(200, content=SAMPLE_BYTES)

    assert fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(handler)).size == 10

    def downgrade(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"location": "http://bucket.example.com/SDN.XML"})

    with pytest.raises(SanctionsSourceError, match="non-https"):
        fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(downgrade))

    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": str(request.url)})

    with pytest.raises(SanctionsSourceError, match="redirected more than"):
        fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(loop))


def test_https_gzip_body_is_decoded_and_capped_after_decoding():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=gzip.compress(SAMPLE_BYTES), headers={"content-encoding": "gzip"})

    assert fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(handler)).size == 10
    with pytest.raises(SanctionsSourceError, match="more than 1000 bytes"):
        fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(handler), max_bytes=1000)


@pytest.mark.parametrize("status", [404, 500, 503])
def test_https_errors_fail(status):
    with pytest.raises(SanctionsSourceError, match=f"HTTP {status}"):
        fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(lambda r: httpx.Response(status)))


def test_https_transport_errors_and_the_deadline_fail():
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SanctionsSourceError, match="ConnectError"):
        fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(broken))
    ticks = iter(range(0, 10_000, 50))
    with pytest.raises(SanctionsSourceError, match="deadline"):
        fetch_sanctions_list(OFAC_URL, "sdn", transport=mock(lambda r: httpx.Response(200, content=SAMPLE_BYTES)),
                             deadline_s=10, monotonic=lambda: next(ticks))


@pytest.mark.parametrize("url", ["http://sanctionslistservice.ofac.treas.gov/SDN.XML", "ftp://ofacftp.treas.gov/x",
                                 "s3://bucket/key", "file://otherhost/etc/sdn.xml"])
def test_other_locations_are_refused(url):
    with pytest.raises(SanctionsSourceError):
        fetch_sanctions_list(url, "sdn")


def test_errors_never_show_a_signed_urls_query(tmp_path):
    url = "https://user:secret@bucket.example.com/SDN.XML?X-Amz-Signature=topsecret"
    with pytest.raises(SanctionsSourceError) as info:
        fetch_sanctions_list(url, "sdn", transport=mock(lambda r: httpx.Response(403)))
    assert "topsecret" not in str(info.value) and "secret@" not in str(info.value)
    assert "https://bucket.example.com/SDN.XML" in str(info.value)


def test_file_size_cap(tmp_path):
    url = write(tmp_path, "big.xml", SAMPLE_BYTES)
    with pytest.raises(SanctionsSourceError, match="larger than"):
        fetch_sanctions_list(url, "sdn", max_bytes=100)
