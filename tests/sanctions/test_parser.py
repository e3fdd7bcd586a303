"""The SDN XML parser and the list rules (pure: no sockets, no AWS)."""
from __future__ import annotations

import hashlib
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satflow.domain.sanctions import (
    SanctionsFormatError,
    SanctionsHead,
    SanctionsList,
    SdnXmlParser,
    classify_xbt_id,
    merge_lists,
    normalise_address,
    normalise_node_pubkey,
    parse_sdn_xml,
    redact,
    refusal_reason,
)

from .conftest import (
    MAINNET_BASE58,
    MAINNET_BECH32,
    MAINNET_P2WSH_UPPER,
    NODE_PUBKEY,
    NODE_PUBKEY_2,
    REGTEST_P2PKH,
    REGTEST_P2TR,
    REGTEST_P2WPKH,
    SAMPLE_BYTES,
    TESTNET_P2WPKH,
    UNLISTED_REGTEST,
)

NEW_NS = "https://sanctionslistservice.ofac.treas.gov/api/PublicationPreview/exports/XML"
OLD_NS = "http://tempuri.org/sdnList.xsd"


def doc(entries: str, root: str = f'<sdnList xmlns="{NEW_NS}">', close: str = "</sdnList>",
        prolog: str = '<?xml version="1.0" standalone="yes"?>\n') -> bytes:
    return (prolog + root + entries + close).encode()


def xbt_entry(uid: int, *id_numbers: str, id_type: str = "Digital Currency Address - XBT") -> str:
    ids = "".join(f"<id><uid>{uid * 10 + i}</uid><idType>{id_type}</idType><idNumber>{n}</idNumber></id>"
                  for i, n in enumerate(id_numbers))
    return f"<sdnEntry><uid>{uid}</uid><lastName>E{uid}</lastName><sdnType>Entity</sdnType><idList>{ids}</idList></sdnEntry>"


# ------------------------------------------------------------------------------------------------ the fixture
def test_the_sample_fixture_counts():
    lst = parse_sdn_xml(SAMPLE_BYTES)
    (info,) = lst.sources
    assert info.label == "sdn" and info.sha256 == hashlib.sha256(SAMPLE_BYTES).hexdigest()
    assert info.size_bytes == len(SAMPLE_BYTES)
    assert (info.entries, info.record_count, info.publish_date) == (6, 6, "11/20/2026")
    assert (info.xbt_ids, info.addresses, info.node_pubkeys, info.invalid_ids, info.other_ids) == (14, 8, 2, 4, 6)
    assert info.xbt_ids == info.addresses + info.node_pubkeys + info.invalid_ids


def test_the_sample_keeps_xbt_ids_only_and_tells_pubkeys_from_addresses():
    lst = parse_sdn_xml(SAMPLE_BYTES)
    assert set(lst.addresses) == {MAINNET_BASE58, MAINNET_BECH32, "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
                                  MAINNET_P2WSH_UPPER.lower(), REGTEST_P2WPKH, REGTEST_P2PKH, REGTEST_P2TR,
                                  TESTNET_P2WPKH}
    assert set(lst.node_pubkeys) == {NODE_PUBKEY, NODE_PUBKEY_2}
    text = SAMPLE_BYTES.decode()
    assert "0x8589427373D6D84E98730D7795D8f6f8731FDA16" in text  # an ETH id is there, and not kept
    kept = set(lst.addresses) | set(lst.node_pubkeys)
    assert not any(k.startswith("0x") or k.startswith("4AdU") or k == "X1234567" for k in kept)
    assert lst.addresses[MAINNET_BASE58] == "sdn:90001" and lst.node_pubkeys[NODE_PUBKEY] == "sdn:90003"


def test_bad_ids_are_counted_and_skipped_not_fatal():
    lst = parse_sdn_xml(SAMPLE_BYTES)
    assert len(lst.invalid_samples) == 4 and all(s.startswith("sdn:90004: ") for s in lst.invalid_samples)
    assert any("not-a-bitcoin-address" in s for s in lst.invalid_samples)
    assert lst.lookup("address", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5") is None  # bad checksum listed


def test_lines_are_crlf_tolerant_and_whitespace_around_ids_is_ignored():
    assert b"\r\n" in SAMPLE_BYTES  # the fixture keeps OFAC's CRLF line endings
    assert parse_sdn_xml(SAMPLE_BYTES).lookup("node", NODE_PUBKEY_2) == "sdn:90003"  # listed "  030626...A  "


# ------------------------------------------------------------------------------------------------ namespaces
@pytest.mark.parametrize("root", [
    f'<sdnList xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="{NEW_NS}">',
    f'<sdnList xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="{OLD_NS}">',
    "<sdnList>",
])
def test_tags_match_whatever_the_default_namespace(root):
    lst = parse_sdn_xml(doc(xbt_entry(1, REGTEST_P2WPKH), root=root))
    assert lst.addresses == {REGTEST_P2WPKH: "sdn:1"} and lst.sources[0].entries == 1


def test_a_prefixed_namespace_is_matched_too():
    body = (f'<o:sdnList xmlns:o="{OLD_NS}"><o:sdnEntry><o:uid>7</o:uid><o:idList><o:id><o:uid>1</o:uid>'
            f"<o:idType>Digital Currency Address - XBT</o:idType><o:idNumber>{REGTEST_P2PKH}</o:idNumber></o:id>"
            "</o:idList></o:sdnEntry></o:sdnList>")
    assert parse_sdn_xml(body.encode()).addresses == {REGTEST_P2PKH: "sdn:7"}


def test_only_direct_structure_counts():
    """An idNumber outside sdnEntry/idList/id, or a uid of a nested element, is not taken for the entry's."""
    body = ("<sdnEntry><uid>5</uid><akaList><aka><uid>999</uid></aka></akaList>"
            f"<idNumber>{REGTEST_P2WPKH}</idNumber>"
            "<idList><id><uid>77</uid><idType>Digital Currency Address - XBT</idType>"
            f"<idNumber>{REGTEST_P2PKH}</idNumber></id></idList></sdnEntry>")
    lst = parse_sdn_xml(doc(body))
    assert lst.addresses == {REGTEST_P2PKH: "sdn:5"}


def test_other_currencies_and_id_types_are_dropped():
    lst = parse_sdn_xml(doc(xbt_entry(1, REGTEST_P2WPKH, id_type="Digital Currency Address - LTC")
                            + xbt_entry(2, REGTEST_P2WPKH, id_type="Digital Currency Address - BSV")
                            + xbt_entry(3, REGTEST_P2WPKH, id_type="Passport")))
    assert lst.size == 0 and lst.sources[0].other_ids == 3 and lst.sources[0].xbt_ids == 0


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("payload", [
    b'<?xml version="1.0"?><!DOCTYPE sdnList [<!ENTITY a "x">]><sdnList>&a;</sdnList>',
    b'<?xml version="1.0"?><!DOCTYPE sdnList SYSTEM "http://example.invalid/x.dtd"><sdnList/>',
    b'<?xml version="1.0"?><!DOCTYPE sdnList><sdnList/>',
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
     b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><sdnList>&lol3;</sdnList>'),
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]><sdnList>&ext;</sdnList>',
], ids=["internal-entity", "external-dtd", "bare-doctype", "billion-laughs", "external-entity"])
def test_dtds_and_entities_are_refused(payload):
    with pytest.raises(SanctionsFormatError, match="DOCTYPE|entit"):
        parse_sdn_xml(payload)


@pytest.mark.parametrize("payload, message", [
    (b"", "empty|well-formed"),
    (b"not xml at all", "well-formed"),
    (b"<html><body>Service unavailable</body></html>", "root element is <html>"),
    (doc(xbt_entry(1, REGTEST_P2WPKH), close=""), "well-formed"),  # truncated download
    (b"<sdnList><sdnEntry><uid>1</uid>&undefined;</sdnEntry></sdnList>", "well-formed"),
])
def test_what_is_not_an_sdn_list_is_refused(payload, message):
    with pytest.raises(SanctionsFormatError, match=message):
        parse_sdn_xml(payload)


def test_an_overlong_id_is_invalid_not_stored():
    lst = parse_sdn_xml(doc(xbt_entry(1, "1" * 5000, REGTEST_P2WPKH)))
    assert lst.addresses == {REGTEST_P2WPKH: "sdn:1"} and lst.sources[0].invalid_ids == 1


# ------------------------------------------------------------------------------------------------ streaming
@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(SAMPLE_BYTES)), max_size=12))
def test_any_chunking_parses_the_same(cuts):
    points = sorted(set(cuts))
    pieces = [SAMPLE_BYTES[a:b] for a, b in zip([0, *points], [*points, len(SAMPLE_BYTES)])]
    whole = parse_sdn_xml(SAMPLE_BYTES)
    chunked = parse_sdn_xml(iter(pieces))
    assert chunked == whole and chunked.list_sha256 == whole.list_sha256


def test_a_large_list_streams_in_bounded_memory():
    """~24 MB of entries (most without XBT ids, like the real list) fed in 1 MB chunks: memory stays small."""
    filler = ("<sdnEntry><uid>{}</uid><lastName>SOME NAME</lastName><sdnType>Individual</sdnType><programList>"
              "<program>SDGT</program></programList><akaList><aka><uid>1</uid><type>a.k.a.</type><category>strong"
              "</category><lastName>ALIAS</lastName></aka></akaList><idList><id><uid>2</uid><idType>Passport"
              "</idType><idNumber>P123456</idNumber></id></idList></sdnEntry>\n")
    parser = SdnXmlParser()
    parser.feed(b'<?xml version="1.0"?><sdnList xmlns="%s">' % OLD_NS.encode())
    tracemalloc.start()
    try:
        chunk = "".join(filler.format(i) for i in range(2500)).encode()  # ~1 MB
        for n in range(24):
            parser.feed(chunk)
            if n == 12:
                parser.feed(xbt_entry(424242, REGTEST_P2TR).encode())
        parser.feed(b"</sdnList>")
        lst = parser.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lst.sources[0].entries == 24 * 2500 + 1 and lst.addresses == {REGTEST_P2TR: "sdn:424242"}
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while parsing"


# ------------------------------------------------------------------------------------------------ normalisation
@pytest.mark.parametrize("text, expected", [
    (MAINNET_BECH32.upper(), MAINNET_BECH32),
    (f"  {REGTEST_P2WPKH}\r\n", REGTEST_P2WPKH),
    (MAINNET_BASE58, MAINNET_BASE58),
    (MAINNET_BASE58.lower(), None),  # base58 is case-sensitive: another string, invalid checksum
    ("bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", None),  # mixed case bech32 is invalid (BIP173)
    ("tb1qenn3kxsvl27malayqy9y78akmqplccyvefzcaa", TESTNET_P2WPKH),
    ("bc1q w508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", None),
    ("0x8589427373D6D84E98730D7795D8f6f8731FDA16", None),
    (None, None),
])
def test_normalise_address(text, expected):
    assert normalise_address(text) == expected


def test_node_pubkeys_must_be_points_and_win_over_addresses():
    assert normalise_node_pubkey(NODE_PUBKEY.upper()) == NODE_PUBKEY
    assert normalise_node_pubkey("02" + "00" * 32) is None  # not on the curve
    assert normalise_node_pubkey("04" + NODE_PUBKEY[2:]) is None  # uncompressed prefix
    assert normalise_node_pubkey(NODE_PUBKEY[:-2]) is None
    assert classify_xbt_id(NODE_PUBKEY) == ("node", NODE_PUBKEY)
    assert classify_xbt_id(REGTEST_P2WPKH) == ("address", REGTEST_P2WPKH)
    assert classify_xbt_id("02" + "00" * 32) is None


def test_lookup_normalises_what_is_screened():
    lst = parse_sdn_xml(SAMPLE_BYTES)
    assert lst.lookup("address", MAINNET_P2WSH_UPPER.lower()) == "sdn:90002"
    assert lst.lookup("address", MAINNET_BECH32.upper()) == "sdn:90001"
    assert lst.lookup("address", MAINNET_BASE58.lower()) is None
    assert lst.lookup("address", UNLISTED_REGTEST) is None
    assert lst.lookup("node", NODE_PUBKEY_2.upper()) == "sdn:90003"
    assert lst.lookup("node", "nonsense") is None
    with pytest.raises(ValueError):
        lst.lookup("email", "x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ list rules
def test_lines_round_trip_and_the_digest_ignores_everything_but_destinations():
    lst = parse_sdn_xml(SAMPLE_BYTES)
    again = SanctionsList.from_lines("".join(lst.lines()), lst.sources)
    assert again == lst and again.list_sha256 == lst.list_sha256
    renamed = parse_sdn_xml(SAMPLE_BYTES.replace(b"11/20/2026", b"11/21/2026").replace(b"EXAMPLE TANKER", b"X"))
    assert renamed.sources[0].sha256 != lst.sources[0].sha256
    assert renamed.list_sha256 == lst.list_sha256
    delisted = parse_sdn_xml(SAMPLE_BYTES.replace(REGTEST_P2PKH.encode(), b"gone"))
    assert delisted.list_sha256 != lst.list_sha256


def test_a_supplementary_list_merges_and_is_labelled():
    official = parse_sdn_xml(doc(xbt_entry(1, REGTEST_P2WPKH)))
    extra = parse_sdn_xml(doc(xbt_entry(9, REGTEST_P2WPKH, UNLISTED_REGTEST)), label="extra")
    merged = merge_lists([official, extra])
    assert merged.addresses == {REGTEST_P2WPKH: "sdn:1", UNLISTED_REGTEST: "extra:9"}
    assert [s.label for s in merged.sources] == ["sdn", "extra"]


def _head(size: int) -> SanctionsHead:
    return SanctionsHead(version=3, list_sha256="0" * 64, addresses=size, node_pubkeys=0, chunks=1,
                         chunk_token="t", loaded_at="x", checked_at="x")


def test_refusal_reasons():
    sample = parse_sdn_xml(SAMPLE_BYTES)  # 10 destinations
    assert refusal_reason(sample, None) is None
    assert refusal_reason(sample, _head(20)) is None  # exactly half is still accepted
    assert "fewer than 50%" in refusal_reason(sample, _head(21))
    assert refusal_reason(sample, _head(21), accept_shrink=True) is None
    no_xbt = parse_sdn_xml(doc(xbt_entry(1, "P1", id_type="Passport")))
    assert "no bitcoin address" in refusal_reason(no_xbt, None)
    assert "no sdnEntry" in refusal_reason(parse_sdn_xml(doc("")), None)
    assert "no sdnEntry in source(s) extra" in refusal_reason(
        merge_lists([sample, parse_sdn_xml(doc(""), label="extra")]), None)


def test_redact_drops_credentials_and_query():
    assert redact("https://user:pw@lists.example.com:8443/sdn.xml?X-Amz-Signature=abc") == \
        "https://lists.example.com:8443/sdn.xml"
    assert not re.search("pw|Signature", redact("https://user:pw@h/p?X-Amz-Signature=abc"))
