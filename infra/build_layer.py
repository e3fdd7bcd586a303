#!/usr/bin/env python3
"""Build the satflow Lambda layer without Docker, by pip platform targeting.

    python infra/build_layer.py --arch arm64 --out .build/layer [--zip]

Result: OUT/python/<deps...> and OUT/python/satflow (the layout Lambda expects under /opt/python),
optionally OUT.zip.

How:
  1. `pip install --no-deps --only-binary=:all: --platform manylinux2014_<arch> --implementation cp
     --python-version <the template's runtime> --target OUT/python -r layers/satflow/requirements.txt`.
     --no-deps because pynamodb / aws-xray-sdk depend on botocore, which the Lambda runtime already provides;
     requirements.txt is therefore the complete, pinned closure (step 4 checks that it is).
     A requirement published only as an sdist (embit) is built into a wheel on this machine first and used
     only if that wheel is pure (py3-none-any); anything else fails the build.
  2. Copy layers/satflow/satflow into OUT/python/satflow (without __pycache__).
  3. Remove prebuilt native libraries for other platforms (embit ships libsecp256k1 for seven) and
     the console scripts pip put in OUT/python/bin.
  4. Verify: boto3/botocore/s3transfer are absent, and every installed distribution's requirements
     (markers evaluated for Linux/<arch>/CPython of the template's runtime) are installed or provided by the Lambda runtime.
  5. Print size (MB) and file count; --zip writes OUT.zip next to OUT.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYER_SRC = REPO / "layers" / "satflow"
REQUIREMENTS = LAYER_SRC / "requirements.txt"
PACKAGE = LAYER_SRC / "satflow"



def _template_runtime_version() -> str:
    """The Python minor of template.yaml's Globals.Function.Runtime ("python3.12" -> "3.12"): one place to change."""
    text = (REPO / "template.yaml").read_text()
    found = re.search(r"^Globals:\n(?:[ #].*\n|\n)*?\s+Runtime:\s*python(\d+\.\d+)\s*$", text, re.M)
    if found is None:
        sys.exit("error: template.yaml has no Globals.Function.Runtime pythonX.Y")
    return found.group(1)


PY_VERSION = _template_runtime_version()
ARCHES = {  # --arch value -> (pip platform tag, platform.machine() on Lambda)
    "arm64": ("manylinux2014_aarch64", "aarch64"),
    "aarch64": ("manylinux2014_aarch64", "aarch64"),
    "x86_64": ("manylinux2014_x86_64", "x86_64"),
    "amd64": ("manylinux2014_x86_64", "x86_64"),
}
# Shipped by the Lambda Python runtime; must never be in the layer (a second botocore would shadow the
# runtime's and mismatch its boto3).
FORBIDDEN = {"boto3", "botocore", "s3transfer"}
# Provided by the runtime as botocore's dependencies; a requirement on them is satisfied there.
RUNTIME_PROVIDED = FORBIDDEN | {"jmespath", "urllib3", "python-dateutil", "six"}

_NO_DIST = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, text=True, capture_output=capture, check=False)


def _build_pure_wheel(name: str, version: str, wheelhouse: Path) -> None:
    """Build an sdist-only requirement into a wheel; accept it only if it is pure Python."""
    print(f"  {name}=={version} has no wheel on the index: building it locally", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = _pip("wheel", "-q", "--no-deps", "--no-binary", name, "-w", tmp, f"{name}=={version}", capture=True)
        if res.returncode != 0:
            sys.exit(f"error: could not build {name}=={version}:\n{res.stdout}{res.stderr}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1 or not wheels[0].name.endswith("-none-any.whl"):
            sys.exit(f"error: {name}=={version} is not pure Python ({[w.name for w in wheels]}); "
                     "it cannot be cross-built without Docker")
        shutil.copy2(wheels[0], wheelhouse / wheels[0].name)


def install_requirements(target: Path, platform_tag: str) -> None:
    with tempfile.TemporaryDirectory() as wheelhouse_dir:
        wheelhouse = Path(wheelhouse_dir)
        built: set[str] = set()
        while True:
            res = _pip(
                "install", "-q", "--no-deps", "--no-compile",
                "--platform", platform_tag, "--implementation", "cp", "--python-version", PY_VERSION,
                "--only-binary=:all:", "--find-links", str(wheelhouse),
                "--target", str(target), "--upgrade",
                "-r", str(REQUIREMENTS),
                capture=True,
            )
            if res.returncode == 0:
                return
            out = res.stdout + res.stderr
            m = _NO_DIST.search(out)
            if not m or _norm(m.group(1)) in built:
                sys.exit(f"error: pip install failed:\n{out}")
            built.add(_norm(m.group(1)))
            _build_pure_wheel(m.group(1), m.group(2), wheelhouse)


def copy_package(target: Path) -> None:
    dest = target / "satflow"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def prune_foreign_native_libs(target: Path, machine: str) -> int:
    """embit bundles libsecp256k1 for darwin/windows/arm; keep only linux_<machine>. Drop console scripts."""
    removed = 0
    if (target / "bin").is_dir():  # httpx/click entry points: meaningless under /opt/python
        shutil.rmtree(target / "bin")
    prebuilt = target / "embit" / "util" / "prebuilt"
    if prebuilt.is_dir():
        for lib in prebuilt.iterdir():
            if lib.is_file() and not lib.name.startswith(f"libsecp256k1_linux_{machine}."):
                lib.unlink()
                removed += 1
    return removed


def verify(target: Path, machine: str) -> None:
    problems: list[str] = []
    present = {_norm(p.name.split(".")[0]) for p in target.iterdir()}
    dists = {_norm(d.metadata["Name"]): d for d in md.distributions(path=[str(target)])}
    for name in sorted(FORBIDDEN):
        if name in present or name in dists:
            problems.append(f"{name} is in the layer (the Lambda runtime provides it)")

    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - pip always vendors packaging
        from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    env = default_environment()
    env.update(
        python_version=PY_VERSION, python_full_version=f"{PY_VERSION}.0", implementation_name="cpython",
        platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
        os_name="posix", platform_machine=machine, extra="",
    )
    for dname, dist in sorted(dists.items()):
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = _norm(req.name)
            if dep in dists or dep in RUNTIME_PROVIDED:
                continue
            problems.append(f"{dname} requires {raw!s} which is neither in requirements.txt nor in the runtime")
    if problems:
        sys.exit("error: layer verification failed:\n  " + "\n  ".join(problems))


def measure(root: Path) -> tuple[int, int]:
    size = files = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            size += (Path(dirpath) / n).stat().st_size
            files += 1
    return size, files


def write_zip(out: Path) -> Path:
    zpath = out.with_suffix(".zip") if out.suffix == "" else out.parent / (out.name + ".zip")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted((out / "python").rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(out).as_posix())
    return zpath


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="arm64", choices=sorted(ARCHES), help="target architecture (default arm64)")
    ap.add_argument("--out", default=str(REPO / ".build" / "layer"), help="output directory (recreated)")
    ap.add_argument("--zip", action="store_true", help="also write OUT.zip")
    args = ap.parse_args(argv)

    platform_tag, machine = ARCHES[args.arch]
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    target = out / "python"
    target.mkdir(parents=True)

    print(f"building satflow layer for {machine} (Python {PY_VERSION}, {platform_tag}) into {out}", flush=True)
    install_requirements(target, platform_tag)
    copy_package(target)
    pruned = prune_foreign_native_libs(target, machine)
    verify(target, machine)

    size, files = measure(out)
    print(f"layer: {size / 1_000_000:.1f} MB unzipped, {files} files"
          + (f" ({pruned} foreign native libs pruned)" if pruned else ""))
    if args.zip:
        zpath = write_zip(out)
        print(f"zip:   {zpath} ({zpath.stat().st_size / 1_000_000:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
