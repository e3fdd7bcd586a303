"""The on-chain half of the simulation: deposits (addresses from the API, the outside paying them, blocks, reorgs,
double sends) and payouts (POST /v1/payouts with Idempotency-Key retries, the batcher, hot and external signing,
signer timeouts and late signatures, fee bumps the chain accepts or refuses, cancels), with the reference model and
the oracle's checks for them.

Everything goes through the real code paths: the API handler, MonitorFunction's ``chain_scan`` and
``payout_batcher`` jobs, the payout workflow (statemachines/payout.asl.json, stepped by :mod:`.asl`) with
PayoutFunction's steps, and PayoutFunction's admin operations (fee bumps). The chain is the chain simulator behind
the bitcoind port (:meth:`World._wire_chain`).

What the world may do to the chain (read from app/deposits.py, the chain monitor's documented contract):
reorgs of depth 1-3, rarely 7 (deeper than every credit depth, well inside REORG_WINDOW = 100); a reorg may drop
(double-spend) an outside deposit only while it never reached its credit depth — a dropped deposit output already
spent by a payout batch is a gap the monitor names (it logs and leaves the reserved UTXO), not a world we script.
Our own payout transactions are never dropped: only we could double-spend them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .world import ADMIN_KEY, FEE_ESTIMATES, SimCrash

if TYPE_CHECKING:
    from .oracle import Verdict
    from .workload import Op, Workload

# sat: the operator's opening hot wallet, in outputs of several sizes (coin selection has choices to make)
HOT_CAPITAL_OUTPUTS = (2_500_000, 1_800_000, 1_200_000, 900_000, 600_000, 400_000, 250_000, 150_000)
DEPOSIT_AMOUNTS = (60_000, 2_000_000, 12_000_000)  # sat: one per credit tier of the production policy (1/3/6)
PAYOUT_AMOUNTS = (10_000, 40_000, 150_000, 450_000)  # sat: batches below and above SIM_HOT_SIGN_LIMIT_SAT (100 k)


@dataclass
class OnchainModel:
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (account_id, address) issued by the API
    deposits: list[dict] = field(default_factory=list)  # {"account", "address", "script", "txid", "vout", "amount"}
    payouts: list[dict] = field(default_factory=list)  # accepted: {"account", "key", "id", "address", "script", ...}
    signatures: dict[str, dict] = field(default_factory=dict)  # txid -> {"batch", "unsigned", "signed", "used"}
    max_depth: dict[str, int] = field(default_factory=dict)  # deposit txid -> deepest confirmation ever seen
    counts: dict[str, int] = field(default_factory=dict)


class Onchain:
    def __init__(self, wl: "Workload") -> None:
        self.wl = wl
        self.w = wl.w
        self.rng = wl.rng
        self.m = OnchainModel()
        self.policy = None
        self.payee_seq = 0
        self.posts: list[tuple[str, str, int]] = []  # (kind, ref, depth at commit) for the depth checks

    # ------------------------------------------------------------------ setup (no faults)
    def setup(self) -> None:
        from satflow.app.addresses import new_change_address
        from satflow.domain.deposits import DepositPolicy

        svc = self.w.svc
        self.policy = DepositPolicy.parse(svc.deposit_policy)
        self._watch_commits()
        self.w.run_monitor("chain_scan")  # the monitor's first run starts its tip near the node's
        for value in HOT_CAPITAL_OUTPUTS:  # the operator funds the hot wallet (its change chain) ...
            _index, address, _script = new_change_address(svc)
            self.w.chain.send_to_address(address, value)
        self.w.chain.mine(1)
        result = self.w.run_monitor("chain_scan")
        assert result and result.get("change_outputs") == len(HOT_CAPITAL_OUTPUTS), result
        # ... and books it as its capital, as it does for the node's liquidity (else the solvency check rightly calls
        # the hot wallet's coins unexplained)
        status, body = self.w.api_call("POST", "/v1/admin/solvency/capital", key=ADMIN_KEY,
                                       idempotency_key="sim-opening-hot-wallet",
                                       body={"source": "onchain", "amount_msat": sum(HOT_CAPITAL_OUTPUTS) * 1000,
                                             "direction": "in", "reason": "simulated hot wallet opening balance"})
        assert status == 201, (status, body)

    def _watch_commits(self) -> None:
        """Every deposit credit and payout post the ledger commits, with the chain depth at that moment: the oracle
        checks it against the production depth (a weaker depth anywhere — workflow, recovery, a replayed input —
        shows up here, even when the money ends up right)."""
        from satflow.domain.ledger import TransferKind

        ledger = self.w.svc.ledger
        execute = ledger.execute

        def watched(transfer: Any, *args: Any, **kwargs: Any) -> Any:
            result = execute(transfer, *args, **kwargs)
            if getattr(result, "replayed", False) or transfer.kind is not TransferKind.POST_PENDING:
                return result
            if transfer.template == "deposit_seen":
                outpoint = transfer.metadata.get("outpoint", "")
                self.posts.append(("deposit", outpoint, self._depth(outpoint.partition(":")[0])))
            elif transfer.template == "payout_reserved":
                payout = self._payout_by_id(str(transfer.pending_id))
                depth = max((self._depth(t) for t in self._paying(payout)), default=0) if payout else -1
                self.posts.append(("payout", str(transfer.pending_id), depth))
            return result

        ledger.execute = watched

    # ------------------------------------------------------------------ chain facts
    def _depth(self, txid: str) -> int:
        block = self.w.chain.confirmed_block_of(txid)
        return self.w.chain.confirmations(block) if block is not None else 0

    def _paying(self, payout: dict) -> set[str]:
        """Every transaction the chain ever accepted with an output of exactly this payout's script and amount."""
        return self.w.paid_outputs.get((payout["script"], payout["amount"]), set())

    def _payout_by_id(self, payout_id: str) -> dict | None:
        return next((p for p in self.m.payouts if p["id"] == payout_id), None)

    def note_depths(self) -> None:
        for d in self.m.deposits:
            self.m.max_depth[d["txid"]] = max(self.m.max_depth.get(d["txid"], 0), self._depth(d["txid"]))

    def _count(self, name: str) -> None:
        self.m.counts[name] = self.m.counts.get(name, 0) + 1

    # ------------------------------------------------------------------ the client operations
    def new_op(self, n: int) -> "Op":
        from .workload import Op

        r = self.rng.random()
        own = [a for a in self.m.addresses]
        if r < 0.12 or (r < 0.30 and not own):
            return Op("address", {"account": self.wl._account()})
        if r < 0.30:
            account, address = self.rng.choice(own)
            return Op("deposit", {"account": account, "address": address,
                                  "amount": self.rng.choice(DEPOSIT_AMOUNTS), "twice": self.rng.random() < 0.2})
        if r < 0.62 or not self.m.payouts:
            self.payee_seq += 1
            script = "0014" + hashlib.sha256(f"payee:{self.w.seed}:{self.payee_seq}".encode()).hexdigest()[:40]
            from satflow.domain.bitcoin import Network, script_pubkey_to_address

            account = self.wl._account()
            # a client asks for what it roughly has (the model's balance; 5 % of asks exceed it)
            affordable = [a for a in PAYOUT_AMOUNTS if a * 1000 * 1.2 < self.wl.model.balance[account[0]]]
            amount = self.rng.choice(affordable if affordable and self.rng.random() > 0.05 else PAYOUT_AMOUNTS)
            return Op("payout", {"account": account, "key": f"po-{n}", "script": script,
                                 "address": script_pubkey_to_address(script, Network.REGTEST), "amount": amount,
                                 "priority": self.rng.choice(["fast", "normal", "normal", "slow"]),
                                 "replay": self.rng.random() < 0.2})
        if r < 0.70:
            return Op("cancel_payout", {"payout": self.rng.choice(self.m.payouts)})
        if r < 0.90:
            return Op("signer", {})
        return Op("bump", {"sat_per_vb": self.rng.choice([7, 12, 30])})

    def _op_address(self, op: "Op") -> None:
        acct, key = op.args["account"]
        status, body = self.w.api_call("POST", "/v1/addresses", key=key)
        if status >= 500:
            return
        if status == 201:
            self.m.addresses.append((acct, body["address"]))
        else:
            self.wl._refused("address", status, body)
        op.done = True

    def _op_deposit(self, op: "Op") -> None:
        """The outside pays a deposit address (twice, sometimes: two outputs, two deposits)."""
        from satflow.domain.bitcoin import Network, validate_address

        a = op.args
        script = validate_address(a["address"], Network.REGTEST).script_pubkey_hex
        for _ in range(2 if a["twice"] else 1):
            txid = self.w.chain.send_to_address(a["address"], a["amount"])
            tx = self.w.chain.mempool_entry(txid).tx
            for vout, out in enumerate(tx.vout):
                if out.script_pubkey.data.hex() == script and out.value == a["amount"]:
                    self.m.deposits.append({"account": a["account"], "address": a["address"], "script": script,
                                            "txid": txid, "vout": vout, "amount": a["amount"]})
            self.wl.trace.append(f"deposit {txid[:12]} {a['amount']}")
        op.done = True

    def _op_payout(self, op: "Op") -> None:
        a = op.args
        acct, key = a["account"]
        status, body = self.w.api_call("POST", "/v1/payouts", key=key, idempotency_key=a["key"],
                                       body={"address": a["address"], "amount_sat": a["amount"],
                                             "priority": a["priority"]})
        if status >= 500:
            return
        if status == 202:
            if op.result is None:
                op.result = body["payout_id"]
                self.m.payouts.append({"account": acct, "key": key, "id": body["payout_id"], "address": a["address"],
                                       "script": a["script"], "amount": a["amount"]})
                if a["replay"]:
                    return
            else:
                self.wl.model.replays.append({"kind": "payout", "first": op.result, "again": body["payout_id"]})
        elif op.result is None:
            self.wl._refused("payout", status, body)
        else:
            self.wl.model.anomalies.append(f"payout replay {a['key']} answered {status} {body} after acceptance")
        op.done = True

    def _op_cancel_payout(self, op: "Op") -> None:
        p = op.args["payout"]
        owner_key = next(k for a, k in self.wl.accounts if a == p["account"])
        status, body = self.w.api_call("POST", f"/v1/payouts/{p['id']}/cancel", key=owner_key)
        if status >= 500:
            return
        self._count(f"cancel_{status}_{body.get('status') or _code(body)}")
        op.done = True

    def _op_signer(self, op: "Op") -> None:
        """The external signer (an operator's offline wallet): signs what awaits a signature and submits it through
        the API — at once, or later (after the workflow's signing timeout, sometimes): a late submit, and
        sometimes the signer's own node broadcasting the signed transaction itself."""
        late = [s for s in self.m.signatures.values() if not s["used"]]
        if late and self.rng.random() < 0.3:
            self._late(self.rng.choice(late))
            op.done = True
            return
        status, body = self.w.api_call("GET", "/v1/admin/payout-batches", key=ADMIN_KEY)
        if status >= 500:
            return
        awaiting = [b for b in body.get("items", []) if b.get("awaiting_signature")]
        if not awaiting:
            op.done = True
            return
        record = self._sign_batch(self.rng.choice(awaiting)["batch_id"])
        if record is not None and self.rng.random() < 0.7:
            self._submit(record)
        op.done = True

    def _submit(self, record: dict) -> int:
        status, body = self.w.api_call("POST", f"/v1/admin/payout-batches/{record['batch']}/psbt", key=ADMIN_KEY,
                                       body={"psbt": record["signed"]})
        if status < 500:
            record["used"] = True
            self._count(f"signature_submit_{status}_{_code(body) or 'ok'}")
        return status

    def _late(self, record: dict) -> None:
        """A signature kept past the moment it was asked for: submitted late through the API, and sometimes also
        broadcast by the signer's own node (satflow must then pay each payout once, whichever transaction wins)."""
        from satflow.domain.payouts import finalize_external

        self._count("late_signature")
        if self.rng.random() < 0.6:
            raw = finalize_external(record["unsigned"], record["signed"])
            try:
                self.w.chain.submit_raw_transaction(raw)
                self._count("late_broadcast_accepted")
            except Exception:  # conflicts with what satflow broadcast meanwhile, or already known
                self._count("late_broadcast_refused")
            self.wl.trace.append(f"late broadcast {record['txid'][:12]}")
        self._submit(record)

    def _op_bump(self, op: "Op") -> None:
        """The operator bumps the fee of a broadcast batch (PayoutFunction's admin_bump_fee, as the admin tooling
        invokes it). The chain refuses a replacement whose original confirmed meanwhile."""
        status, body = self.w.api_call("GET", "/v1/admin/payout-batches", key=ADMIN_KEY)
        if status >= 500:
            return
        broadcast = [b for b in body.get("items", []) if b.get("status") == "BROADCAST"]
        if not broadcast:
            op.done = True
            return
        self._bump(self.rng.choice(broadcast)["batch_id"], op.args["sat_per_vb"])
        op.done = True

    def _bump(self, batch_id: str, sat_per_vb: int) -> None:
        event = {"step": "admin_bump_fee", "batch_id": batch_id, "sat_per_vb": sat_per_vb}
        try:
            self.w.invoke("PayoutFunction", self.w.payout_fn, event)
            self._count("bump_accepted")
        except SimCrash:
            self._count("bump_crashed")
        except Exception as exc:  # FeeBumpRejected (by the plan or by the chain), or a transient error
            self._count(f"bump_refused_{type(exc).__name__}")

    # ------------------------------------------------------------------ the chain, as the world moves it
    def actions(self) -> list[tuple[float, str, Any]]:
        acts: list[tuple[float, str, Any]] = [(0.5, "mine", None), (0.1, "fees", None)]
        if self.m.deposits or self.m.payouts:
            acts.append((0.1, "reorg", None))
        return acts

    def do(self, kind: str) -> None:
        chain = self.w.chain
        if kind == "mine":
            n = self.rng.choice([1, 1, 1, 2, 3])
            self.wl.trace.append(f"mine {n}")
            chain.mine(n)
        elif kind == "fees":  # the fee market moves: coin selection (and a rebuilt batch's inputs) move with it
            normal = self.rng.choice([2, 5, 9, 14])
            self.wl.trace.append(f"fees {normal}")
            for target, factor in ((2, 1.6), (6, 1.0), (24, 0.5)):
                self.w.chain.set_fee_estimate(target, max(1, int(normal * factor)))
        elif kind == "reorg":
            depth = self.rng.choice([1, 1, 1, 2, 2, 3, 7])
            disconnected = {t for h in range(chain.height - depth + 1, chain.height + 1)
                            for t in chain.block_at(h).txids[1:]} | set(chain.mempool_txids())
            # The outside double-spends a deposit only while it never reached its credit depth (see module doc).
            droppable = sorted({d["txid"] for d in self.m.deposits if d["txid"] in disconnected
                                and self.m.max_depth.get(d["txid"], 0) < self._required(d)})
            drop = [t for t in droppable if self.rng.random() < 0.4 and not self._spent_by_us(t)]
            self.wl.trace.append(f"reorg {depth} drop {len(drop)}")
            chain.reorg(depth, drop_txids=drop)
            self._count("reorg")
            self.m.counts["deposits_dropped"] = self.m.counts.get("deposits_dropped", 0) + len(drop)
        self.note_depths()

    def _required(self, d: dict) -> int:
        return self.policy.required_confirmations(d["amount"])

    def _spent_by_us(self, txid: str) -> bool:
        """An output of it spent by a transaction of ours (payout batches spend only credited deposits: never
        expected; checked so the world stays possible)."""
        return any(key[0] == txid for key in self.w.chain._mempool_spends)

    # ------------------------------------------------------------------ quiescence
    def quiesce_round(self) -> None:
        """The signer answers slowly: per round it signs and submits an awaiting batch (40 %), signs and keeps it
        (35 %: the workflow's signing timeout may pass first, then the signature is late), or does nothing yet;
        kept signatures from earlier rounds are used (late submits, sometimes its own broadcast); the operator bumps
        some broadcast batches. Fee estimates settle back; a block is mined."""
        if not self.wl.onchain_share:  # no on-chain workload in this run
            return
        for record in [s for s in self.m.signatures.values() if not s["used"]]:
            self._late(record)
        status, body = self.w.api_call("GET", "/v1/admin/payout-batches", key=ADMIN_KEY)
        awaiting = [b for b in body.get("items", []) if b.get("awaiting_signature")] if status == 200 else []
        for b in body.get("items", []) if status == 200 else []:
            if b.get("status") == "BROADCAST" and self.rng.random() < 0.35:  # the operator bumps a slow batch
                self._bump(b["batch_id"], self.rng.choice([7, 12, 30]))
        for b in awaiting:
            r = self.rng.random()
            if r < 0.75:
                record = self._sign_batch(b["batch_id"])
                if record is not None and r < 0.4:
                    self._submit(record)
        for target, rate in FEE_ESTIMATES.items():
            self.w.chain.set_fee_estimate(target, rate)
        self.w.chain.mine(1)
        self.note_depths()

    def _sign_batch(self, batch_id: str) -> dict | None:
        """Export the PSBT awaiting a signature and sign it (kept by the signer: submitted now or later)."""
        from embit import bip32
        from embit.psbt import PSBT

        status, body = self.w.api_call("GET", f"/v1/admin/payout-batches/{batch_id}/psbt", key=ADMIN_KEY)
        if status != 200:
            return None
        psbt = PSBT.from_base64(body["psbt"])
        psbt.sign_with(bip32.HDKey.from_string(self.w.signer_key))
        txid = psbt.tx.txid().hex()
        return self.m.signatures.setdefault(txid, {"batch": batch_id, "unsigned": body["psbt"],
                                                   "signed": psbt.to_base64(), "used": False, "txid": txid})

    def settled(self) -> bool:
        if not self.wl.onchain_share:  # no on-chain workload in this run
            return True
        svc = self.w.svc
        return (not self.w.chain.mempool_txids() and not svc.payouts.open_payout_ids()
                and not svc.payouts.open_batch_ids()
                and all(d.status.value in ("CREDITED", "REVERSED") for d in svc.chain.watched_deposits()
                        if d.height is not None or d.status.value == "CREDITED"))

    def fingerprint(self) -> list:
        if not self.wl.onchain_share:  # no on-chain workload in this run
            return []
        svc = self.w.svc
        return [sorted(svc.payouts.open_payout_ids()), sorted(svc.payouts.open_batch_ids()),
                len(self.w.chain.mempool_txids())]

    def mix(self) -> dict[str, int]:
        runs = [e for e in self.w.executions.values() if e.machine == "payout"]
        return {"addresses": len(self.m.addresses), "deposits": len(self.m.deposits),
                "payouts_accepted": len(self.m.payouts), "payout_batches": len(runs),
                "batches_external": sum("AwaitSignature" in e.history for e in runs),
                "signing_timeouts": sum("Abandon" in e.history for e in runs),
                **dict(sorted(self.m.counts.items()))}

    # ------------------------------------------------------------------ the oracle
    def check(self, v: "Verdict", balance: dict[str, int]) -> None:
        """Deposits credited once at the production depth; payouts terminal, agreeing with the chain and paid once;
        the model's balances take both. Called before the oracle's balance check."""
        if not self.wl.onchain_share:  # no on-chain workload in this run
            return
        w, svc = self.w, self.w.svc
        confirmations = svc.payout_confirmations

        v.checks.append(f"payouts posted and deposits credited only at the production depth (payouts "
                        f"{confirmations}, deposits by policy {svc.deposit_policy})")
        for kind, ref, depth in self.posts:
            if kind == "payout" and depth < confirmations:
                v.anomalies.append(f"payout {ref} posted at depth {depth} < PayoutConfirmations {confirmations}")
            if kind == "deposit":
                d = next((x for x in self.m.deposits if f"{x['txid']}:{x['vout']}" == ref), None)
                need = self._required(d) if d else 0
                if depth < need:
                    v.anomalies.append(f"deposit {ref} credited at depth {depth} < its policy depth {need}")

        v.checks.append("payouts terminal, agreeing with the chain, none paid twice")
        fees_by_txid: dict[str, int] = {}
        for p in self.m.payouts:
            status, body = w.api_call("GET", f"/v1/payouts/{p['id']}", key=p["key"])
            final = body.get("status") if status == 200 else f"HTTP {status}"
            confirmed = sorted(t for t in self._paying(p) if self._depth(t) > 0)
            if len(confirmed) > 1:
                v.anomalies.append(f"payout {p['id']} ({p['amount']} sat to {p['address']}) paid {len(confirmed)} "
                                   f"times on the chain: {confirmed}")
            if final == "CONFIRMED":
                if body.get("txid") not in confirmed:
                    v.anomalies.append(f"payout {p['id']} CONFIRMED with txid {body.get('txid')} but the chain "
                                       f"pays it in {confirmed}")
                fee = int(body.get("fee_sat") or 0)
                if fee > int(body.get("fee_reserve_sat") or 0):
                    v.anomalies.append(f"payout {p['id']} charged fee {fee} above its reserve")
                fees_by_txid[body.get("txid")] = fees_by_txid.get(body.get("txid"), 0) + fee
                balance[p["account"]] -= (p["amount"] + fee) * 1000
            elif final == "CANCELED":
                if confirmed:
                    v.anomalies.append(f"payout {p['id']} CANCELED (refunded) but the chain paid it in {confirmed}")
            else:
                v.anomalies.append(f"payout {p['id']} still {final} after quiescence (chain: {confirmed})")
        for txid, fee in sorted(fees_by_txid.items()):
            block = w.chain.confirmed_block_of(txid)
            chain_fee = block.fees.get(txid) if block is not None else None
            if chain_fee is not None and chain_fee != fee:
                v.anomalies.append(f"payout transaction {txid}: fee shares charged {fee} sat, the chain's fee "
                                   f"{chain_fee} sat")

        v.checks.append("payout batches closed; no transaction of ours booked as a foreign spend")
        for bid in svc.payouts.open_batch_ids():
            b = svc.payouts.get_batch(bid)
            v.anomalies.append(f"payout batch {bid} still open ({b.status.value if b else 'missing'}) after "
                               f"quiescence")
        ours = {t for p in self.m.payouts for t in self._paying(p)} | set(self.m.signatures)
        for item in svc.solvency.suspense_items() if svc.solvency is not None else []:
            spender = (item.details or {}).get("spending_txid")
            if item.kind == "foreign_spend" and spender in ours:
                v.anomalies.append(f"FOREIGN SPEND booked for our own payout transaction {spender} (output "
                                   f"{item.reference}, {item.amount_msat} msat): an abandoned batch's transaction "
                                   f"spending an input handed over to its successor")

        v.checks.append("deposits: credited once iff on the chain at their depth, reorged-out credits reversed")
        by_outpoint: dict[str, dict] = {f"{d['txid']}:{d['vout']}": d for d in self.m.deposits}
        stored = svc.chain.deposits(list(by_outpoint))
        for outpoint, d in sorted(by_outpoint.items()):
            depth = self._depth(d["txid"])
            record = stored.get(outpoint)
            status = record.status.value if record is not None else None
            if depth >= self._required(d):
                balance[d["account"]] += d["amount"] * 1000
                if status != "CREDITED":
                    v.anomalies.append(f"deposit {outpoint} ({d['amount']} sat) has {depth} confirmations, "
                                       f"policy {self._required(d)}, but is {status}")
            elif depth > 0:
                v.anomalies.append(f"deposit {outpoint} still at depth {depth} after quiescence")
            elif status == "CREDITED":
                v.anomalies.append(f"deposit {outpoint} CREDITED but not on the chain (dropped by a reorg)")
        self._net_credits(v, by_outpoint)

    def _net_credits(self, v: "Verdict", deposits: dict[str, dict]) -> None:
        """Per outpoint, credits minus reversals in the ledger: 1 if the deposit is on the final chain, else 0."""
        from satflow.domain.ledger import TransferKind

        from .oracle import _ledger, _scan

        ledger = _ledger(self.w)
        net: dict[str, int] = {}
        for raw in _scan(self.w, "TRANSFER#"):
            t = ledger._transfer_from_raw(raw)
            outpoint = (t.metadata or {}).get("outpoint")
            if outpoint is None:
                continue
            if t.template == "deposit_seen" and t.kind is TransferKind.POST_PENDING:
                net[outpoint] = net.get(outpoint, 0) + 1
            elif t.template == "deposit_reversed":
                net[outpoint] = net.get(outpoint, 0) - 1
        for outpoint, d in sorted(deposits.items()):
            want = 1 if self._depth(d["txid"]) >= self._required(d) else 0
            if net.get(outpoint, 0) != want:
                v.anomalies.append(f"deposit {outpoint}: credited {net.get(outpoint, 0)} time(s) net, expected {want}")

    def check_events(self, v: "Verdict", events: list[dict]) -> None:
        """Events that do not come from a ledger transfer: ``payout.broadcast`` (only for a transaction the chain
        accepted, paying that payout — a fee bump's replacement only once it was accepted) and
        ``deposit.confirmed`` (only for a block that held the deposit)."""
        if not self.wl.onchain_share:  # no on-chain workload in this run
            return
        import json

        v.checks.append("payout.broadcast / deposit.confirmed events <-> what the chain accepted")
        payouts = {p["id"]: p for p in self.m.payouts}
        confirmed_events: set[str] = set()
        for e in events:
            data = json.loads(e.get("data_json", {}).get("S", "{}"))
            kind = e["event_type"]["S"]
            if kind == "payout.broadcast":
                txid, p = data.get("txid"), payouts.get(data.get("payout_id"))
                if txid not in self.w.accepted_txids:
                    v.anomalies.append(f"event payout.broadcast for {data.get('payout_id')} names {txid}, which the "
                                       f"chain never accepted")
                elif p is not None and txid not in self._paying(p):
                    v.anomalies.append(f"event payout.broadcast names {txid}, which does not pay {p['id']}")
            elif kind == "deposit.confirmed":
                block = self.w.chain.block_by_hash(data.get("block_hash", ""))
                if block is None or data.get("txid") not in block.txids:
                    v.anomalies.append(f"event deposit.confirmed for {data.get('outpoint')} names block "
                                       f"{data.get('block_hash')}, which never held it")
                confirmed_events.add(data.get("outpoint"))
        stored = self.w.svc.chain.deposits([f"{d['txid']}:{d['vout']}" for d in self.m.deposits])
        for outpoint, record in sorted(stored.items()):
            if record.status.value == "CREDITED" and outpoint not in confirmed_events:
                v.anomalies.append(f"deposit {outpoint} credited without a deposit.confirmed event")


def _code(body: dict) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    return err.get("code") if isinstance(err, dict) else err
