"""What each ``cobox`` command does (parsing is in :mod:`cobox.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import config as configuration
from .control.client import Client
from .errors import CoboxError, DaemonNotRunningError, UsageError
from .paths import Home, write_private


async def run(args: argparse.Namespace, home: Home) -> int:
    cmd = args.command
    if cmd == "daemon":
        while True:  # a key restore restarts the daemon under the recovered identity
            rc, restart = await daemon(args, home)
            if not restart:
                return rc
    if cmd == "start":
        return await start(home)
    if cmd == "demo":
        from .demo import demo

        return await demo()
    async with Client(home) as api:
        if cmd == "stop":
            return await stop(api, home)
        if cmd == "status":
            return show_status(await api.get("/v1/status"), args.json)
        if cmd == "group":
            return await group(api, args)
        if cmd == "log":
            return await log_command(api, args)
        if cmd == "peers":
            if args.action == "add":
                peer = await api.post("/v1/peers", {"address": args.address})
                print(f"connected to {peer['peer_id']}")
                return 0
            return show_peers(await api.get("/v1/peers"), args.json)
        if cmd == "sync":
            return await sync_wait(api, args.group, args.timeout)
        if cmd == "seed":
            return await seed(api, args)
        if cmd == "backup":
            return await backup_status(api, args.group, args.json)
        if cmd == "keys":
            return await keys(api, args)
        if cmd == "folder":
            return await folder(api, args)
        if cmd == "open":
            return await open_dashboard(api, home, args.no_browser)
    raise UsageError(f"unknown command {cmd}")


# -- the daemon -----------------------------------------------------------------------------------


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..."``: one structured line per event."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg={json.dumps(record.getMessage())}'
        if record.exc_info:
            line += f" error={json.dumps(self.formatException(record.exc_info))}"
        return line


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kademlia").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    o: dict[str, dict[str, Any]] = {}
    if args.listen:
        o.setdefault("network", {})["listen"] = args.listen
    if args.dht_port is not None:
        o.setdefault("dht", {})["port"] = args.dht_port
    if args.dht_host is not None:
        o.setdefault("dht", {})["host"] = args.dht_host
    if args.bootstrap:
        o.setdefault("dht", {})["bootstrap"] = args.bootstrap
    if args.no_lan:
        o.setdefault("lan", {})["enabled"] = False
    if args.no_dht:
        o.setdefault("dht", {})["enabled"] = False
    if args.api_port is not None:
        o.setdefault("api", {})["port"] = args.api_port
    return o


async def daemon(args: argparse.Namespace, home: Home) -> tuple[int, bool]:
    from .daemon import Daemon

    home.ensure()
    config = configuration.load(home.root, overrides=flag_overrides(args))
    setup_logging(config["log"]["level"])
    d = Daemon(home.root, config)
    ready = asyncio.Event()
    task = asyncio.create_task(d.run(ready=ready))
    done, _ = await asyncio.wait({task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises why it could not start
        return 1, False
    print(f"cobox: daemon {d.identity.peer_id.hex()[:16]} running; home {home.root}", flush=True)
    for address in d.listen_addresses:
        print(f"cobox: listening on {address}", flush=True)
    if d.dht is not None:
        print(f"cobox: DHT node on udp {d.dht.host}:{d.dht.port}", flush=True)
    await task
    if d.restart_requested:
        print("cobox: restarting with the recovered keys", flush=True)
    return 0, d.restart_requested


def daemon_running(home: Home) -> bool:
    if not home.lock.exists():
        return False
    fd = os.open(home.lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


async def start(home: Home, timeout: float = 30.0) -> int:
    if daemon_running(home):
        print(f"cobox: a daemon is already running for {home.root}")
        return 0
    home.ensure()
    configuration.load(home.root)  # a broken config fails here, with its message, not in the background
    fd = os.open(home.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    logfile = os.fdopen(fd, "ab")  # handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "cobox.cli", "--home", str(home.root), "daemon"],
                            stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True)
    logfile.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = home.log.read_text(errors="replace").strip().splitlines()[-1:]
            raise CoboxError(f"the daemon exited at start: {tail[0] if tail else 'see ' + str(home.log)}")
        try:
            async with Client(home, timeout=2) as api:
                status = await api.get("/v1/status")
            print(f"cobox: daemon started (pid {proc.pid}), peer id {status['peer_id'][:16]}; log in {home.log}")
            return 0
        except DaemonNotRunningError:
            await asyncio.sleep(0.1)
    raise CoboxError(f"the daemon did not answer within {timeout:.0f}s; see {home.log}")


async def stop(api: Client, home: Home, timeout: float = 30.0) -> int:
    await api.post("/v1/stop")
    deadline = time.monotonic() + timeout
    while daemon_running(home):
        if time.monotonic() > deadline:
            raise CoboxError("the daemon did not stop in time")
        await asyncio.sleep(0.05)
    print("cobox: daemon stopped")
    return 0


# -- listings -------------------------------------------------------------------------------------


def show_status(s: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"device     {s['peer_id']}")
    print(f"home       {s['home']}   (pid {s['pid']}, up {s['uptime']:.0f}s)")
    for a in s["advertised"]:
        print(f"address    {a}")
    dht = s["dht"]
    print(f"dht        {'off' if not dht.get('enabled', True) else json.dumps(dht)}")
    print(f"lan        {'on' if s['lan']['enabled'] else 'off'}")
    print(f"traffic    {s['bytes_sent']} bytes out, {s['bytes_received']} bytes in")
    print(f"groups     {len(s['groups'])}")
    for g in s["groups"]:
        print_group(g, indent="  ")
    print(f"peers      {len(s['peers'])}")
    for p in s["peers"]:
        print(f"  {p['peer_id'][:16]}  {p.get('kind') or '?'}  {p['address']}  groups: {', '.join(p['groups']) or '-'}")
    relay = s.get("relay") or {}
    if relay.get("offering"):
        o = relay["offering"]
        print(f"relay      offering: {o['reservations']} reservations, {o['circuits']} circuits open, "
              f"{o['circuits_total']} so far, {o['bytes_forwarded']} bytes forwarded")
    for r in relay.get("reservations", []):
        print(f"relay      reachable through {r['relay']}")
    return 0


def print_group(g: dict[str, Any], indent: str = "") -> None:
    sync = g["sync"]
    state = "in sync" if sync["synced"] else f"{sync['missing']} entries missing" if sync["peers"] else "no peers"
    print(f"{indent}{g['name']}  ({g['role']}, {len(g['feeds'])} feeds, {sync['peers']} peers, {state})")
    for f in g["feeds"]:
        mark = " (this device)" if f["own"] else ""
        print(f"{indent}  feed {f['key'][:16]}  length {f['length']}  held {f['have']}{mark}")
    for r in g.get("receipts", []):
        a = r["audit"]
        audit = ("not audited yet" if a is None else f"audit passed at {_when(a['time'])} ({a['samples']} samples)"
                 if a["passed"] else f"audit failed ({a['reason']}) at {_when(a['time'])}")
        print(f"{indent}  backup peer {r['peer'][:16]}  {'backed up' if r['backed_up'] else 'not backed up'}, {audit}")
    for dev, d in g.get("devices", {}).items():
        if d.get("records_refused") or d.get("feeds_refused"):
            print(f"{indent}  device {dev[:16]}: {d.get('records_refused', 0)} records refused "
                  f"(last: {d.get('last_refused_reason', '')}), {d.get('feeds_refused', 0)} feeds refused")
    for f in g.get("folders", []):
        print(f"{indent}  folder {f['path']}: {f['status']}")
        if f.get("last_error") and not f.get("error"):
            print(f"{indent}    last error (recovered): {f['last_error']}")


def show_list(items: list[dict[str, Any]], as_json: bool, empty: str, show: Any) -> int:
    """A listing: JSON with --json, else one ``show(item)`` per item (or ``empty``)."""
    if as_json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print(empty)
    for item in items:
        show(item)
    return 0


def show_peers(peers: list[dict[str, Any]], as_json: bool) -> int:
    return show_list(peers, as_json, "no peers connected", lambda p: print(
        f"{p['peer_id']}  {p.get('kind') or '?'}  {p['address']}  groups: {', '.join(p['groups']) or '-'}  "
        f"{p['bytes_sent']} out / {p['bytes_received']} in"))


async def group(api: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        g = await api.post("/v1/groups", {"name": args.name})
        print(g["invite"])
    elif args.action == "join":
        body = {"uri": read_uri(args.uri)}
        if args.name:
            body["name"] = args.name
        g = await api.post("/v1/groups/join", body)
        print(f"joined {g['name']} ({g['role']})")
    elif args.action == "list":
        show_list(await api.get("/v1/groups"), args.json, "no groups", print_group)
    elif args.action == "invite":
        print((await api.get(f"/v1/groups/{_q(args.name)}/invite", **({"seed": "1"} if args.seed else {})))["uri"])
    elif args.action == "leave":
        await api.delete(f"/v1/groups/{_q(args.name)}")
        print(f"left {args.name}")
    return 0


async def log_command(api: Client, args: argparse.Namespace) -> int:
    path = f"/v1/groups/{_q(args.group)}/log"
    if args.action == "append":
        text = sys.stdin.read() if args.text == "-" else args.text
        r = await api.post(path, {"text": text})
        print(f"appended entry {r['seq']}")
        return 0
    if args.follow:
        async for entry in api.stream(path, follow="1"):
            print_entry(entry, args.json)
        return 0
    for entry in await api.get(path):
        print_entry(entry, args.json)
    return 0


def print_entry(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(e), flush=True)
        return
    if e.get("refused"):
        print(f"{'(refused)':19}  {e['author'][:8]}  entry {e['seq']} refused: {e['refused']}", flush=True)
        return
    when = datetime.datetime.fromtimestamp(e["time"]).strftime("%Y-%m-%d %H:%M:%S")
    print(f"{when}  {e['author'][:8]}  {e['text']}", flush=True)


async def sync_wait(api: Client, name: str, timeout: float) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
                  TimeElapsedColumn(), transient=False, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"sync {name}", total=None, amount="")
        files = None
        while True:
            s = await api.get(f"/v1/groups/{_q(name)}/sync")
            progress.update(task, total=s["have"] + s["missing"], completed=s["have"],
                            description=f"sync {name} ({s['peers']} peers)",
                            amount=f"{s['have']}/{s['have'] + s['missing']} entries")
            if "folder_bytes" in s:  # a bound folder: the bytes still to write locally
                if files is None:
                    files = progress.add_task("  folder", total=None, amount="")
                done = s["folder_bytes"] - s["folder_pending_bytes"]
                progress.update(files, total=s["folder_bytes"], completed=done,
                                amount=f"{done / 1e6:.1f}/{s['folder_bytes'] / 1e6:.1f} MB")
            if s["synced"]:
                break
            if time.monotonic() > deadline:
                what = "no peer connected" if not s["peers"] else f"{s['missing']} entries still missing"
                raise CoboxError(f"timed out after {timeout:.0f}s: {what}")
            await asyncio.sleep(0.1)
    print(f"{name}: in sync ({s['have']} entries, {s['peers']} peers)")
    return 0


async def seed(api: Client, args: argparse.Namespace) -> int:
    if args.what == "list":
        def show(g: dict[str, Any]) -> None:
            quota = ""
            if g["quota_bytes"]:
                quota = f", quota {g['quota_bytes']} bytes{' REACHED' if g['quota_full'] else ''}"
            print(f"{g['name']}  {len(g['feeds'])} feeds, {g['stored_bytes']} bytes{quota}, "
                  f"{g['sync']['peers']} peers")

        seeds = [g for g in await api.get("/v1/groups") if g["role"] == "seed"]
        return show_list(seeds, args.json, "not backing up any group", show)
    if args.what == "remove":
        if not args.name:
            raise UsageError("seed remove needs the group's name (see `cobox seed list`)")
        await api.delete(f"/v1/groups/{_q(args.name)}")
        print(f"no longer backing up {args.name}")
        return 0
    from .uri import parse_invite

    uri = read_uri(args.what)
    if parse_invite(uri).kind != "seed":
        raise UsageError("not a backup-peer invite: ask a member for `cobox group invite NAME --seed`")
    g = await api.post("/v1/groups/join", {"uri": uri})
    print(f"backing up {g['name']} (can verify and serve, cannot read)")
    return 0


async def backup_status(api: Client, name: str, as_json: bool) -> int:
    peers = await api.get(f"/v1/groups/{_q(name)}/backup")
    if as_json:
        print(json.dumps(peers, indent=2))
        return 0
    if not peers:
        print(f"{name}: no backup peer has confirmed holding anything yet")
    for p in peers:
        state = "everything backed up" if p["backed_up"] else "not backed up"
        print(f"backup peer {p['peer'][:16]}: {state}{' (its quota is full)' if p['quota_full'] else ''}")
        for f in p["feeds"]:
            print(f"  feed {f['feed'][:16]}  claimed {f['held']}/{f['length']}, {_audit_text(f['audit'])}")
    return 0


def _audit_text(audit: dict) -> str:
    """``verified by audit at T (k samples)``, ``audit failed (reason)`` or ``not audited yet``."""
    if audit["state"] == "verified":
        return f"verified by audit at {_when(audit['time'])} ({audit['samples']} samples)"
    if audit["state"] == "failed":
        return f"audit failed ({audit['reason']}) at {_when(audit['time'])}"
    return audit["state"]


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


async def folder(api: Client, args: argparse.Namespace) -> int:
    a = args.action
    if a == "add":
        path = str(Path(args.path).expanduser().resolve())
        f = await api.post("/v1/folders", {"group": args.group, "path": path})
        print(f"syncing {f['path']} with group {f['group']}")
    elif a == "list":
        show_list(await api.get("/v1/folders"), args.json, "no folders",
                  lambda f: print(f"{f['group']}  {f['path']}  {f['files']} files, {f['bytes']} bytes"))
    elif a == "remove":
        await api.delete(f"/v1/folders/{_q(args.group)}")
        print(f"stopped syncing the folder of {args.group} (its files stay)")
    elif a == "status":
        f = await api.get(f"/v1/folders/{_q(args.group)}")
        if args.json:
            print(json.dumps(f, indent=2))
        else:
            print(f"{f['path']}: {f['files']} files, {f['bytes']} bytes, {f['pending_up']} to upload, "
                  f"{f['pending_down']} to download, {len(f['conflicts'])} conflicts")
            for c in f["conflicts"]:
                print(f"  conflict copy: {c}")
            if f["error"]:
                print(f"  error: {f['error']}")
            elif f.get("last_error"):
                print(f"  last error (recovered): {f['last_error']}")
            for p in f.get("failed", []):
                print(f"  {p['path']}: {p['reason']}")
            if f.get("failed_count", 0) > len(f.get("failed", [])):
                print(f"  ... {f['failed_count'] - len(f['failed'])} more paths that cannot be applied")
            for dev, d in f.get("devices", {}).items():
                if d.get("records_refused") or d.get("feeds_refused"):
                    print(f"  device {dev[:8]}: {d.get('records_refused', 0)} records refused "
                          f"(last: {d.get('last_refused_reason', '')}), {d.get('feeds_refused', 0)} feeds refused")
    elif a == "history":
        from urllib.parse import quote

        versions = await api.get(f"/v1/folders/{_q(args.group)}/history?file={quote(args.file)}")
        if args.json:
            print(json.dumps(versions, indent=2))
        for v in [] if args.json else versions:
            when = datetime.datetime.fromtimestamp(v["mtime"]).strftime("%Y-%m-%d %H:%M:%S")
            what = "deleted" if v["deleted"] else f"{v['size']} bytes"
            print(f"{v['version']}  {when}  {v['author'][:8]}  {what}{'  (current)' if v['current'] else ''}")
    elif a == "restore":
        body = {"file": args.file}
        if args.version:
            body["version"] = args.version
        if args.to:
            body["to"] = str(Path(args.to).expanduser().resolve())
        r = await api.post(f"/v1/folders/{_q(args.group)}/restore", body)
        print(f"restored {args.file} (version {r['version']})" + (f" to {args.to}" if args.to else ""))
    return 0


def read_password(args: argparse.Namespace, confirm: bool) -> str:
    """From stdin with --password-stdin, else from the terminal; never from argv."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask for the password: use --password-stdin")
        import getpass

        password = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != password:
            raise UsageError("the passwords differ")
    if len(password) < 8:
        raise UsageError("the password must have at least 8 characters")
    return password


async def keys(api: Client, args: argparse.Namespace) -> int:
    password = read_password(args, confirm=args.action == "backup")
    body = {"peer": args.peer, "user": args.user, "password": password, "trust_first_use": args.trust_first_use}
    if args.action == "backup":
        r = await api.post("/v1/keys/backup", body)
        _print_pinned(r.get("pinned"))
        print(f"keys backed up on {args.peer.split('~')[0]} as {args.user!r}")
        return 0
    r = await api.post("/v1/keys/restore", body)
    _print_pinned(r.get("pinned"))
    print(f"recovered device {r['peer_id'][:16]} with {len(r['groups'])} group(s); the daemon restarts and resyncs")
    return 0


def _print_pinned(pinned: str | None) -> None:
    if pinned:
        print(f"trusted on first use: the backup peer presented the key in {pinned}\n"
              "check it against `cobox status` on the backup peer, and use this address next time")


def read_uri(arg: str) -> str:
    """An invite URI: ``arg``, or for ``-`` from stdin (a terminal is asked, without echo). A URI
    on the command line shows in every user's process list; stdin and the prompt do not."""
    if arg != "-":
        return arg
    if sys.stdin.isatty():
        import getpass

        uri = getpass.getpass("invite URI (not shown): ")
    else:
        uri = sys.stdin.readline()
    if not uri.strip():
        raise UsageError("no invite URI given: pass it on stdin (`cobox group join < file`) or type it when asked")
    return uri.strip()


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url={url}"><title>cobox: logging in</title></head>
<body><p>Opening the cobox dashboard&hellip; <a href="{url}">continue</a></p></body></html>
"""


async def open_dashboard(api: Client, home: Home, no_browser: bool) -> int:
    """Log in to the dashboard with a one-time link that never shows on a command line.

    The link (``http://127.0.0.1:PORT/#code=...``) goes into a 0600 page in the 0700 home that
    redirects to it; the browser is started with that page's path, which is all that another
    user sees in the process list, and cannot read. With ``--no-browser`` the link is printed."""
    import html

    link = await api.post("/v1/login-link")
    if no_browser:
        print(link["url"], flush=True)
        return 0
    page = home.login_page
    write_private(page, LOGIN_PAGE.format(url=html.escape(link["url"], quote=True)).encode())
    import webbrowser

    if webbrowser.open(page.as_uri()):
        print(f"cobox: opened the dashboard in the browser (the login in {page} is valid once, "
              f"for {link['expires_in']:.0f}s)")
    else:
        print(f"cobox: no browser found; open {page.as_uri()} in one within {link['expires_in']:.0f}s "
              "(or use --no-browser and paste the link into the address bar)", file=sys.stderr)
    return 0


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
