"""Wallet ecosystem items on the single table: API key records, account-creation idempotency markers, Lightning
Address usernames, LNURL-withdraw links and their uses, and per-address rate-limit windows.

Key design (pk / sk):
  APIKEY#<sha256>        / APIKEY         hashed key -> account_id, scopes (what authentication reads; unchanged)
  KEY#<account_id>       / <key_id>       the account's key records: prefix, scopes, label, status, key hash
  ACCTIDEM#<sha256(k)>   / IDEM           account creation under an Idempotency-Key: account, fingerprint, key id
  LNADDR#<username>      / LNADDR         username -> account (status active | retired: never re-assigned)
  ACCOUNT#<account_id>   / LNADDR         the account's current username
  WDLINK#<sha256(k1)>    / WDLINK         a withdraw link: bounds, uses left, expiry, status
  WDLINKS#<account_id>   / <link_id>      the account's links (for listing and disabling)
  WDUSE#<sha256(k1)>     / <payment_hash> one use of a link per invoice (the idempotency key of the callback)
  RATE#<bucket>          / <window>       requests in a fixed window (expires by TTL)
"""
from __future__ import annotations

from typing import Any, Sequence

from satflow.domain import errors
from satflow.domain.accounts import Scope
from satflow.domain.ecosystem import ApiKeyRecord
from satflow.domain.ids import derive_id

from .transaction import TxItem, run_or_raise, transact


def _s(v: str) -> dict:
    return {"S": v}


def _n(v: int) -> dict:
    return {"N": str(int(v))}


class _Store:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _put(self, tag: str, item: dict, condition: str | None = None, names: dict | None = None,
             values: dict | None = None, on_fail=None) -> TxItem:
        params: dict[str, Any] = {"TableName": self._table, "Item": item}
        if condition:
            params["ConditionExpression"] = condition
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if names:
            params["ExpressionAttributeNames"] = names
        if values:
            params["ExpressionAttributeValues"] = values
        return TxItem(tag, "Put", params, on_fail)

    def _update(self, tag: str, pk: str, sk: str, expression: str, condition: str | None, names: dict | None,
                values: dict | None, on_fail=None) -> TxItem:
        params: dict[str, Any] = {"TableName": self._table, "Key": {"pk": _s(pk), "sk": _s(sk)},
                                  "UpdateExpression": expression}
        if condition:
            params["ConditionExpression"] = condition
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if names:
            params["ExpressionAttributeNames"] = names
        if values:
            params["ExpressionAttributeValues"] = values
        return TxItem(tag, "Update", params, on_fail)

    def _delete(self, tag: str, pk: str, sk: str) -> TxItem:
        return TxItem(tag, "Delete", {"TableName": self._table, "Key": {"pk": _s(pk), "sk": _s(sk)}})

    def _get(self, pk: str, sk: str) -> dict | None:
        return self._client.get_item(TableName=self._table, Key={"pk": _s(pk), "sk": _s(sk)},
                                     ConsistentRead=True).get("Item")

    def _query(self, pk: str, limit: int, forward: bool = True, start: dict | None = None) -> dict:
        params: dict[str, Any] = {"TableName": self._table, "KeyConditionExpression": "pk = :pk",
                                  "ExpressionAttributeValues": {":pk": _s(pk)}, "Limit": limit,
                                  "ScanIndexForward": forward, "ConsistentRead": True}
        if start:
            params["ExclusiveStartKey"] = start
        return self._client.query(**params)


# ------------------------------------------------------------------------------------------------ API keys
class DynamoKeyStore(_Store):
    def new_key_items(self, rec: ApiKeyRecord, *, with_auth_item: bool = True) -> list[TxItem]:
        """The authentication item (what ``DynamoAccounts.api_key`` reads) and the account's key record.
        ``with_auth_item=False`` when the caller writes the authentication item itself (account creation)."""
        scopes = {"L": [_s(s.value) for s in sorted(rec.scopes, key=lambda s: s.value)]}
        items = []
        if with_auth_item:
            items.append(self._put(f"auth_{rec.key_id}", {
                "pk": _s(f"APIKEY#{rec.key_hash}"), "sk": _s("APIKEY"), "account_id": _s(rec.account_id),
                "scopes": scopes, "key_prefix": _s(rec.prefix), "created_at": _s(rec.created_at),
                "key_id": _s(rec.key_id)}, "attribute_not_exists(pk)"))
        record = {"pk": _s(f"KEY#{rec.account_id}"), "sk": _s(rec.key_id), "key_id": _s(rec.key_id),
                  "account_id": _s(rec.account_id), "key_hash": _s(rec.key_hash), "prefix": _s(rec.prefix),
                  "scopes": scopes, "created_at": _s(rec.created_at), "status": _s("active")}
        if rec.label:
            record["label"] = _s(rec.label)
        items.append(self._put(f"record_{rec.key_id}", record, "attribute_not_exists(pk)"))
        return items

    def revoke_items(self, rec: ApiKeyRecord, at: str) -> list[TxItem]:
        """Delete the authentication item (the key stops working at once) and mark the record revoked, on the
        condition that it is still active (a second revoke is a replay, not a second change)."""
        return [
            self._delete(f"unauth_{rec.key_id}", f"APIKEY#{rec.key_hash}", "APIKEY"),
            self._update(f"revoke_{rec.key_id}", f"KEY#{rec.account_id}", rec.key_id,
                         "SET #st = :revoked, revoked_at = :at", "#st = :active", {"#st": "status"},
                         {":revoked": _s("revoked"), ":active": _s("active"), ":at": _s(at)},
                         lambda old: errors.ApiKeyNotFound("the key is already revoked")),
        ]

    def run(self, items: Sequence[TxItem]) -> None:
        run_or_raise(self._client, items)

    def adopt_legacy_key(self, key_hash: str, at: str) -> ApiKeyRecord | None:
        """Give a key issued before key records existed (its ``APIKEY#`` item has no key_id) its ``KEY#`` record,
        so it can be listed, rotated and revoked. Idempotent: the key id is derived from the key's hash, the record
        is put only if absent and the authentication item gets the key id only if it has none and still exists (a
        concurrent adoption or a revocation wins). Returns the record, or None when there was nothing to adopt."""
        raw = self._get(f"APIKEY#{key_hash}", "APIKEY")
        if raw is None or "key_id" in raw:
            return None
        rec = ApiKeyRecord(key_id=derive_id("key", "legacy", key_hash), account_id=raw["account_id"]["S"],
                           key_hash=key_hash, prefix=raw.get("key_prefix", {}).get("S", "sk_"),
                           scopes=frozenset(Scope(s["S"]) for s in raw["scopes"]["L"]), label="legacy",
                           created_at=raw.get("created_at", {}).get("S", at))
        record = self.new_key_items(rec, with_auth_item=False)[0]
        link = self._update("auth", f"APIKEY#{key_hash}", "APIKEY", "SET key_id = :id",
                            "attribute_exists(pk) AND attribute_not_exists(key_id)", None, {":id": _s(rec.key_id)})
        cancellation = transact(self._client, [record, link])
        if cancellation is not None and cancellation.first_transient():
            raise errors.TransientError("DynamoDB cancelled the key record; the next authentication retries")
        return rec if cancellation is None else None

    def get(self, account_id: str, key_id: str) -> ApiKeyRecord | None:
        raw = self._get(f"KEY#{account_id}", key_id)
        return None if raw is None else _key_record(raw)

    def list(self, account_id: str) -> list[ApiKeyRecord]:
        out: list[ApiKeyRecord] = []
        start = None
        while True:
            resp = self._query(f"KEY#{account_id}", 100, start=start)
            out.extend(_key_record(raw) for raw in resp.get("Items", []))
            start = resp.get("LastEvaluatedKey")
            if not start:
                return out

    # ---- account creation under an Idempotency-Key
    def creation_marker(self, key_hash: str) -> dict | None:
        raw = self._get(f"ACCTIDEM#{key_hash}", "IDEM")
        if raw is None:
            return None
        return {"account_id": raw["account_id"]["S"], "fingerprint": raw["fingerprint"]["S"],
                "key_id": raw["key_id"]["S"]}

    def creation_marker_item(self, key_hash: str, account_id: str, fingerprint: str, key_id: str,
                             created_at: str) -> TxItem:
        return self._put("idempotency", {
            "pk": _s(f"ACCTIDEM#{key_hash}"), "sk": _s("IDEM"), "account_id": _s(account_id),
            "fingerprint": _s(fingerprint), "key_id": _s(key_id), "created_at": _s(created_at)},
            "attribute_not_exists(pk)")

    def move_marker_item(self, key_hash: str, previous_key_id: str, key_id: str) -> TxItem:
        """The marker now names the newly issued key, on the condition that it still named the previous one (two
        concurrent retries: one wins, the other is told to retry)."""
        return self._update("idempotency", f"ACCTIDEM#{key_hash}", "IDEM", "SET key_id = :new", "key_id = :old",
                            None, {":new": _s(key_id), ":old": _s(previous_key_id)},
                            lambda old: errors.TransientError("a concurrent retry of this request won; retry"))


def _key_record(raw: dict) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=raw["key_id"]["S"], account_id=raw["account_id"]["S"], key_hash=raw["key_hash"]["S"],
        prefix=raw["prefix"]["S"], scopes=frozenset(Scope(s["S"]) for s in raw["scopes"]["L"]),
        label=raw.get("label", {}).get("S"), created_at=raw["created_at"]["S"], status=raw["status"]["S"],
        revoked_at=raw.get("revoked_at", {}).get("S"))


# ------------------------------------------------------------------------------------------------ LNURL
class DynamoLnurlStore(_Store):
    # ---- Lightning Address usernames
    def username_of(self, account_id: str) -> str | None:
        raw = self._get(f"ACCOUNT#{account_id}", "LNADDR")
        return None if raw is None else raw["username"]["S"]

    def resolve(self, username: str) -> str | None:
        """The account of an active username, else None."""
        raw = self._get(f"LNADDR#{username}", "LNADDR")
        if raw is None or raw["status"]["S"] != "active":
            return None
        return raw["account_id"]["S"]

    def claim(self, account_id: str, username: str, at: str, extra: Sequence[TxItem] = ()) -> bool:
        """One transaction: the username (unique: conditional put) and the account's pointer (one per account).
        Returns False when this account already holds exactly this username (a replay)."""
        items = [
            self._put("username", {"pk": _s(f"LNADDR#{username}"), "sk": _s("LNADDR"), "account_id": _s(account_id),
                                   "status": _s("active"), "created_at": _s(at)}, "attribute_not_exists(pk)"),
            self._put("pointer", {"pk": _s(f"ACCOUNT#{account_id}"), "sk": _s("LNADDR"), "username": _s(username),
                                  "updated_at": _s(at)}, "attribute_not_exists(pk)"),
            *extra,
        ]
        cancellation = transact(self._client, items)
        if cancellation is None:
            return True
        if cancellation.first_transient():
            raise errors.TransientError("DynamoDB cancelled the claim; retry it")
        if self.username_of(account_id) == username:
            return False
        if cancellation.condition_failed("username"):
            raise errors.UsernameTaken(f"the username {username!r} is taken")
        if cancellation.condition_failed("pointer"):
            raise errors.LightningAddressExists("this account already has a Lightning Address; the admin changes it")
        for item in cancellation.items:
            if cancellation.condition_failed(item.tag) and item.on_condition_failed is not None:
                raise item.on_condition_failed(cancellation.old_image(item.tag))
        raise errors.TransientError(f"the claim was cancelled: {sorted(cancellation.failures)}")

    def change(self, account_id: str, old: str | None, new: str, at: str, extra: Sequence[TxItem] = ()) -> None:
        """Admin: the account's username becomes ``new``; the old one is retired (it resolves to nothing and is
        never given to anyone else, so payments meant for the old owner cannot reach a new one)."""
        items = [self._put("username", {"pk": _s(f"LNADDR#{new}"), "sk": _s("LNADDR"), "account_id": _s(account_id),
                                        "status": _s("active"), "created_at": _s(at)}, "attribute_not_exists(pk)",
                           on_fail=lambda o: errors.UsernameTaken(f"the username {new!r} is taken"))]
        if old is None:
            items.append(self._put("pointer", {"pk": _s(f"ACCOUNT#{account_id}"), "sk": _s("LNADDR"),
                                               "username": _s(new), "updated_at": _s(at)}, "attribute_not_exists(pk)",
                                   on_fail=lambda o: errors.Conflict("the account's address changed meanwhile")))
        else:
            items.append(self._update("pointer", f"ACCOUNT#{account_id}", "LNADDR", "SET username = :new, updated_at = :at",
                                      "username = :old", None, {":new": _s(new), ":old": _s(old), ":at": _s(at)},
                                      lambda o: errors.Conflict("the account's address changed meanwhile")))
            items.append(self._update("retire", f"LNADDR#{old}", "LNADDR", "SET #st = :retired, retired_at = :at",
                                      "account_id = :acc", {"#st": "status"},
                                      {":retired": _s("retired"), ":at": _s(at), ":acc": _s(account_id)},
                                      lambda o: errors.Conflict("the old username changed meanwhile")))
        run_or_raise(self._client, [*items, *extra])

    # ---- LNURL-withdraw links
    def create_link(self, *, k1_hash: str, link_id: str, account_id: str, min_msat: int, max_msat: int, uses: int,
                    expires_at_unix: int, description: str, created_at: str, creator_key_hash: str | None = None,
                    extra: Sequence[TxItem] = ()) -> None:
        """The link and the account's index item (+ the caller's ``extra``: its audit record), one transaction.
        ``creator_key_hash``: the key that made it; the link works only while that key does."""
        link = {"pk": _s(f"WDLINK#{k1_hash}"), "sk": _s("WDLINK"), "link_id": _s(link_id),
                "account_id": _s(account_id), "min_msat": _n(min_msat), "max_msat": _n(max_msat), "uses": _n(uses),
                "remaining": _n(uses), "expires_at_unix": _n(expires_at_unix), "description": _s(description),
                "status": _s("active"), "created_at": _s(created_at), "ttl": _n(expires_at_unix + 30 * 86400)}
        index = {"pk": _s(f"WDLINKS#{account_id}"), "sk": _s(link_id), "k1_hash": _s(k1_hash),
                 "created_at": _s(created_at), "ttl": _n(expires_at_unix + 30 * 86400)}
        if creator_key_hash is not None:
            link["creator_key_hash"] = index["creator_key_hash"] = _s(creator_key_hash)
        run_or_raise(self._client, [self._put("link", link, "attribute_not_exists(pk)"),
                                    self._put("index", index, "attribute_not_exists(pk)"), *extra])

    def link(self, k1_hash: str) -> dict | None:
        raw = self._get(f"WDLINK#{k1_hash}", "WDLINK")
        return None if raw is None else _link(raw)

    def links(self, account_id: str, limit: int = 100) -> list[dict]:
        found = []
        for raw in self._query(f"WDLINKS#{account_id}", limit, forward=False).get("Items", []):
            link = self.link(raw["k1_hash"]["S"])
            if link is not None:
                found.append(link)
        return found

    def link_hash(self, account_id: str, link_id: str) -> str | None:
        raw = self._get(f"WDLINKS#{account_id}", link_id)
        return None if raw is None else raw["k1_hash"]["S"]

    def disable_link(self, k1_hash: str, at: str, extra: Sequence[TxItem] = ()) -> bool:
        """The link stops paying (+ the caller's ``extra``: its audit record), one transaction. Returns False when
        it was already disabled (a replay: nothing written)."""
        item = self._update("link", f"WDLINK#{k1_hash}", "WDLINK", "SET #st = :off, disabled_at = :at",
                            "attribute_exists(pk) AND #st <> :off", {"#st": "status"},
                            {":off": _s("disabled"), ":at": _s(at)})
        cancellation = transact(self._client, [item, *extra])
        if cancellation is None:
            return True
        if cancellation.first_transient():
            raise errors.TransientError("DynamoDB cancelled the change; retry it")
        if cancellation.condition_failed("link"):
            return False
        raise errors.TransientError(f"the change was cancelled: {sorted(cancellation.failures)}")

    def links_of_key(self, account_id: str, creator_key_hash: str) -> list[str]:
        """The k1 hashes of the account's links made with this key (all pages of the account's index)."""
        found, start = [], None
        while True:
            resp = self._query(f"WDLINKS#{account_id}", 100, start=start)
            found.extend(raw["k1_hash"]["S"] for raw in resp.get("Items", [])
                         if raw.get("creator_key_hash", {}).get("S") == creator_key_hash)
            start = resp.get("LastEvaluatedKey")
            if not start:
                return found

    def use(self, k1_hash: str, payment_hash: str, now_unix: int, at: str, creator_key_hash: str | None = None,
            payment_id: str | None = None) -> dict:
        """Claim one use of the link for this invoice: the link's counter goes down (only while active, unexpired
        and not used up; and while the key that made the link is not revoked) and a use item keyed by the payment
        hash is created, in one transaction. A second claim for the same invoice finds the use item and changes
        nothing. Returns the use: {"replayed": bool}; the caller re-checks the link on a replay."""
        items = [
            self._update("link", f"WDLINK#{k1_hash}", "WDLINK", "SET remaining = remaining - :one",
                         "#st = :active AND remaining > :zero AND expires_at_unix > :now", {"#st": "status"},
                         {":one": _n(1), ":zero": _n(0), ":active": _s("active"), ":now": _n(now_unix)}),
            self._put("use", {"pk": _s(f"WDUSE#{k1_hash}"), "sk": _s(payment_hash), "status": _s("claimed"),
                              "created_at": _s(at), **({"payment_id": _s(payment_id)} if payment_id else {})},
                      "attribute_not_exists(pk)"),
        ]
        if creator_key_hash is not None:
            items.append(TxItem("creator_key", "ConditionCheck", {
                "TableName": self._table, "Key": {"pk": _s(f"APIKEY#{creator_key_hash}"), "sk": _s("APIKEY")},
                "ConditionExpression": "attribute_exists(pk)"}))
        cancellation = transact(self._client, items)
        if cancellation is None:
            return {"replayed": False}
        if cancellation.condition_failed("use"):
            return {"replayed": True}
        if cancellation.first_transient():
            raise errors.TransientError("DynamoDB cancelled the withdrawal; retry it")
        raise errors.WithdrawLinkNotFound("this withdraw link is used up, expired or disabled")

    def release(self, k1_hash: str, payment_hash: str, payment_id: str) -> bool:
        """Give a use back: the use item goes and the counter comes back, once (conditional on the use item), and
        only if the use's payment does not exist or FAILED (checked in the same transaction, by the payment's
        deterministic id: a use whose payment exists and is not FAILED is never given back). Returns whether the
        use was given back."""
        items = [
            self._update("link", f"WDLINK#{k1_hash}", "WDLINK", "SET remaining = remaining + :one",
                         "attribute_exists(pk)", None, {":one": _n(1)}),
            TxItem("use", "Delete", {"TableName": self._table,
                                     "Key": {"pk": _s(f"WDUSE#{k1_hash}"), "sk": _s(payment_hash)},
                                     "ConditionExpression": "attribute_exists(pk)"}),
            TxItem("payment", "ConditionCheck", {
                "TableName": self._table, "Key": {"pk": _s(f"PAYMENT#{payment_id}"), "sk": _s("PAYMENT")},
                "ConditionExpression": "attribute_not_exists(pk) OR #st = :failed",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {":failed": _s("FAILED")}}),
        ]
        cancellation = transact(self._client, items)
        if cancellation is not None and cancellation.first_transient():
            raise errors.TransientError("DynamoDB cancelled the release; retry it")
        return cancellation is None

    def uses(self, k1_hash: str, limit: int = 100) -> list[dict]:
        """The link's uses still held (oldest first): payment hash, payment id (absent on uses made before it was
        recorded)."""
        resp = self._query(f"WDUSE#{k1_hash}", limit)
        return [{"payment_hash": raw["sk"]["S"], "payment_id": raw.get("payment_id", {}).get("S")}
                for raw in resp.get("Items", [])]


def _link(raw: dict) -> dict:
    return {"link_id": raw["link_id"]["S"], "account_id": raw["account_id"]["S"],
            "min_msat": int(raw["min_msat"]["N"]), "max_msat": int(raw["max_msat"]["N"]),
            "uses": int(raw["uses"]["N"]), "remaining": int(raw["remaining"]["N"]),
            "expires_at_unix": int(raw["expires_at_unix"]["N"]), "description": raw["description"]["S"],
            "status": raw["status"]["S"], "created_at": raw["created_at"]["S"],
            "creator_key_hash": raw.get("creator_key_hash", {}).get("S")}


# ------------------------------------------------------------------------------------------------ rate limits
class DynamoRateLimiter(_Store):
    """Fixed-window counters: one conditional UpdateItem per request (ADD n, condition n < limit). The item is
    per client address and window, so a flood from one address only heats that address's own item; the API
    Gateway route throttle caps the total."""

    def allow(self, bucket: str, limit: int, window_s: int, now_unix: int) -> bool:
        from botocore.exceptions import ClientError

        window = now_unix - now_unix % window_s
        try:
            self._client.update_item(
                TableName=self._table, Key={"pk": _s(f"RATE#{bucket}"), "sk": _s(str(window))},
                UpdateExpression="ADD n :one SET #ttl = :ttl",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={":one": _n(1), ":limit": _n(limit), ":ttl": _n(window + 2 * window_s)})
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
