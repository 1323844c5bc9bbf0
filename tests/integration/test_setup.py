"""The README's two commands on a fresh machine: what `make run` / `make test` install (issue 18.1, 18.3).

`.ci/deps` is run with a PATH of shims (no chromium, a fake ``id`` and ``apt-get``) so that both
of its branches are played without root, without the network and without touching the machine.
The Makefile is checked with ``make -n`` (prints the recipe, runs nothing).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"


def _shim(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def _run_deps(tmp_path: Path, uid: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    shims = tmp_path / "bin"
    shims.mkdir()
    log = tmp_path / "apt.log"
    _shim(shims, "id", f"echo {uid}")
    _shim(shims, "apt-get", f'echo "$@" >> {log}')
    _shim(shims, "npm", "exit 0")  # axe-core: fetched with npm when build/ lacks it
    done = subprocess.run([BASH, str(ROOT / ".ci" / "deps")], env={"PATH": str(shims)},
                          capture_output=True, text=True, timeout=30)
    return done, log


def test_deps_installs_missing_chromium_as_root(tmp_path: Path) -> None:
    done, log = _run_deps(tmp_path, uid=0)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("update")
    assert calls[1].startswith("install") and "chromium" in calls[1].split()


def test_deps_not_root_says_how_to_install_and_fails(tmp_path: Path) -> None:
    done, log = _run_deps(tmp_path, uid=1000)
    assert done.returncode == 1
    assert "apt-get install" in done.stderr and "chromium" in done.stderr
    assert not log.exists()


def test_deps_does_nothing_when_chromium_is_there(tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    _shim(shims, "chromium", "exit 0")
    _shim(shims, "npm", "exit 0")
    _shim(shims, "apt-get", "exit 99")
    done = subprocess.run([BASH, str(ROOT / ".ci" / "deps")], env={"PATH": str(shims)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def _make_dry_run(target: str, tmp_path: Path) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is needed to check the Makefile (apt-get install make)")
    # A venv path that does not exist, so make prints every install step.
    done = subprocess.run([make, "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_installs_only_the_daemon(tmp_path: Path) -> None:
    recipe = _make_dry_run("run", tmp_path)
    installs = [line for line in recipe.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("[" not in line for line in installs), installs
    assert ".ci/deps" not in recipe


def test_make_test_adds_extras_and_system_deps(tmp_path: Path) -> None:
    recipe = _make_dry_run("test", tmp_path)
    assert "bash .ci/deps" in recipe
    assert any("pip install" in line and "[test,bench]" in line for line in recipe.splitlines())
    assert "pytest" in recipe


def test_ci_run_uses_make_test_from_a_fresh_venv() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "rm -rf .venv" in script and "make test" in script
