"""Build (once) and locate the real components: lnd, lncli, btcd, btcctl from the Go module proxy; DynamoDB Local
from Maven Central.

* Go: ``infra/regtest/gobuild`` is a wrapper module that requires lnd at a pinned release and copies lnd's
  ``replace`` directives (``go install lnd@version`` refuses modules with replaces). btcd is the version lnd's
  go.mod selects, so the node and the chain backend are the pair lnd's own tests use.
* Maven: ``infra/regtest/dynamodb-local/pom.xml``; ``dependency:copy-dependencies`` puts the jars and
  sqlite4java's native library in ``.build/dynamodb-local/lib``.

Outputs live under ``.build/`` (ignored) and are reused while their stamp matches: the stamp is a hash of
everything that decides the output (go.mod, go.sum, tags, flags, Go version / the pom). Nothing built is committed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GO_MODULE_DIR = REPO / "infra" / "regtest" / "gobuild"
DYNAMODB_POM = REPO / "infra" / "regtest" / "dynamodb-local" / "pom.xml"
BUILD_DIR = Path(os.environ.get("SATFLOW_BUILD_DIR", REPO / ".build"))
BIN_DIR = BUILD_DIR / "regtest" / "bin"
DYNAMODB_DIR = BUILD_DIR / "dynamodb-local"
DYNAMODB_LIB = DYNAMODB_DIR / "lib"
STAMP = ".stamp"

# The sub-servers our adapter calls: invoicesrpc (/v2/invoices/cancel), routerrpc (/v2/router/*; built in
# anyway), walletrpc, signrpc, chainrpc (lnd's own tools and tests use them); peersrpc for completeness.
LND_TAGS = ("signrpc", "walletrpc", "chainrpc", "invoicesrpc", "routerrpc", "peersrpc")
LND_VERSION = "v0.19.3-beta"  # keep in step with infra/regtest/gobuild/go.mod
GO_PACKAGES = {
    "lnd": "github.com/lightningnetwork/lnd/cmd/lnd",
    "lncli": "github.com/lightningnetwork/lnd/cmd/lncli",
    "btcd": "github.com/btcsuite/btcd",
    "btcctl": "github.com/btcsuite/btcd/cmd/btcctl",
}
LDFLAGS = f"-s -w -X github.com/lightningnetwork/lnd/build.Commit={LND_VERSION}"
GO_TOOLCHAIN = "go1.23.12"  # lnd v0.19.3's go directive; fetched from the module proxy when `go` is older than 1.21
SQLITE4JAVA_NATIVE = "libsqlite4java-linux-amd64"
DYNAMODB_MAIN = "software.amazon.dynamodb.services.local.main.ServerRunner"


class ToolchainMissing(RuntimeError):
    """A build tool (go, java, mvn) is not installed: the real-node tier cannot be built here."""


@dataclass(frozen=True)
class BuildReport:
    what: str
    cached: bool
    seconds: float
    output: Path


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolchainMissing(f"{tool} is not on PATH (the real-node tier needs go, java 17+ and mvn)")
    return path


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _stamp_matches(directory: Path, key: str, outputs: list[Path]) -> bool:
    stamp = directory / STAMP
    return stamp.is_file() and stamp.read_text().strip() == key and all(p.is_file() for p in outputs)


# --- Go: lnd, lncli, btcd, btcctl ---------------------------------------------------------------------------------
def _go_version(go: str) -> tuple[int, ...]:
    text = _run([go, "env", "GOVERSION"], cwd=REPO).strip()  # "go1.19.8", "go1.26.8"
    return tuple(int(part) for part in text.removeprefix("go").split(".")[:2] if part.isdigit())


def go_command() -> str:
    """A go that can build lnd v0.19.3 (needs 1.23).

    Go 1.21+ switches toolchains by itself (the go.mod's ``go`` line; the toolchain comes from the module proxy).
    An older go (Debian bookworm has 1.19) cannot, so we fetch the same toolchain module it would have fetched,
    ``golang.org/toolchain@v0.0.1-<version>.<os>-<arch>``, into .build/go once and build with that.
    """
    go = _require("go")
    if os.environ.get("SATFLOW_GO_BOOTSTRAP") != "1" and _go_version(go) >= (1, 21):
        return go
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    root = BUILD_DIR / "go" / GO_TOOLCHAIN
    if not (root / "bin" / "go").is_file():
        module = f"golang.org/toolchain@v0.0.1-{GO_TOOLCHAIN}.linux-{arch}"
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        info = json.loads(_run([go, "mod", "download", "-json", module], cwd=BUILD_DIR,
                               env={"GO111MODULE": "on", "GOFLAGS": "-mod=mod"}))
        staging = Path(tempfile.mkdtemp(prefix="go.", dir=BUILD_DIR))
        shutil.copytree(info["Dir"], staging / "root", symlinks=True)
        for path in (staging / "root").rglob("*"):  # the module cache is read-only and drops exec bits
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
            if path.parent.name in ("bin", f"linux_{arch}") or path.is_dir():
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        root.parent.mkdir(parents=True, exist_ok=True)
        (staging / "root").rename(root)
        shutil.rmtree(staging, ignore_errors=True)
    return str(root / "bin" / "go")


def _go_env(go: str) -> dict[str, str]:
    env = {"GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}  # -mod=mod: go.sum is committed; GOPROXY: Go's default
    if go.startswith(str(BUILD_DIR)):
        env["GOTOOLCHAIN"] = "local"
    return env


def go_cache_key() -> str:
    go = go_command()
    go_version = _run([go, "env", "GOVERSION"], cwd=GO_MODULE_DIR, env=_go_env(go)).strip()
    return _digest((GO_MODULE_DIR / "go.mod").read_bytes(), (GO_MODULE_DIR / "go.sum").read_bytes(),
                   " ".join(LND_TAGS), LDFLAGS, go_version, " ".join(sorted(GO_PACKAGES.items()).__repr__()))


def node_binary(name: str) -> Path:
    return BIN_DIR / name


def nodes_built() -> bool:
    """True when the binaries exist (whatever built them); the stamp check is for build_nodes."""
    return all(node_binary(name).is_file() for name in GO_PACKAGES)


def build_nodes(*, force: bool = False) -> BuildReport:
    """lnd, lncli, btcd, btcctl into .build/regtest/bin, unless the stamp says they are current."""
    started = time.monotonic()
    key = go_cache_key()
    outputs = [node_binary(name) for name in GO_PACKAGES]
    if not force and _stamp_matches(BIN_DIR, key, outputs):
        return BuildReport("lnd+btcd", True, time.monotonic() - started, BIN_DIR)
    BIN_DIR.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="bin.", dir=BIN_DIR.parent))
    try:
        go = go_command()
        _run([go, "build", "-trimpath", "-tags", " ".join(LND_TAGS), "-ldflags", LDFLAGS,
              "-o", str(staging) + os.sep, *GO_PACKAGES.values()], cwd=GO_MODULE_DIR, env=_go_env(go))
        (staging / STAMP).write_text(key + "\n")
        if BIN_DIR.exists():
            shutil.rmtree(BIN_DIR)
        staging.rename(BIN_DIR)  # all four binaries appear together, with their stamp
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return BuildReport("lnd+btcd", False, time.monotonic() - started, BIN_DIR)


# --- Maven: DynamoDB Local ---------------------------------------------------------------------------------------
def dynamodb_local_built() -> bool:
    return (DYNAMODB_LIB / f"{SQLITE4JAVA_NATIVE}.so").is_file() and any(DYNAMODB_LIB.glob("DynamoDBLocal-*.jar"))


def build_dynamodb_local(*, force: bool = False) -> BuildReport:
    started = time.monotonic()
    key = _digest(DYNAMODB_POM.read_bytes())
    native = DYNAMODB_LIB / f"{SQLITE4JAVA_NATIVE}.so"
    if not force and _stamp_matches(DYNAMODB_DIR, key, [native]):
        return BuildReport("DynamoDB Local", True, time.monotonic() - started, DYNAMODB_DIR)
    _require("java")
    if DYNAMODB_DIR.exists():
        shutil.rmtree(DYNAMODB_DIR)
    _run([_require("mvn"), "-q", "-B", "-f", str(DYNAMODB_POM), "dependency:copy-dependencies",
          f"-DoutputDirectory={DYNAMODB_LIB}", "-DincludeScope=runtime"], cwd=REPO)
    versioned = sorted(DYNAMODB_LIB.glob(f"{SQLITE4JAVA_NATIVE}-*.so"))
    if not versioned:
        raise RuntimeError(f"Maven did not fetch {SQLITE4JAVA_NATIVE}")
    shutil.copyfile(versioned[-1], native)  # sqlite4java looks for the unversioned name on java.library.path
    (DYNAMODB_DIR / STAMP).write_text(key + "\n")
    return BuildReport("DynamoDB Local", False, time.monotonic() - started, DYNAMODB_DIR)


def build_all(*, force: bool = False) -> list[BuildReport]:
    return [build_nodes(force=force), build_dynamodb_local(force=force)]
