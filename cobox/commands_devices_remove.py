"""``cobox device remove GROUP DEVICE [--yes]``: remove a lost or stolen device from a group.

The command is a client of ``DELETE /v1/groups/{name}/devices/{device}`` (``cobox.removal``).
Before it asks the daemon it says what removal does and, as plainly, what it does not do (the
same text as the README's "Removing a device" and the dashboard's confirmation), and asks; with
``--yes`` it does not ask, and without a terminal to ask on it refuses unless ``--yes`` is given.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .commands_show import quote_name, when_text
from .control.client import Client
from .errors import UsageError

WHAT_IT_DOES_NOT = (
    "It does NOT take back what {device} already has: every file and entry it synced before stays on it,\n"
    "readable by whoever holds it. Nothing is deleted there. Re-adding it later needs a new invite.")


def confirmation(group: str, device: str) -> str:
    return (f"Remove {device} from {group}?\n"
            f"The group moves to a new epoch: the other devices get new keys, {device} gets nothing written\n"
            f"from now on and is refused by the others.\n" + WHAT_IT_DOES_NOT.format(device=device))


def add_parser(device_actions: argparse._SubParsersAction, sub: Any) -> None:
    """Add ``remove`` to the ``device`` command's actions (``sub``: cli's ``_sub``)."""
    r = sub(device_actions, "remove", "remove a lost or stolen device from a group (it keeps what it had)",
            "  cobox device remove photos old-laptop\n  cobox device remove photos 3f2a9c --yes\n")
    r.add_argument("group", help="the group")
    r.add_argument("device", help="the device: its name or the start of its id (`cobox status` shows ids)")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.add_argument("--json", action="store_true", help="machine-readable output")


async def remove(api: Client, args: argparse.Namespace) -> int:
    if not args.yes:
        print(confirmation(args.group, args.device))
        if not sys.stdin.isatty():
            raise UsageError("not removed: confirm with --yes (there is no terminal to ask on)")
        if input("Remove it? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not removed")
            return 1
    r = await api.delete(f"/v1/groups/{quote_name(args.group)}/devices/{quote_name(args.device)}")
    if args.json:
        import json

        print(json.dumps(r, indent=2))
        return 0
    who = r["removed_name"] or r["removed"][:16]
    print(f"removed {who} from {r['group']} at {when_text(r['time'])}: new epoch {r['epoch'][:16]}, "
          f"{len(r['members'])} member(s) and {len(r['seeds'])} backup peer(s) keep the group")
    print(WHAT_IT_DOES_NOT.format(device=who))
    return 0
