"""How the CLI prints what the API answers: status, groups, peers, lists; and quoting names into
URL paths.

A person reads these lines, so sizes are in binary units (``293 KiB``), rates per second, times
relative (``3 minutes ago``) and state in files and bytes; feeds and entries show with
``--verbose``. ``--json`` prints the API's documents unchanged, with exact numbers.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def size_text(n: float) -> str:
    """``300025`` -> ``293 KiB``: three significant digits at most, binary units."""
    if n < 1024:
        return f"{int(n)} byte{'' if int(n) == 1 else 's'}"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def rate_text(bytes_per_second: float) -> str:
    return f"{size_text(bytes_per_second)}/s"


def duration_text(seconds: float) -> str:
    """``42 seconds``, ``3 minutes``, ``2 hours 5 minutes``, ``4 days 1 hour``."""
    s = int(max(seconds, 0))
    if s < 60:
        return _plural(s, "second")
    if s < 3600:
        return _plural(s // 60, "minute")
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return _plural(h, "hour") + (f" {_plural(m, 'minute')}" if m else "")
    d, h = divmod(s // 3600, 24)
    return _plural(d, "day") + (f" {_plural(h, 'hour')}" if h else "")


def ago_text(t: float, now: float | None = None) -> str:
    """``just now``, ``3 minutes ago``; a time ahead of ``now`` (a skewed clock) reads ``in ...``."""
    delta = (time.time() if now is None else now) - t
    if abs(delta) < 5:
        return "just now"
    return f"{duration_text(delta)} ago" if delta > 0 else f"in {duration_text(-delta)}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def files_text(files: int, size: float) -> str:
    return f"{_plural(files, 'file')}, {size_text(size)}"


def kbps_text(n: int) -> str:
    """KiB/s as the limits count them: ``512`` -> ``512 KiB/s``, 0 -> ``unlimited``."""
    return rate_text(n * 1024) if n else "unlimited"


def show_status(s: dict[str, Any], as_json: bool, verbose: bool = False) -> int:
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"device     {s['peer_id']}" + (f"  ({s['name']})" if s.get("name") else ""))
    print(f"home       {s['home']}   (pid {s['pid']}, up {duration_text(s['uptime'])})")
    for a in s["advertised"]:
        print(f"address    {a}")
    if "reachability" in s:
        print(f"reachable  {s['reachability']['words']}")
    dht = s["dht"]
    print(f"dht        {'off' if not dht.get('enabled', True) else json.dumps(dht)}")
    print(f"lan        {'on' if s['lan']['enabled'] else 'off'}")
    print(f"traffic    {size_text(s['bytes_sent'])} out, {size_text(s['bytes_received'])} in")
    limits = s.get("limits")
    if limits and (limits["max_send_kbps"] or limits["max_recv_kbps"] or limits["devices"]):
        lan = "" if limits["limit_lan"] else " (not on the LAN)"
        own = f", {len(limits['devices'])} device limit(s)" if limits["devices"] else ""
        send, recv = kbps_text(limits["max_send_kbps"]), kbps_text(limits["max_recv_kbps"])
        print(f"limits     send {send}, receive {recv}{lan}{own}")
    paused = s.get("paused") or {}
    shown = [f"group {g}" for g in paused.get("groups", [])] + [f"folder {f}" for f in paused.get("folders", [])]
    shown += [f"device {d['peer_key'][:16]}" for d in paused.get("devices", [])]
    if shown:
        print(f"paused     {', '.join(shown)}")
    print(f"groups     {len(s['groups'])}")
    for g in s["groups"]:
        print_group(g, indent="  ", verbose=verbose)
    print(f"peers      {len(s['peers'])}")
    for p in s["peers"]:
        print(f"  {who(p['peer_id'], p.get('name'))}  {p.get('kind') or '?'}  {p['address']}  "
              f"groups: {', '.join(p['groups']) or '-'}")
    twins = s.get("twins") or {}
    if twins.get("words"):
        print(f"WARNING    {twins['words']}")
    for t in twins.get("peers", []):
        print(f"WARNING    {t['words']}")
    relay = s.get("relay") or {}
    if relay.get("offering"):
        o = relay["offering"]
        print(f"relay      offering: {o['reservations']} reservations, {o['circuits']} circuits open, "
              f"{o['circuits_total']} so far, {size_text(o['bytes_forwarded'])} forwarded")
    for r in relay.get("reservations", []):
        print(f"relay      reachable through {r['relay']}")
    services = s.get("services", [])
    running = sum(1 for v in services if v["state"] == "running")
    print(f"services   {running} of {len(services)} running")
    for v in services:
        if v["state"] != "running" or v["restarts"]:
            error = f", last error: {v['last_error']}" if v["last_error"] else ""
            print(f"  {v['name']}  {v['state']}, {v['restarts']} restarts{error}")
    return 0


def sync_state(sync: dict[str, Any]) -> str:
    """A group's sync state in the user's terms: ``in sync``, ``3 files to download, 40 MiB``."""
    if sync["synced"]:
        return "in sync"
    if not sync["peers"]:
        return "no peers"
    if sync.get("folder_pending"):
        return f"{_plural(sync['folder_pending'], 'file')} to download, {size_text(sync['folder_pending_bytes'])}"
    return f"catching up ({sync['missing']} entries to fetch)" if sync["missing"] else "catching up"


def print_group(g: dict[str, Any], indent: str = "", verbose: bool = False) -> None:
    sync = g["sync"]
    peers = _plural(sync["peers"], "peer")
    if verbose:
        print(f"{indent}{g['name']}  ({g['role']}, {len(g['feeds'])} feeds, {peers}, {sync_state(sync)})")
        for f in g["feeds"]:
            mark = " (this device)" if f["own"] else ""
            owner = f" owner {f['owner'][:16]}" if f.get("owner") else ""
            print(f"{indent}  feed {f['key'][:16]}  length {f['length']}  held {f['have']}{owner}{mark}")
    else:
        print(f"{indent}{g['name']}  ({g['role']}, {peers}, {sync_state(sync)})")
    if g.get("removed"):
        print(f"{indent}  {g['removed']['text']}: this device gets nothing new; it keeps what it had")
    for r in g.get("receipts", []):
        a = r["audit"]
        audit = ("not audited yet" if a is None else f"audit passed at {when_text(a['time'])} ({ago_text(a['time'])}, "
                 f"{a['samples']} samples)" if a["passed"]
                 else f"audit failed ({a['reason']}) at {when_text(a['time'])} ({ago_text(a['time'])})")
        held = "backed up" if r["backed_up"] else "not backed up"
        print(f"{indent}  backup peer {who(r['peer'], r.get('peer_name'))}  {held}, {audit}")
    for dev, d in g.get("devices", {}).items():
        if d.get("records_refused") or d.get("feeds_refused"):
            print(f"{indent}  device {who(dev, g.get('names', {}).get(dev))}: "
                  f"{d.get('records_refused', 0)} records refused "
                  f"(last: {d.get('last_refused_reason', '')}), {d.get('feeds_refused', 0)} feeds refused")
    if g.get("disk"):
        print(f"{indent}  disk: {disk_text(g['disk'])}")
    for f in g.get("folders", []):
        if "files" in f:
            line = f"{files_text(f['files'], f['bytes'])}, {f['pending_down']} to download"
            line += f", error: {f['error']}" if f["error"] else ""
            line += f", {f['failed_count']} paths cannot be applied" if f["failed_count"] else ""
        else:
            line = f["status"]
        print(f"{indent}  folder {f['path']}: {line}")
        if f.get("last_error") and not f.get("error"):
            print(f"{indent}    last error (recovered): {f['last_error']}")


def disk_text(d: dict[str, Any]) -> str:
    """A group's disk use in words: ``folder 30.0 MiB, stored 1.2 MiB, 30.0 MiB more in your files (history
    1.0 MiB, 0 bytes reclaimable ...)``: entries held in the folder's own files (``cobox.folders.single``) are
    not stored bytes."""
    stored = f"stored {size_text(d.get('stored_bytes', 0))}"
    if "folder_bytes" not in d:
        return stored
    files = f", {size_text(d['outside_bytes'])} more in your files" if d.get("outside_bytes") else ""
    return (f"folder {size_text(d['folder_bytes'])}, {stored}{files} (history {size_text(d['history_bytes'])}, "
            f"{size_text(d['reclaimable_bytes'])} reclaimable by `cobox folder prune`)")


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


def show_peers(peers: list[dict[str, Any]], as_json: bool, known: list[dict[str, Any]] | None = None) -> int:
    """Connected peers (``--json``: that list, as before); then the known peers not connected."""
    show_list(peers, as_json, "no peers connected", lambda p: print(
        f"{p['peer_id']}{'  ' + p['name'] if p.get('name') else ''}  {p.get('kind') or '?'}  {p['address']}  "
        f"groups: {', '.join(p['groups']) or '-'}  "
        f"{size_text(p['bytes_sent'])} out / {size_text(p['bytes_received'])} in"))
    away = [k for k in known or () if not k["connected"]]
    if away and not as_json:
        print("known peers not connected (redialled):")
        for k in away:
            print(f"  {k['peer_id'][:16]}  {k['address']}")
    return 0


def who(device_hex: str, name: str | None) -> str:
    """A device as a person reads it: its name with a short id, or the id's first 16 digits."""
    return f"{name} ({device_hex[:8]})" if name else device_hex[:16]


def quote_name(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def when_text(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")

