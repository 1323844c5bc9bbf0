"""The systemd user unit (``cobox service install``) and sd_notify readiness over a fake NOTIFY_SOCKET."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from cobox import service


def test_unit_runs_this_interpreter_as_a_notify_service(tmp_path: Path) -> None:
    path = service.install(tmp_path / "my home", directory=tmp_path / "units")
    text = path.read_text()
    assert path == tmp_path / "units" / "cobox.service" and path.stat().st_mode & 0o777 == 0o600
    assert f'ExecStart={sys.executable} -m cobox --home "{tmp_path}/my home" daemon' in text
    assert "Type=notify" in text and "NotifyAccess=main" in text
    assert f"TimeoutStopSec={service.TIMEOUT_STOP}" in text and service.TIMEOUT_STOP >= 60
    assert "network-online" not in text and "WantedBy=default.target" in text
    if not service.installed_in_site_packages(service.package_root()):  # a clone: the package on PYTHONPATH
        assert f"Environment=PYTHONPATH={service.package_root()}" in text


def test_unit_quotes_and_escapes_what_systemd_would_expand() -> None:
    text = service.unit_text("/opt/py 3/bin/python", Path("/h/100%"), pythonpath=None)
    assert 'ExecStart="/opt/py 3/bin/python" -m cobox --home /h/100%% daemon' in text
    assert "Environment=PYTHONPATH" not in text
    assert "--home" not in service.unit_text("/usr/bin/python3", None)


def test_unit_dir_follows_xdg_config_home() -> None:
    assert service.unit_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/systemd/user")
    assert service.unit_dir({"HOME": "/home/u"}) == Path("/home/u/.config/systemd/user")


def test_site_packages_detection() -> None:
    assert service.installed_in_site_packages(Path("/v/lib/site-packages").resolve(), ["/v/lib/site-packages"])
    assert not service.installed_in_site_packages(Path("/src/cobox"), ["/v/lib/site-packages", ""])


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    path = service.install(None, directory=tmp_path)
    if analyze is None:  # not every machine has systemd; the unit was still written and read above
        assert path.exists()
        return
    r = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if str(path) in line or "cobox.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def _listener(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + address[1:] if address.startswith("@") else address)
    s.settimeout(5)
    return s


def test_readiness_datagram_reaches_a_fake_notify_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with _listener(address) as s:
        assert service.notify("READY=1\nSTATUS=running", {"NOTIFY_SOCKET": address})
        assert s.recv(4096) == b"READY=1\nSTATUS=running"


def test_readiness_datagram_in_the_abstract_namespace(tmp_path: Path) -> None:
    address = f"@cobox-test-{tmp_path.name}"
    with _listener(address) as s:
        assert service.notify("STOPPING=1", {"NOTIFY_SOCKET": address})
        assert s.recv(4096) == b"STOPPING=1"


def test_no_notify_socket_or_a_dead_one_is_not_an_error(tmp_path: Path) -> None:
    assert not service.notify("READY=1", {})
    assert not service.notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    assert not service.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
