"""The everyday controls: ``cobox pause``, ``cobox resume`` and ``cobox limits``.

``pause GROUP`` (no replication for the group), ``pause --folder GROUP`` (its folder does no
scan, record or apply), ``pause --device KEY`` (no connection to that device); ``resume`` takes
the same. Without a target both list what is paused. ``limits`` shows the bandwidth limits, or
changes those given (``--send``/``--recv`` KiB/s, ``--lan``/``--no-lan``; with ``--device KEY``
that device's own; ``--reset``: back to the configuration). All through the control API
(``/v1/pause``, ``/v1/resume``, ``/v1/pauses``, ``/v1/limits``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .commands_show import kbps_text
from .control.client import Client
from .errors import UsageError


def add_parsers(sub: argparse._SubParsersAction, make: Any) -> None:
    """The three commands' parsers; ``make`` is cli's ``_sub``."""
    for name, verb in (("pause", "pause"), ("resume", "resume")):
        p = make(sub, name, f"{verb} a group, a folder or a device (kept across restarts)",
                 f"  cobox {name} photos\n  cobox {name} --folder photos\n  cobox {name} --device KEY\n"
                 + (f"  cobox {name}            list what is paused\n" if name == "pause" else ""))
        p.add_argument("group", nargs="?", help="a group: no replication for it while paused")
        p.add_argument("--folder", metavar="GROUP", help="the folder of that group: no scan, record or apply")
        p.add_argument("--device", metavar="KEY", help="a device (its peer key or id): no connection to it")
        p.add_argument("--json", action="store_true", help="machine-readable output")
    li = make(sub, "limits", "show or change bandwidth limits (KiB/s; 0: unlimited)",
              "  cobox limits\n  cobox limits --send 512 --recv 2048\n  cobox limits --lan\n"
              "  cobox limits --device KEY --send 128\n  cobox limits --reset\n")
    li.add_argument("--send", type=int, metavar="KBPS", help="most KiB/s sent (with --device: to it)")
    li.add_argument("--recv", type=int, metavar="KBPS", help="most KiB/s received (with --device: from it)")
    lan = li.add_mutually_exclusive_group()
    lan.add_argument("--lan", dest="lan", action="store_const", const=True, help="limit the local network too")
    lan.add_argument("--no-lan", dest="lan", action="store_const", const=False,
                     help="do not limit the local network (the default)")
    li.add_argument("--device", metavar="KEY", help="set this device's own limits (on the LAN too)")
    li.add_argument("--remove", action="store_true", help="with --device: drop its own limits")
    li.add_argument("--reset", action="store_true", help="back to the configuration's limits")
    li.add_argument("--json", action="store_true", help="machine-readable output")


def _target(args: argparse.Namespace) -> dict[str, str] | None:
    given = {k: v for k, v in (("group", args.group), ("folder", args.folder), ("device", args.device)) if v}
    if len(given) > 1:
        raise UsageError("give one of GROUP, --folder GROUP or --device KEY")
    return given or None


async def pause_command(api: Client, args: argparse.Namespace) -> int:
    target = _target(args)
    if target is None:
        if args.command == "resume":
            raise UsageError("resume what? give GROUP, --folder GROUP or --device KEY (`cobox pause` lists them)")
        return show_pauses(await api.get("/v1/pauses"), args.json)
    doc = await api.post(f"/v1/{args.command}", target)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    ((kind, name),) = target.items()
    print(f"{'paused' if args.command == 'pause' else 'resumed'} {kind} {name}")
    return 0


def show_pauses(doc: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    lines = [f"group   {g}" for g in doc["groups"]] + [f"folder  {f}" for f in doc["folders"]]
    lines += [f"device  {d['peer_key']}" for d in doc["devices"]]
    print("\n".join(lines) if lines else "nothing is paused")
    return 0


async def limits_command(api: Client, args: argparse.Namespace) -> int:
    change: dict[str, Any] = {}
    if args.reset:
        if args.send is not None or args.recv is not None or args.lan is not None or args.device:
            raise UsageError("--reset goes alone")
        change = {"reset": True}
    elif args.device:
        if args.lan is not None:
            raise UsageError("--lan/--no-lan is for the device-wide limits; a device's own apply on the LAN too")
        if args.remove:
            change = {"devices": {args.device: None}}
        else:
            own = {k: v for k, v in (("send_kbps", args.send), ("recv_kbps", args.recv)) if v is not None}
            if not own:
                raise UsageError("with --device, give --send and/or --recv (or --remove)")
            change = {"devices": {args.device: own}}
    else:
        if args.remove:
            raise UsageError("--remove goes with --device")
        for key, value in (("max_send_kbps", args.send), ("max_recv_kbps", args.recv), ("limit_lan", args.lan)):
            if value is not None:
                change[key] = value
    doc = await (api.request("PUT", "/v1/limits", change) if change else api.get("/v1/limits"))
    return show_limits(doc, args.json)


def show_limits(doc: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"send     {kbps_text(doc['max_send_kbps'])}")
    print(f"receive  {kbps_text(doc['max_recv_kbps'])}")
    print(f"LAN      {'limited too' if doc['limit_lan'] else 'not limited'}")
    for d in doc["devices"].values():
        print(f"device   {d['peer_key']}: send {kbps_text(d['send_kbps'])}, receive {kbps_text(d['recv_kbps'])}")
    source = "set at runtime (`cobox limits --reset`: the configuration)" if doc["source"] == "runtime" else \
        "the configuration"
    print(f"from     {source}")
    return 0
