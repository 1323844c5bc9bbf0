"""Backup as a service on the command line: ``cobox service invite|list|revoke`` on a host,
``cobox backup add|list|remove`` on a member (clients of ``/v1/service/...`` and ``/v1/backups``)."""

from __future__ import annotations

import argparse
from typing import Any

from .commands_groups import read_uri
from .commands_show import ago_text, quote_name, show_list, size_text, when_text
from .control.client import Client
from .errors import UsageError


def _quota(used: int, quota: int) -> str:
    return f"{size_text(used)} of {size_text(quota)}" if quota else f"{size_text(used)} (no quota)"


async def hosting_command(api: Client, args: argparse.Namespace) -> int:
    if args.action == "invite":
        body: dict[str, Any] = {"label": args.label}
        for key, value in (("quota_mb", args.quota_mb), ("groups", args.groups), ("expires_days", args.expires)):
            if value is not None:
                body[key] = value
        inv = await api.post("/v1/service/invites", body)
        print(inv["uri"])
        if not inv.get("enabled", True):
            print("cobox: note: [hosting] enabled = false here: members' requests are refused until it is true")
        return 0
    if args.action == "list":
        return show_list(await api.get("/v1/service/invites"), args.json, "no service invites", _show_invite)
    if args.action == "revoke":
        r = await api.post("/v1/service/revoke", {"what": args.what})
        days = r["clears_in"] / 86400
        print(f"revoked {r['revoked']} {r['id'][:16]}: {len(r['groups'])} group(s) take no new data and are "
              f"cleared in {days:.3g} day(s)")
        return 0
    raise UsageError(f"unknown action {args.action}")


def _show_invite(inv: dict[str, Any]) -> None:
    if inv["revoked"]:
        state = f"revoked {ago_text(inv['revoked'])}"
    elif inv["expired"]:
        state = "expired"
    else:
        state = f"valid until {when_text(inv['expires'])}" if inv["expires"] else "valid"
    groups = f"{len(inv['groups'])}/{inv['max_groups'] or 'any'} groups"
    label = f" {inv['label']!r}" if inv["label"] else ""
    print(f"invite {inv['id'][:16]}{label}: {state}, {groups}, {_quota(inv['used_bytes'], inv['quota_bytes'])}")
    for g in inv["groups"]:
        clears = f", cleared {when_text(g['clears_at'])}" if g["clears_at"] else ""
        print(f"  {g['name']}  device {g['device'][:16]}  {size_text(g['stored_bytes'])}, {g['state']}{clears}")


async def backup_command(api: Client, args: argparse.Namespace) -> int:
    if args.action == "add":
        r = await api.post("/v1/backups", {"group": args.group, "uri": read_uri(args.uri)})
        print(f"{r['group']}: backed up on host {r['host'][:16]} ({r.get('state', 'accepted')}, "
              f"{_quota(r.get('stored_bytes', 0), r.get('quota_bytes', 0))}); it holds the replication key only")
        return 0
    if args.action == "list":
        return show_list(await api.get("/v1/backups"), args.json, "no group has a backup host", _show_backup)
    if args.action == "remove":
        r = await api.delete(f"/v1/backups/{quote_name(args.group)}/{quote_name(args.host)}")
        print(f"{r['group']}: host {r['host'][:16]} dropped it")
        return 0
    raise UsageError(f"unknown action {args.action}")


def _show_backup(b: dict[str, Any]) -> None:
    state = b.get("state", "no statement yet")
    as_of = f" as of {ago_text(b['time'])}" if "time" in b else ""
    online = "" if b.get("connected", True) else " (not connected)"
    print(f"{b['group']}  host {b['host'][:16]}{online}: {state}{as_of}, "
          f"{_quota(b.get('stored_bytes', 0), b.get('quota_bytes', 0))}")
    r = b.get("receipts")
    if r:
        audit = r["audit"]
        last = "none yet" if audit is None else (f"passed {ago_text(audit['time'])}" if audit["passed"] else
                                                  f"failed {ago_text(audit['time'])} ({audit['reason']})")
        print(f"  {'everything backed up' if r['backed_up'] else 'not backed up'}"
              f"{' (its quota is full)' if r['quota_full'] else ''}; last audit: {last}")
