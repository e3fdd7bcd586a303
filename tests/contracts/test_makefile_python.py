"""The Makefile makes the venvs with the Lambda runtime's Python minor when the machine has it (on PATH, or under
~/.pyenv/versions where pyenv's shims refuse to run it), else python3 with a printed note."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _lambda_minor() -> str:
    return re.search(r"^LAMBDA_PYTHON := (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def _script(path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _make_python(home, path_dirs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS", "MFLAGS")}
    # make runs a plain recipe line without a shell, so echo comes from /bin; the test's own directories come first
    env.update(HOME=str(home), PATH=os.pathsep.join([*map(str, path_dirs), "/bin"]))
    return subprocess.run([shutil.which("make"), "-s", "-C", str(ROOT), "print-python"], env=env, text=True,
                          capture_output=True, check=True)


def test_prefers_the_runtime_minor_under_pyenv_over_a_refusing_shim(tmp_path):
    minor = _lambda_minor()
    shim = tmp_path / "shims" / f"python{minor}"
    _script(shim, "echo 'pyenv: command not found' >&2; exit 127")  # what pyenv's shim does for a non-global version
    real = tmp_path / "home" / ".pyenv" / "versions" / f"{minor}.9" / "bin" / f"python{minor}"
    _script(real, f'exec "{sys.executable}" "$@"')
    out = _make_python(tmp_path / "home", [shim.parent])
    assert out.stdout.strip() == str(real)
    assert "note:" not in out.stdout + out.stderr


def test_a_working_interpreter_on_path_wins(tmp_path):
    minor = _lambda_minor()
    onpath = tmp_path / "bin" / f"python{minor}"
    _script(onpath, f'exec "{sys.executable}" "$@"')
    assert _make_python(tmp_path / "home", [onpath.parent]).stdout.strip() == str(onpath)


def test_falls_back_to_python3_with_a_note(tmp_path):
    fake3 = tmp_path / "bin" / "python3"
    _script(fake3, f'exec "{sys.executable}" "$@"')
    _script(tmp_path / "bin" / f"python{_lambda_minor()}", "exit 127")  # hides one this machine may have in /bin
    out = _make_python(tmp_path / "home", [fake3.parent])
    assert out.stdout.strip().splitlines()[-1] == "python3"
    assert f"python{_lambda_minor()} (the Lambda runtime) not found" in out.stdout + out.stderr
