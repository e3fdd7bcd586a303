"""Sanctions screening lists (pure: bytes in, sets out; no I/O).

Source format: OFAC's classic SDN XML (``SDN.XML``, published by the Sanctions List Service)::

    <?xml version="1.0" standalone="yes"?>
    <sdnList xmlns:xsi="..." xmlns="https://sanctionslistservice.ofac.treas.gov/api/PublicationPreview/exports/XML">
      <publshInformation><Publish_Date>MM/DD/YYYY</Publish_Date><Record_Count>N</Record_Count></publshInformation>
      <sdnEntry>
        <uid>12345</uid><lastName>...</lastName><sdnType>Entity</sdnType>
        <programList><program>CYBER2</program></programList>
        <idList>
          <id><uid>678</uid><idType>Digital Currency Address - XBT</idType><idNumber>1A1zP1...</idNumber></id>
          <id><uid>679</uid><idType>Passport</idType><idNumber>...</idNumber></id>
        </idList>
      </sdnEntry>
    </sdnList>

The default namespace has changed over the years (``http://tempuri.org/sdnList.xsd`` before 2024, the Sanctions
List Service URL since), so tags are matched by local name only. ``publshInformation`` is OFAC's own spelling
(``publishInformation`` is accepted too). Only ids whose ``idType`` is ``Digital Currency Address - XBT`` (bitcoin)
are kept; every other id (ETH, passports, ...) is counted and dropped.

How a bitcoin id is read (OFAC lists no Lightning node today; this is our convention, documented in the README):
  * 66 hex digits starting 02/03 that decode to a point on secp256k1 -> a Lightning **node pubkey** (a node id
    is a 33-byte compressed public key; an address never looks like that);
  * otherwise a valid address of ANY bitcoin network (mainnet, testnet/signet, regtest) -> an **address**,
    bech32 lower-cased, base58 kept exactly (base58 is case-sensitive);
  * anything else is counted in ``invalid_ids`` and skipped (one odd id must not stop the whole list).

Parsing is streaming on the stdlib expat parser (fed in chunks, nothing kept but the ids of the current entry),
so the ~100 MB file needs a few MB of memory. A DOCTYPE, an entity declaration or an external entity reference
is refused: the list never needs them, and they are how XML bombs and external fetches get in. (ElementTree's
iterparse cannot refuse a DOCTYPE - its C parser hides the expat handlers - hence expat directly.)
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping
from xml.parsers import expat

XBT_ID_TYPE = "Digital Currency Address - XBT"
MAX_FIELD_CHARS = 512  # an id number longer than this is not a bitcoin destination (kept bounded while parsing)
_NODE_PUBKEY_RE = re.compile(r"^0[23][0-9a-f]{64}$")
_UID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_INVALID_SAMPLES = 10

Kind = Literal["address", "node"]


class SanctionsFormatError(ValueError):
    """The document is not an SDN list we can trust (not XML, wrong root element, a DTD or entity, truncated)."""


class SanctionsSourceError(RuntimeError):
    """A list document could not be fetched or is not a usable SDN list (raised by the source adapter). Its
    message never carries a URL's query string (a signed URL's credentials): see :func:`redact`."""


class SanctionsListConflict(RuntimeError):
    """Another refresh replaced the stored list first (the head's version moved); nothing of ours stays stored.
    Only the refresh job sees these two (never a client), so they are not SatflowErrors."""


def redact(url: str) -> str:
    """scheme://host[:port]/path of a URL, without userinfo or query (safe for logs and the status route)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


# ------------------------------------------------------------------------------------------------ normalisation
def normalise_address(text: object) -> str | None:
    """The canonical form of a bitcoin address of any network (bech32 lower case, base58 as is), or None when
    ``text`` is not one. Surrounding whitespace is ignored; witness versions no soft fork defines yet count."""
    from .bitcoin import InvalidAddress, Network, WrongNetworkAddress, validate_address

    if not isinstance(text, str):
        return None
    candidate = text.strip()
    if not candidate or any(c.isspace() for c in candidate):
        return None
    # testnet and signet share every encoding, so these three cover all four networks.
    for network in (Network.BITCOIN, Network.TESTNET, Network.REGTEST):
        try:
            return validate_address(candidate, network, allow_future_segwit=True).address
        except WrongNetworkAddress:
            continue
        except InvalidAddress:
            return None
    return None


def normalise_node_pubkey(text: object) -> str | None:
    """A Lightning node id as 66 lower-case hex digits if ``text`` is a valid compressed secp256k1 point."""
    if not isinstance(text, str):
        return None
    candidate = text.strip().lower()
    if not _NODE_PUBKEY_RE.match(candidate):
        return None
    from embit import ec

    try:
        ec.PublicKey.parse(bytes.fromhex(candidate))
    except Exception:  # embit raises its own ECError (and ValueError) for points off the curve
        return None
    return candidate


def classify_xbt_id(text: object) -> tuple[Kind, str] | None:
    """An XBT idNumber -> ("node", pubkey) | ("address", address) | None (see the module docstring)."""
    pubkey = normalise_node_pubkey(text)
    if pubkey is not None:
        return "node", pubkey
    address = normalise_address(text)
    if address is not None:
        return "address", address
    return None


# ------------------------------------------------------------------------------------------------ the list
@dataclass(frozen=True)
class SourceInfo:
    """What one source document contributed (kept with the stored list for the status route and the logs)."""

    label: str
    sha256: str  # of the raw document bytes
    size_bytes: int
    entries: int  # sdnEntry elements
    xbt_ids: int
    addresses: int
    node_pubkeys: int
    invalid_ids: int  # XBT ids that are neither an address nor a node pubkey
    other_ids: int  # ids of any other type (ETH, passport, ...)
    publish_date: str | None = None
    record_count: int | None = None

    def to_dict(self) -> dict:
        return {"label": self.label, "sha256": self.sha256, "size_bytes": self.size_bytes, "entries": self.entries,
                "xbt_ids": self.xbt_ids, "addresses": self.addresses, "node_pubkeys": self.node_pubkeys,
                "invalid_ids": self.invalid_ids, "other_ids": self.other_ids, "publish_date": self.publish_date,
                "record_count": self.record_count}

    @classmethod
    def from_dict(cls, data: Mapping) -> SourceInfo:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True)
class SanctionsList:
    """Listed destinations, each mapped to the entry that lists it (``<source label>:<sdnEntry uid>``)."""

    addresses: Mapping[str, str]
    node_pubkeys: Mapping[str, str]
    sources: tuple[SourceInfo, ...] = ()
    invalid_samples: tuple[str, ...] = field(default=(), compare=False)  # "<entry>: <id>" for the logs

    @property
    def size(self) -> int:
        return len(self.addresses) + len(self.node_pubkeys)

    @property
    def list_sha256(self) -> str:
        """Digest of what is screened (the sorted destination lines): unchanged when only the rest of the source
        changed (names, dates, other id types), so a daily re-publication does not rewrite the stored list."""
        digest = hashlib.sha256()
        for line in self.lines():
            digest.update(line.encode("ascii"))
        return digest.hexdigest()

    def lookup(self, kind: Kind, value: object) -> str | None:
        """The listing entry of a destination, or None. ``value`` is normalised first (case-insensitive bech32
        and node ids; base58 exact)."""
        if kind == "address":
            key = normalise_address(value)
            if key is None:  # not an address of any network: only an exact listing could match
                key = value.strip() if isinstance(value, str) else None
            return self.addresses.get(key) if key else None
        if kind == "node":
            # Shape and case only: every listed key was checked to be a curve point when the list was parsed, so
            # an invalid point cannot match anyway (and the payment path skips loading the curve code).
            key = value.strip().lower() if isinstance(value, str) else ""
            return self.node_pubkeys.get(key) if _NODE_PUBKEY_RE.match(key) else None
        raise ValueError(f"unknown destination kind {kind!r}")

    def lines(self) -> list[str]:
        """The storage form: one ``a|n <TAB> destination <TAB> entry`` line each, sorted."""
        out = [f"a\t{a}\t{e}\n" for a, e in self.addresses.items()]
        out += [f"n\t{n}\t{e}\n" for n, e in self.node_pubkeys.items()]
        return sorted(out)

    @classmethod
    def from_lines(cls, text: str, sources: tuple[SourceInfo, ...] = ()) -> SanctionsList:
        addresses: dict[str, str] = {}
        nodes: dict[str, str] = {}
        for line in text.splitlines():
            if not line:
                continue
            kind, value, entry = line.split("\t")
            if kind not in ("a", "n"):
                raise ValueError(f"bad sanctions line kind {kind!r}")
            (addresses if kind == "a" else nodes)[value] = entry
        return cls(addresses, nodes, sources)

    def merged(self, other: SanctionsList) -> SanctionsList:
        """Both lists' destinations; where both list one, this list's entry is kept."""
        return SanctionsList({**other.addresses, **self.addresses}, {**other.node_pubkeys, **self.node_pubkeys},
                             self.sources + other.sources, self.invalid_samples + other.invalid_samples)


def merge_lists(lists: Iterable[SanctionsList]) -> SanctionsList:
    result = SanctionsList({}, {})
    for lst in lists:
        result = result.merged(lst)
    return result


# ------------------------------------------------------------------------------------------------ the parser
@dataclass
class _Entry:
    uid: str = ""
    ids: list[tuple[str, str]] = field(default_factory=list)  # (idType, idNumber)


class SdnXmlParser:
    """Incremental parser: ``feed(chunk)`` as bytes arrive, then ``close()`` -> SanctionsList.

    ``label`` prefixes every entry reference (``sdn:12345``) so an audit record says which list matched."""

    def __init__(self, label: str = "sdn") -> None:
        if not _UID_RE.match(label) or ":" in label:
            raise ValueError("label must be a short identifier")
        self.label = label
        self._sha = hashlib.sha256()
        self._size = 0
        # No namespace processing: the default namespace has changed over the years and prefixes are free, so
        # elements are matched by local name (the part after any "prefix:").
        self._parser = expat.ParserCreate()
        p = self._parser
        p.buffer_text = True
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartDoctypeDeclHandler = self._refuse_doctype
        p.EntityDeclHandler = self._refuse_entity
        p.UnparsedEntityDeclHandler = self._refuse_entity
        p.ExternalEntityRefHandler = self._refuse_external
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        # CharacterDataHandler is set only while a wanted field is open: most text is never seen by Python.
        self._depth = 0
        self._path: list[str] = []  # local names of the open elements down to depth 5 (deeper ones do not matter)
        self._entry: _Entry | None = None
        self._id: dict[str, str] | None = None
        self._field: str | None = None  # the element whose text is being captured
        self._text: list[str] = []
        self._text_len = 0
        self._publish: dict[str, str] = {}
        self._addresses: dict[str, str] = {}
        self._nodes: dict[str, str] = {}
        self._entries = self._xbt = self._invalid = self._other = 0
        self._invalid_samples: list[str] = []
        self._seen_root = False
        self._closed = False

    # -- public
    def feed(self, chunk: bytes) -> None:
        if self._closed:
            raise RuntimeError("parser is closed")
        self._sha.update(chunk)
        self._size += len(chunk)
        self._parse(chunk, False)

    def close(self) -> SanctionsList:
        self._parse(b"", True)
        self._closed = True
        if not self._seen_root:
            raise SanctionsFormatError("empty document")
        info = SourceInfo(
            label=self.label, sha256=self._sha.hexdigest(), size_bytes=self._size, entries=self._entries,
            xbt_ids=self._xbt, addresses=len(self._addresses), node_pubkeys=len(self._nodes),
            invalid_ids=self._invalid, other_ids=self._other, publish_date=self._publish.get("Publish_Date"),
            record_count=_int_or_none(self._publish.get("Record_Count")))
        return SanctionsList(dict(self._addresses), dict(self._nodes), (info,), tuple(self._invalid_samples))

    # -- expat callbacks
    def _parse(self, data: bytes, final: bool) -> None:
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            raise SanctionsFormatError(f"not well-formed XML: {exc}") from None

    @staticmethod
    def _refuse_doctype(*_args: object) -> None:
        raise SanctionsFormatError("a DOCTYPE is not allowed in a sanctions list")

    @staticmethod
    def _refuse_entity(*_args: object) -> None:
        raise SanctionsFormatError("entity declarations are not allowed in a sanctions list")

    @staticmethod
    def _refuse_external(*_args: object) -> int:
        raise SanctionsFormatError("external entities are not allowed in a sanctions list")

    def _start(self, name: str, _attrs: dict) -> None:
        self._depth = depth = self._depth + 1
        if depth > 5:
            return
        local = name.rpartition(":")[2]
        path = self._path
        path.append(local)
        if depth == 1:
            if local != "sdnList":
                raise SanctionsFormatError(f"root element is <{local}>, expected <sdnList>")
            self._seen_root = True
        elif depth == 2:
            if local == "sdnEntry":
                self._entry = _Entry()
        elif depth == 3:
            if self._entry is not None:
                if local == "uid":
                    self._capture(local)
            elif path[1] in ("publshInformation", "publishInformation") and local in ("Publish_Date", "Record_Count"):
                self._capture(local)
        elif depth == 4:
            if self._entry is not None and local == "id" and path[2] == "idList":
                self._id = {}
        elif self._id is not None and local in ("idType", "idNumber"):
            self._capture(local)

    def _capture(self, name: str) -> None:
        self._field, self._text, self._text_len = name, [], 0
        self._parser.CharacterDataHandler = self._chars

    def _chars(self, data: str) -> None:
        if self._text_len <= MAX_FIELD_CHARS:
            self._text.append(data)
            self._text_len += len(data)

    def _end(self, _name: str) -> None:
        depth = self._depth
        self._depth = depth - 1
        if depth > 5:
            return
        local = self._path.pop()
        if self._field is not None:
            self._parser.CharacterDataHandler = None
            value = "".join(self._text) if self._text_len <= MAX_FIELD_CHARS else "\x00too long"
            if depth == 3 and self._entry is not None:
                self._entry.uid = value.strip()
            elif depth == 3:
                self._publish[local] = value.strip()
            elif self._id is not None:
                self._id[local] = value
            self._field = None
        elif depth == 4:
            if local == "id" and self._id is not None and self._entry is not None:
                self._entry.ids.append((self._id.get("idType", ""), self._id.get("idNumber", "")))
                self._id = None
        elif depth == 2 and local == "sdnEntry" and self._entry is not None:
            self._finish(self._entry)
            self._entry = None

    def _finish(self, entry: _Entry) -> None:
        self._entries += 1
        uid = entry.uid if _UID_RE.match(entry.uid) else "?"
        ref = f"{self.label}:{uid}"
        for id_type, id_number in entry.ids:
            if " ".join(id_type.split()) != XBT_ID_TYPE:
                self._other += 1
                continue
            self._xbt += 1
            classified = classify_xbt_id(id_number)
            if classified is None:
                self._invalid += 1
                if len(self._invalid_samples) < _INVALID_SAMPLES:
                    self._invalid_samples.append(f"{ref}: {id_number.strip()[:80]!r}")
                continue
            kind, value = classified
            target = self._nodes if kind == "node" else self._addresses
            target.setdefault(value, ref)  # the first entry listing it is the one we name


def parse_sdn_xml(data: bytes | Iterable[bytes], label: str = "sdn") -> SanctionsList:
    """Parse a whole document (bytes, or an iterable of byte chunks)."""
    parser = SdnXmlParser(label)
    for chunk in ([data] if isinstance(data, (bytes, bytearray)) else data):
        parser.feed(bytes(chunk))
    return parser.close()


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) < 10 else None


# ------------------------------------------------------------------------------------------------ stored list
@dataclass(frozen=True)
class SanctionsHead:
    """The pointer to the current stored list (what ``GET /v1/admin/sanctions`` shows)."""

    version: int
    list_sha256: str
    addresses: int
    node_pubkeys: int
    chunks: int
    chunk_token: str
    loaded_at: str
    checked_at: str
    sources: tuple[SourceInfo, ...] = ()

    @property
    def size(self) -> int:
        return self.addresses + self.node_pubkeys

    def to_dict(self) -> dict:
        return {"version": self.version, "list_sha256": self.list_sha256, "addresses": self.addresses,
                "node_pubkeys": self.node_pubkeys, "loaded_at": self.loaded_at, "checked_at": self.checked_at,
                "sources": [s.to_dict() for s in self.sources]}


# ------------------------------------------------------------------------------------------------ refresh policy
MIN_KEEP_RATIO_PERCENT = 50


def refusal_reason(new: SanctionsList, stored: SanctionsHead | None, *, accept_shrink: bool = False) -> str | None:
    """Why a freshly fetched list must NOT replace the stored one, or None.

    An empty list, a source without a single sdnEntry (format or namespace change, an error page that happens to
    be XML) or a list that lost more than half of the stored destinations is far likelier a broken download than
    a real de-listing; replacing the list would silently stop screening. An operator who checked that a large
    de-listing is real re-runs the job with ``accept_shrink``."""
    if any(s.entries == 0 for s in new.sources):
        empty = ", ".join(s.label for s in new.sources if s.entries == 0)
        return f"no sdnEntry in source(s) {empty}"
    if new.size == 0:
        return "the new list has no bitcoin address or node pubkey"
    if stored is not None and not accept_shrink and stored.size > 0 and (
            new.size * 100 < stored.size * MIN_KEEP_RATIO_PERCENT):
        return (f"the new list has {new.size} destinations, fewer than {MIN_KEEP_RATIO_PERCENT}% of the stored "
                f"{stored.size}")
    return None


__all__ = ["XBT_ID_TYPE", "SanctionsFormatError", "SanctionsSourceError", "SanctionsListConflict", "redact", "SanctionsList", "SanctionsHead", "SourceInfo", "SdnXmlParser",
           "parse_sdn_xml", "merge_lists", "normalise_address", "normalise_node_pubkey", "classify_xbt_id",
           "refusal_reason", "MIN_KEEP_RATIO_PERCENT"]
