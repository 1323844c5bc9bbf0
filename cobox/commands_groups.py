"""The group commands: ``group``, ``log``, ``sync``, ``seed`` and ``backup``, and reading an
invite URI without putting it on a command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
from typing import Any

from .commands_show import (
    ago_text,
    files_text,
    print_group,
    quote_name,
    rate_text,
    show_list,
    size_text,
    sync_state,
    when_text,
    who,
)
from .control.client import Client
from .errors import CoboxError, DaemonNotRunningError, UsageError
from .inputs import stdin_text


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
        query = {"seed": "1"} if args.seed else {}
        print((await api.get(f"/v1/groups/{quote_name(args.name)}/invite", **query))["uri"])
    elif args.action == "leave":
        await leave(api, args, "left")
    return 0


async def leave(api: Client, args: argparse.Namespace, done: str) -> None:
    """Leave a group (``group leave``, ``seed remove``): unless ``--keep-data``, its data is
    deleted, after a confirmation on a terminal (``--yes`` skips it; off a terminal it is
    required, so a script cannot delete data by accident)."""
    path = f"/v1/groups/{quote_name(args.name)}"
    if not args.keep_data and not args.yes:
        stored = size_text((await api.get(path)).get("stored_bytes", 0))
        question = f"Leave {args.name} and delete the {stored} this device stores for it? [y/N] "
        if not sys.stdin.isatty():
            raise UsageError(f"leaving {args.name} deletes the {stored} stored for it: pass --yes to confirm "
                             "(or --keep-data to keep it)")
        if input(question).strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return
    r = await (api.delete(f"{path}?keep_data=1") if args.keep_data else api.delete(path))
    if r.get("kept_data"):
        print(f"{done} {args.name} (its data is kept in the store)")
    else:
        print(f"{done} {args.name}: deleted {size_text(r.get('deleted_bytes', 0))} of its data, "
              f"{size_text(r.get('freed_bytes', 0))} of disk freed")


async def log_command(api: Client, args: argparse.Namespace) -> int:
    path = f"/v1/groups/{quote_name(args.group)}/log"
    if args.action == "append":
        text = stdin_text() if args.text == "-" else args.text
        r = await api.post(path, {"text": text})
        print(f"appended entry {r['seq']}")
        return 0
    if args.follow:
        async for entry in api.stream(path, follow="1"):
            print_entry(entry, args.json)
        raise DaemonNotRunningError("the daemon stopped; no more entries")  # it ends the stream only then
    for entry in await api.get(path):
        print_entry(entry, args.json)
    return 0


def print_entry(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(e), flush=True)
        return
    if e.get("refused"):
        author = e.get("author_name") or e["author"][:8]
        print(f"{'(refused)':19}  {author}  entry {e['seq']} refused: {e['refused']}", flush=True)
        return
    when = datetime.datetime.fromtimestamp(e["time"]).strftime("%Y-%m-%d %H:%M:%S")
    print(f"{when}  {e.get('author_name') or e['author'][:8]}  {e['text']}", flush=True)


async def sync_wait(api: Client, name: str, timeout: float) -> int:
    """Poll the group's sync document until it is in sync; on a terminal, a progress bar in
    files and bytes (with rate and time left) when the group has a folder, else in entries."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    deadline = time.monotonic() + timeout
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
                  TimeRemainingColumn(), transient=False, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"sync {name}", total=None, amount="")
        while True:
            s = await api.get(f"/v1/groups/{quote_name(name)}/sync")
            peers = f"{s['peers']} peer{'' if s['peers'] == 1 else 's'}"
            if "folder_bytes" in s:  # a bound folder: the bytes still to write locally
                done = s["folder_bytes"] - s["folder_pending_bytes"]
                progress.update(task, total=s["folder_bytes"] or None, completed=done,
                                description=f"sync {name} ({peers})", amount=_bytes_progress(progress, task, s))
            else:
                progress.update(task, total=s["have"] + s["missing"], completed=s["have"],
                                description=f"sync {name} ({peers})",
                                amount=f"{s['have']}/{s['have'] + s['missing']} entries")
            if s["synced"]:
                break
            if time.monotonic() > deadline:
                what = "no peer connected" if not s["peers"] else sync_state(s)
                raise CoboxError(f"timed out after {timeout:.0f}s: {what}")
            await asyncio.sleep(0.1)
    print(f"{name}: {sync_done_text(s)}")
    return 0


def sync_done_text(s: dict[str, Any]) -> str:
    peers = f"{s['peers']} peer{'' if s['peers'] == 1 else 's'}"
    if "folder_bytes" in s:
        return f"in sync ({files_text(s.get('folder_files', 0), s['folder_bytes'])}, {peers})"
    return f"in sync ({s['have']} log entries, {peers})"


def _bytes_progress(progress: Any, task: Any, s: dict[str, Any]) -> str:
    """``12 MiB of 40 MiB, 3 files to download, 2.1 MiB/s`` (the rate once rich has measured one)."""
    done = s["folder_bytes"] - s["folder_pending_bytes"]
    text = f"{size_text(done)} of {size_text(s['folder_bytes'])}"
    if s["folder_pending"]:
        text += f", {s['folder_pending']} file{'' if s['folder_pending'] == 1 else 's'} to download"
    speed = next((t.speed for t in progress.tasks if t.id == task), None)
    if speed:
        text += f", {rate_text(speed)}"
    return text


async def seed(api: Client, args: argparse.Namespace) -> int:
    if args.what == "list":
        def show(g: dict[str, Any]) -> None:
            quota = ""
            if g["quota_bytes"]:
                quota = f", quota {size_text(g['quota_bytes'])}{' REACHED' if g['quota_full'] else ''}"
            print(f"{g['name']}  {len(g['feeds'])} feeds, {size_text(g['stored_bytes'])}{quota}, "
                  f"{g['sync']['peers']} peers")

        seeds = [g for g in await api.get("/v1/groups") if g["role"] == "seed"]
        return show_list(seeds, args.json, "not backing up any group", show)
    if args.what == "remove":
        if not args.name:
            raise UsageError("seed remove needs the group's name (see `cobox seed list`)")
        await leave(api, args, "no longer backing up")
        return 0
    from .uri import parse_invite

    uri = read_uri(args.what)
    if parse_invite(uri).kind != "seed":
        raise UsageError("not a backup-peer invite: ask a member for `cobox group invite NAME --seed`")
    body = {"uri": uri}
    if args.name:
        body["name"] = args.name
    g = await api.post("/v1/groups/join", body)
    print(f"backing up {g['name']} (can verify and serve, cannot read)")
    return 0


async def backup_status(api: Client, name: str, as_json: bool) -> int:
    peers = await api.get(f"/v1/groups/{quote_name(name)}/backup")
    if as_json:
        print(json.dumps(peers, indent=2))
        return 0
    if not peers:
        print(f"{name}: no backup peer has confirmed holding anything yet")
    for p in peers:
        state = "everything backed up" if p["backed_up"] else "not backed up"
        full = " (its quota is full)" if p["quota_full"] else ""
        keeps = f", keeps released history {p['keep_days']} days" if p.get("keep_days") else ", keeps all history"
        print(f"backup peer {who(p['peer'], p.get('peer_name'))}: {state}{full}{keeps}")
        for f in p["feeds"]:
            print(f"  feed {f['feed'][:16]}  claimed {f['held']}/{f['length']}, {_audit_text(f['audit'])}")
    return 0


def _audit_text(audit: dict) -> str:
    """``verified by audit at T (k samples)``, ``audit failed (reason)`` or ``not audited yet``."""
    if audit["state"] == "verified":
        return (f"verified by audit at {when_text(audit['time'])} ({ago_text(audit['time'])}, "
                f"{audit['samples']} samples)")
    if audit["state"] == "failed":
        return f"audit failed ({audit['reason']}) at {when_text(audit['time'])} ({ago_text(audit['time'])})"
    return audit["state"]


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
