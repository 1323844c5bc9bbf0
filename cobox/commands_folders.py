"""The ``folder`` commands: add, set, list, remove, status, rescan, override, revert, history, prune and
restore."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from .commands_show import ago_text, disk_text, duration_text, files_text, quote_name, show_list, size_text
from .control.client import Client
from .errors import CoboxError
from .inputs import folder_file


def availability_text(v: dict[str, object]) -> str:
    """`folder history`'s mark for a version whose chunks are no longer stored here."""
    if v.get("available", True):
        return ""
    held = v.get("held_by")
    if isinstance(held, list) and held:
        return "  (not here; held by backup peer " + ", ".join(str(p)[:8] for p in held) + ")"
    return "  (no longer available here)"


async def folder(api: Client, args: argparse.Namespace) -> int:
    a = args.action
    if a == "add":
        path = str(Path(args.path).expanduser().resolve())
        body: dict[str, object] = {"group": args.group, "path": path, **_options(args)}
        if args.history_days is not None:
            body["history_days"] = args.history_days
        f = await api.post("/v1/folders", body)
        print(f"syncing {f['path']} with group {f['group']} ({kind_text(f)})")
    elif a == "set":
        body = _options(args)
        if not body:
            raise CoboxError("give --type and/or --rescan-interval")
        f = await api.request("PATCH", f"/v1/folders/{quote_name(args.group)}", body)
        print(f"{f['path']}: {kind_text(f)}")
    elif a in ("rescan", "override", "revert"):
        r = await api.post(f"/v1/folders/{quote_name(args.group)}/{a}")
        done = {"rescan": "rescanned", "override": "overridden: the group now has this device's files",
                "revert": "reverted: this device has the group's files again"}[a]
        print(f"{args.group}: {done}" if r["done"] else f"{args.group}: {a} asked; the folder has not done it yet "
              f"(see `cobox folder status {args.group}`)")
    elif a == "list":
        show_list(await api.get("/v1/folders"), args.json, "no folders",
                  lambda f: print(f"{f['group']}  {f['path']}  {files_text(f['files'], f['bytes'])}"))
    elif a == "remove":
        await api.delete(f"/v1/folders/{quote_name(args.group)}")
        print(f"stopped syncing the folder of {args.group} (its files stay)")
    elif a == "status":
        f = await api.get(f"/v1/folders/{quote_name(args.group)}")
        if args.json:
            print(json.dumps(f, indent=2))
        else:
            down = f"{f['pending_down']} to download"
            if f.get("pending_down_bytes"):
                down += f" ({size_text(f['pending_down_bytes'])})"
            state = "in sync" if not (f["pending_up"] or f["pending_down"]) else f"{f['pending_up']} to upload, {down}"
            state = f"paused, {state}" if f.get("paused") else state
            print(f"{f['path']}: {files_text(f['files'], f['bytes'])}, {state}, {len(f['conflicts'])} conflicts")
            print(f"  {kind_text(f)}")
            held = f.get("out_of_sync", 0)
            if held:
                what = {"send-only": "remote changes not applied here (`cobox folder override` makes the group "
                                     "take this device's files)",
                        "receive-only": "local changes not sent (`cobox folder revert` drops them)"}.get(
                    f.get("type", ""), "paths held back")
                print(f"  {held} {what}:")
                for p in f.get("out_of_sync_paths", []):
                    print(f"    {p}")
            if f.get("waiting_stable"):
                print(f"  {f['waiting_stable']} files being written (recorded once they are stable)")
            if f.get("disk"):
                print(f"  disk: {disk_text(f['disk'])}")
            for c in f["conflicts"]:
                print(f"  conflict copy: {c}")
            if f["error"]:
                print(f"  error: {f['error']}")
            elif f.get("last_error"):
                when = f", {ago_text(f['last_error_time'])}" if f.get("last_error_time") else ""
                print(f"  last error (recovered{when}): {f['last_error']}")
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

        file = await folder_file(api, args.group, args.file)
        versions = await api.get(f"/v1/folders/{quote_name(args.group)}/history?file={quote(file)}")
        if not versions:
            raise CoboxError(f"no file {file!r} in the folder of {args.group} (see `cobox folder status "
                             f"{args.group}`); give a path relative to the folder or inside it")
        if args.json:
            print(json.dumps(versions, indent=2))
        for v in [] if args.json else versions:
            when = datetime.datetime.fromtimestamp(v["mtime"]).strftime("%Y-%m-%d %H:%M:%S")
            what = "deleted" if v["deleted"] else size_text(v["size"])
            author = v.get("author_name") or v["author"][:8]
            print(f"{v['version']}  {when}  {author}  {what}{'  (current)' if v['current'] else ''}"
                  f"{availability_text(v)}")
    elif a == "prune":
        r = await api.post(f"/v1/folders/{quote_name(args.group)}/prune")
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(f"pruned {args.group} (history {r['history_days']:g} days): {r['expired_versions']} versions "
                  f"expired, {r['cleared_entries']} chunks cleared, {size_text(r['freed_bytes'])} freed "
                  f"({size_text(r['disk_freed_bytes'])} of disk)")
    elif a == "restore":
        body = {"file": await folder_file(api, args.group, args.file)}
        if args.version:
            body["version"] = args.version
        if args.to:
            body["to"] = str(Path(args.to).expanduser().absolute())
            body["force"] = args.force
        r = await api.post(f"/v1/folders/{quote_name(args.group)}/restore", body)
        if "written" in r:
            print(f"restored {args.file} (version {r['version']}) to {r['written']}")
        elif r.get("in_place"):
            print(f"restored {args.file} (version {r['version']})")
        else:
            print(f"restore of {args.file} (version {r['version']}) recorded; it is not written yet "
                  f"(see `cobox folder status {args.group}`)")
    return 0


def _options(args: argparse.Namespace) -> dict[str, object]:
    body: dict[str, object] = {}
    if args.type:
        body["type"] = args.type
    if args.rescan_interval is not None:
        body["rescan_interval"] = args.rescan_interval
    return body


def kind_text(f: dict[str, object]) -> str:
    """``send-only, rescanned every 30 s``."""
    rescan = f.get("rescan_interval")
    every = f", rescanned every {duration_text(float(rescan))}" if isinstance(rescan, int | float) else ""
    return f"{f.get('type', 'send-receive')}{every}"
