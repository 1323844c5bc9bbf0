"""The ``keys`` commands: back up and restore this device's keys on a backup peer, with the
password read from stdin or the terminal, never from argv.

``keys restore`` is safe: the daemon refuses to replace an identity in use without ``--force``
(and keeps the old key file as ``identity.key.replaced-<time>``); the command returns only once
the restarted daemon answers under the recovered identity, then offers to bind each folder the
keyring names (asked on a terminal, all of them with ``--yes``, none otherwise: it says how).

Keeping the backup current: the keyring backup is a snapshot of the groups and folders at the
time. cobox keeps no password and no password-equivalent on disk, and this build has no OS
keyring to hold the Argon2-derived key in, so it *asks again*: after a command that changes
what the keyring covers (group create/join/leave, seed, folder add/remove) :func:`keep_current`
sees that the last backup no longer matches and, on a terminal, asks for the password to back
up again (Enter skips); off a terminal it prints the command to run.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .control.client import ApiError, Client
from .errors import AuthError, DaemonNotRunningError, UsageError
from .paths import Home

RESTART_TIMEOUT = 60.0  # seconds keys restore waits for the restarted daemon


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


async def keys(api: Client, args: argparse.Namespace, home: Home) -> int:
    password = read_password(args, confirm=args.action == "backup")
    body: dict[str, Any] = {"peer": args.peer, "user": args.user, "password": password,
                            "trust_first_use": args.trust_first_use}
    if args.action == "backup":
        r = await api.post("/v1/keys/backup", body)
        _print_pinned(r.get("pinned"))
        print(f"keys backed up on {args.peer.split('~')[0]} as {args.user!r}")
        return 0
    asked = time.time()
    r = await api.post("/v1/keys/restore", {**body, "force": args.force})
    _print_pinned(r.get("pinned"))
    if r.get("replaced"):
        print(f"the identity this home had is kept as {r['replaced']}")
    print(f"recovered device {r['peer_id'][:16]} with {len(r['groups'])} group(s); waiting for the daemon to restart")
    await wait_restarted(home, r["peer_id"], asked)
    print("the daemon runs under the recovered identity and resyncs")
    await bind_folders(home, r.get("folders") or {}, args.yes)
    return 0


async def wait_restarted(home: Home, peer_id: str, since: float, timeout: float = RESTART_TIMEOUT) -> dict[str, Any]:
    """The status of the daemon once it answers as ``peer_id``, started after ``since``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    async with Client(home, timeout=5.0) as c:
                        s = await c.get("/v1/status")
                    if s["peer_id"] == peer_id and time.time() - s["uptime"] >= since - 1.0:
                        return s
                except (DaemonNotRunningError, AuthError, ApiError, OSError):
                    pass  # stopping, or not listening yet
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise DaemonNotRunningError(f"the daemon did not come back within {timeout:.0f}s after the restore; "
                                    "see `cobox logs`") from None


async def bind_folders(home: Home, folders: dict[str, str], yes: bool) -> None:
    """Offer each folder of the keyring: bound if the user accepts (or ``--yes``)."""
    if not folders:
        return
    interactive = sys.stdin.isatty() and not yes
    async with Client(home) as api:
        bound = {f["group"] for f in await api.get("/v1/folders")}
        for group, path in sorted(folders.items()):
            if group in bound:
                continue
            if not yes and not interactive:
                print(f"not bound: group {group} had the folder {path}; bind it with "
                      f"`cobox folder add {group} {path}` (or restore with --yes)")
                continue
            if interactive and input(f"bind group {group} to the folder {path}? [y/N] ").strip().lower() not in ("y",
                                                                                                            "yes"):
                print(f"not bound: {group}")
                continue
            Path(path).mkdir(parents=True, exist_ok=True)
            f = await api.post("/v1/folders", {"group": group, "path": path})
            print(f"syncing {f['path']} with group {f['group']}")


async def keep_current(api: Client) -> None:
    """After a change to what the keyring covers: if the last backup no longer matches, ask for
    the password to back up again (a terminal), or say what to run."""
    try:
        state = (await api.get("/v1/keys/backup"))["backup"]
    except ApiError:
        return
    if state is None or state["current"]:
        return
    command = f"cobox keys backup --peer {shlex.quote(state['peer'])} --user {shlex.quote(state['user'])}"
    why = ("cobox keeps no password, and there is no OS keyring here to hold the key derived from it, "
           "so it asks again")
    if not sys.stdin.isatty():
        print(f"cobox: the keyring backup on the backup peer no longer covers this device's groups and folders; "
              f"run `{command}` ({why})", file=sys.stderr)
        return
    import getpass

    print(f"the keyring backup as {state['user']!r} no longer covers this device's groups and folders ({why})")
    password = getpass.getpass("password to back it up again (Enter to skip): ")
    if not password:
        print(f"skipped; run `{command}` later")
        return
    await api.post("/v1/keys/backup", {"peer": state["peer"], "user": state["user"], "password": password,
                                       "trust_first_use": False})
    print(f"keys backed up again as {state['user']!r}")


def _print_pinned(pinned: str | None) -> None:
    if pinned:
        print(f"trusted on first use: the backup peer presented the key in {pinned}\n"
              "check it against `cobox status` on the backup peer, and use this address next time")
