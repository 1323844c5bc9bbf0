"""How the CLI prints what the API answers: status, groups, peers, lists; and quoting names into
URL paths."""

from __future__ import annotations

import datetime
import json
from typing import Any


def show_status(s: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"device     {s['peer_id']}")
    print(f"home       {s['home']}   (pid {s['pid']}, up {s['uptime']:.0f}s)")
    for a in s["advertised"]:
        print(f"address    {a}")
    if "reachability" in s:
        print(f"reachable  {s['reachability']['words']}")
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
    services = s.get("services", [])
    running = sum(1 for v in services if v["state"] == "running")
    print(f"services   {running} of {len(services)} running")
    for v in services:
        if v["state"] != "running" or v["restarts"]:
            error = f", last error: {v['last_error']}" if v["last_error"] else ""
            print(f"  {v['name']}  {v['state']}, {v['restarts']} restarts{error}")
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
        audit = ("not audited yet" if a is None else f"audit passed at {when_text(a['time'])} ({a['samples']} samples)"
                 if a["passed"] else f"audit failed ({a['reason']}) at {when_text(a['time'])}")
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


def quote_name(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def when_text(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")

