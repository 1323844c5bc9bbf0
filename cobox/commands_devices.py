"""The ``device`` commands: ``device rename NAME`` and ``device list GROUP [--json]``.

``device list`` prints one line per device of the group (members first, this device first):
its name (or ``(no name)``), the first 16 hex digits of its id, its role, whether it is
connected now and how (``direct LAN``, ``relayed via ...``) or when it was last seen, and how
much of each feed it holds: for a member the entries it wrote, for a backup peer what its
latest custody receipts say (``held/length``). ``--json`` prints the API's rows, exact ids.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .commands_show import ago_text, quote_name
from .control.client import Client


async def device(api: Client, args: argparse.Namespace) -> int:
    if args.action == "rename":
        d = await api.post("/v1/device/rename", {"name": args.name})
        print(f"this device ({d['id'][:16]}) is now named {d['name']!r}; its groups are told")
        return 0
    rows = await api.get(f"/v1/groups/{quote_name(args.group)}/devices")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(device_line(row))
    return 0


def device_line(row: dict[str, Any], now: float | None = None) -> str:
    name = row["name"] or "(no name)"
    mark = " (this device)" if row["this_device"] else ""
    if row["this_device"]:
        where = "this device"
    elif row["connected"]:
        where = f"connected, {row['connection'] or 'connection kind unknown'}"
    elif row["last_seen"]:
        where = f"last seen {ago_text(row['last_seen'], now)}"
    else:
        where = "never seen"
    holds = ", ".join(f"{f['feed'][:8]} {f['held']}/{f['length']}" for f in row["feeds"]) or "no feeds"
    return f"{name}{mark}  {row['id'][:16]}  {row['role']}  {where}  feeds: {holds}"
