"""One lnd process on regtest with btcd as its chain backend, REST on a free loopback port.

The harness talks to lnd over the same REST gateway as our adapter (no lncli, no gRPC stubs): TLS trusting
exactly the node's ``tls.cert``, the admin macaroon read from the data directory.
"""
from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from .btcd import BtcdNode
from .processes import LOOPBACK, ManagedProcess, NotReady, free_port
from .toolchain import node_binary


class LndNode:
    def __init__(self, name: str, base_dir: Path, btcd: BtcdNode) -> None:
        self.name = name
        self.dir = base_dir / name
        self.btcd = btcd
        self.p2p_port, self.grpc_port, self.rest_port = free_port(), free_port(), free_port()
        self.tls_cert_path = self.dir / "tls.cert"
        self.macaroon_path = self.dir / "data" / "chain" / "bitcoin" / "regtest" / "admin.macaroon"
        self.process = ManagedProcess(
            f"lnd[{name}]",
            [
                str(node_binary("lnd")), f"--lnddir={self.dir}", f"--configfile={self.dir / 'lnd.conf'}",
                "--noseedbackup", "--bitcoin.regtest", "--bitcoin.node=btcd",
                f"--btcd.rpchost={LOOPBACK}:{btcd.rpc_port}", f"--btcd.rpcuser={btcd.rpc_user}",
                f"--btcd.rpcpass={btcd.rpc_password}", f"--btcd.rpccert={btcd.cert_path}",
                f"--listen={LOOPBACK}:{self.p2p_port}", f"--rpclisten={LOOPBACK}:{self.grpc_port}",
                f"--restlisten={LOOPBACK}:{self.rest_port}", f"--alias=satflow-{name}",
                "--tlsextraip=127.0.0.1", "--nobootstrap", "--debuglevel=info",
                # Test speed: gossip every 50 ms, reconnect quickly, channels usable after 1 confirmation.
                "--trickledelay=50", "--minbackoff=1s", "--maxbackoff=2s", "--bitcoin.defaultchanconfs=1",
                "--maxpendingchannels=10",
            ],
            self.dir / "lnd.stdout.log",
        )
        self.pubkey = ""
        self._http: Any = None

    @property
    def rest_url(self) -> str:
        return f"https://{LOOPBACK}:{self.rest_port}"

    @property
    def p2p_host(self) -> str:
        return f"{LOOPBACK}:{self.p2p_port}"

    def macaroon_hex(self) -> str:
        return self.macaroon_path.read_bytes().hex()

    def secret(self) -> dict[str, Any]:
        """What LndRestClient.from_secret takes: the same shape as the deployed Secrets Manager value."""
        return {"url": self.rest_url, "macaroon_hex": self.macaroon_hex(),
                "tls_cert_pem": self.tls_cert_path.read_text()}

    def client(self, **kwargs: Any) -> Any:
        from satflow.adapters.lnd import LndRestClient

        return LndRestClient.from_secret(self.secret(), **kwargs)

    # --- raw REST for the harness -------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(
                base_url=self.rest_url, timeout=60.0,
                verify=ssl.create_default_context(cafile=str(self.tls_cert_path)),
                headers={"Grpc-Metadata-macaroon": self.macaroon_hex()},
            )
        return self._http

    def rest(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        response = self._client().request(method, path, json=body, params=params or None)
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} {method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return dict(response.json())

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> "LndNode":
        self.launch()
        self.wait_started(timeout_s)
        return self

    def launch(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lnd.conf").write_text("")  # never read ~/.lnd/lnd.conf
        self.process.start()

    def wait_started(self, timeout_s: float = 120.0) -> None:
        def probe() -> dict[str, Any]:
            if not self.macaroon_path.exists() or not self.tls_cert_path.exists():
                raise NotReady("no macaroon/tls.cert yet")
            try:
                return self.rest("GET", "/v1/getinfo")
            except RuntimeError as exc:  # "the RPC server is in the process of starting up"
                raise NotReady(str(exc)) from exc

        info = self.process.wait_ready(probe, timeout_s=timeout_s, what="REST getinfo")
        self.pubkey = str(info["identity_pubkey"])

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self.process.stop()

    def wait_synced(self, height: int, timeout_s: float = 60.0) -> dict[str, Any]:
        def probe() -> dict[str, Any]:
            info = self.rest("GET", "/v1/getinfo")
            if not info.get("synced_to_chain") or int(info.get("block_height") or 0) < height:
                raise NotReady(f"at {info.get('block_height')}, synced={info.get('synced_to_chain')}")
            return info

        return self.process.wait_ready(probe, timeout_s=timeout_s, what=f"synced to height {height}")

    # --- wallet and channels -------------------------------------------------------------------------------------
    def new_address(self) -> str:
        return str(self.rest("GET", "/v1/newaddress", type="WITNESS_PUBKEY_HASH")["address"])

    def confirmed_balance_sat(self) -> int:
        return int(self.rest("GET", "/v1/balance/blockchain").get("confirmed_balance") or 0)

    def connect(self, other: "LndNode") -> None:
        response = self._client().post("/v1/peers", json={"addr": {"pubkey": other.pubkey, "host": other.p2p_host},
                                                          "perm": False, "timeout": "30"})
        if "in the process of starting" in response.text:  # getinfo answers before the peer server is up
            raise NotReady(response.text[:200])
        if response.status_code != 200 and "already connected" not in response.text:
            raise RuntimeError(f"{self.name} connect {other.name}: {response.status_code} {response.text[:300]}")

    def open_channel(self, other: "LndNode", local_sat: int, push_sat: int = 0) -> str:
        """OpenChannelSync; returns the funding txid (display hex). The caller mines the confirmations."""
        point = self.rest("POST", "/v1/channels", {
            "node_pubkey": base64.b64encode(bytes.fromhex(other.pubkey)).decode(),
            "local_funding_amount": str(local_sat), "push_sat": str(push_sat), "sat_per_vbyte": "2",
            "private": False,
        })
        return base64.b64decode(point["funding_txid_bytes"])[::-1].hex()

    def active_channels(self) -> list[dict[str, Any]]:
        return [c for c in self.rest("GET", "/v1/channels").get("channels", []) if c.get("active")]
