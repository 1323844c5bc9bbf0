"""The ``keys`` commands: back up and restore this device's keys on a backup peer, with the
password read from stdin or the terminal, never from argv."""

from __future__ import annotations

import argparse
import sys

from .control.client import Client
from .errors import UsageError


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
