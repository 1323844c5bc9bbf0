"""The ``cobox`` command: argument parsing and dispatch.

Every command but ``daemon`` (and ``demo``, which runs daemons) is a client of the daemon's
control API. Exit codes: 0 success, 1 failure, 2 usage error; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from . import commands
from .errors import CoboxError
from .paths import Home, default_home


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cobox", description="Peer-to-peer sync and backup, end-to-end encrypted.")
    p.add_argument("--home", type=Path, default=None,
                   help="data directory (default: $COBOX_HOME or the platform's user data dir)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("daemon", help="run the daemon in the foreground")
    d.add_argument("--listen", action="append", metavar="ADDR", help="peer address to listen on (repeatable)")
    d.add_argument("--dht-port", type=int, metavar="N", help="UDP port of the DHT node")
    d.add_argument("--dht-host", metavar="HOST", help="address the DHT node binds to")
    d.add_argument("--bootstrap", action="append", metavar="HOST:PORT", help="DHT bootstrap node (repeatable)")
    d.add_argument("--no-lan", action="store_true", help="no LAN (mDNS) discovery")
    d.add_argument("--no-dht", action="store_true", help="no DHT")
    d.add_argument("--api-port", type=int, metavar="N", help="port of the control API on 127.0.0.1")

    sub.add_parser("start", help="start the daemon in the background")
    sub.add_parser("stop", help="stop the daemon gracefully")
    s = sub.add_parser("status", help="identity, addresses, groups, peers")
    s.add_argument("--json", action="store_true")

    g = sub.add_parser("group", help="create, join, list, invite, leave groups")
    gs = g.add_subparsers(dest="action", required=True, metavar="ACTION")
    gs.add_parser("create", help="create a group and print its invite URI").add_argument("name")
    j = gs.add_parser("join", help="join a group from an invite URI (best given on stdin)")
    j.add_argument("uri", nargs="?", default="-", metavar="URI|-",
                   help="'-' or nothing: read it from stdin, or ask for it (not shown) on a terminal")
    j.add_argument("--name")
    gs.add_parser("list", help="groups on this device").add_argument("--json", action="store_true")
    i = gs.add_parser("invite", help="print a group's invite URI")
    i.add_argument("name")
    i.add_argument("--seed", action="store_true", help="the backup-peer URI (replicates, cannot read)")
    gs.add_parser("leave", help="leave a group").add_argument("name")

    lg = sub.add_parser("log", help="the group log")
    ls = lg.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ls.add_parser("append", help="append an entry ('-' reads stdin)")
    a.add_argument("group")
    a.add_argument("text")
    c = ls.add_parser("cat", help="print the group's entries from every member")
    c.add_argument("group")
    c.add_argument("--json", action="store_true")
    c.add_argument("--follow", action="store_true", help="keep printing new entries")

    pe = sub.add_parser("peers", help="connected peers")
    pe.add_argument("--json", action="store_true")
    pes = pe.add_subparsers(dest="action", metavar="ACTION")
    pes.add_parser("add", help="connect to a peer address directly").add_argument("address")

    sy = sub.add_parser("sync", help="wait for a group to be in sync")
    sys_ = sy.add_subparsers(dest="action", required=True, metavar="ACTION")
    w = sys_.add_parser("wait", help="wait until this device holds what its peers have")
    w.add_argument("group")
    w.add_argument("--timeout", type=float, default=300.0, metavar="S")

    se = sub.add_parser("seed", help="back up a group: `seed [URI|-]` (the URI best on stdin), "
                        "`seed list [--json]`, `seed remove NAME`")
    se.add_argument("what", nargs="?", default="-", metavar="URI|-|list|remove",
                    help="'-' or nothing: read the seed URI from stdin, or ask for it (not shown) on a terminal")
    se.add_argument("name", nargs="?", help="the group to remove")
    se.add_argument("--json", action="store_true")

    b = sub.add_parser("backup", help="what backup peers hold of this device's data")
    bs = b.add_subparsers(dest="action", required=True, metavar="ACTION")
    st = bs.add_parser("status", help="per backup peer and feed: how far it is held")
    st.add_argument("group")
    st.add_argument("--json", action="store_true")

    fo = sub.add_parser("folder", help="sync a folder with a group")
    fs = fo.add_subparsers(dest="action", required=True, metavar="ACTION")
    fa = fs.add_parser("add", help="bind a folder to a group (its files are imported)")
    fa.add_argument("group")
    fa.add_argument("path")
    fs.add_parser("list", help="bound folders").add_argument("--json", action="store_true")
    fs.add_parser("remove", help="unbind a group's folder (files stay)").add_argument("group")
    fst = fs.add_parser("status", help="files, bytes, pending up/down, conflicts")
    fst.add_argument("group")
    fst.add_argument("--json", action="store_true")
    fh = fs.add_parser("history", help="every version of a file")
    fh.add_argument("group")
    fh.add_argument("file")
    fh.add_argument("--json", action="store_true")
    fr = fs.add_parser("restore", help="bring back a version of a file")
    fr.add_argument("group")
    fr.add_argument("file")
    fr.add_argument("--version", metavar="V", help="a version from `folder history` (default: the latest)")
    fr.add_argument("--to", metavar="PATH", help="write it there instead of restoring in place")

    k = sub.add_parser("keys", help="back up this device's keys on a backup peer, or restore them")
    ks = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("backup", "store the keyring, encrypted under a password"),
                         ("restore", "recover the keyring on a fresh home")):
        kp = ks.add_parser(action, help=text)
        kp.add_argument("--peer", required=True, metavar="ADDR",
                        help="the backup peer's full address, with ~noise:KEY (`cobox status` there)")
        kp.add_argument("--trust-first-use", action="store_true",
                        help="accept an address without ~noise:KEY and print the key the peer presents")
        kp.add_argument("--user", required=True, metavar="NAME")
        kp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    o = sub.add_parser("open", help="open the web dashboard in the browser (one-time login link)")
    o.add_argument("--no-browser", action="store_true",
                   help="only print the link (paste it into the address bar; never pass it on a command line)")

    sub.add_parser("demo", help="three daemons on this machine replicating a group, live")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = Home((args.home or default_home()).expanduser().resolve())
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(commands.run(args, home))
        return 130
    except CoboxError as e:
        print(f"cobox: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cobox: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
