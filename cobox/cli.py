"""The ``cobox`` command: argument parsing and dispatch.

Every command but ``daemon`` (and ``demo``, which runs daemons) is a client of the daemon's
control API. Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted; errors are one
line on stderr. Global options (``--home``) are accepted before or after the command. Output cut
short by its reader (``cobox status --json | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

from networker import NetworkError
from storage.errors import StorageError, StoreCorruptError

from . import commands, commands_controls
from .commands_devices_remove import add_parser as add_device_remove
from .errors import CoboxError
from .paths import Home, default_home
from .version import __version__

HOME_HELP = "data directory (default: $COBOX_HOME or the platform's user data dir, e.g. ~/.local/share/cobox)"

EXAMPLES = """\
examples:
  cobox start                                  start the daemon in the background
  cobox group create photos                    make a group; prints its invite URI
  cobox group join < invite.txt                join from an invite kept in a file
  cobox peers add 192.168.1.20:47100           connect to a device directly (HOST:PORT)
  cobox folder add photos ~/Pictures           sync a folder with the group
  cobox pause photos / cobox resume photos     stop and restart replicating a group
  cobox limits --send 512 --recv 2048          bandwidth limits in KiB/s
  cobox status --home /tmp/other-home          global options may come after the command
  cobox stop

Run `cobox COMMAND --help` (and `cobox COMMAND ACTION --help`) for each command's options.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; shows defaults that are set."""


def _leave_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("-y", "--yes", action="store_true", help=f"{prefix}do not ask before deleting the group's data")
    p.add_argument("--keep-data", action="store_true",
                   help=f"{prefix}keep the group's feeds and records in the store (nothing is deleted)")


def _sub(parent: argparse._SubParsersAction, name: str, help: str, examples: str = "",
         **kw: object) -> argparse.ArgumentParser:
    epilog = f"examples:\n{examples}" if examples else None
    return parent.add_parser(name, help=help, description=help, epilog=epilog,  # type: ignore[arg-type]
                             formatter_class=_Formatter, **kw)


def _folder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", choices=("send-receive", "send-only", "receive-only"),
                   help="send-receive (default): both ways; send-only: local changes go out, remote ones are not "
                        "applied here; receive-only: remote changes come in, local ones do not go out")
    p.add_argument("--rescan-interval", type=float, metavar="SECONDS",
                   help="seconds between two full rescans (default: folders.rescan_interval)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cobox", description="Peer-to-peer sync and backup, end-to-end encrypted.",
                                epilog=EXAMPLES, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"cobox {__version__}")
    p.add_argument("--home", type=Path, default=None, help=HOME_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = _sub(sub, "daemon", "run the daemon in the foreground",
             "  cobox daemon\n  cobox daemon --listen tcp:0.0.0.0:47100 --no-dht\n")
    d.add_argument("--listen", action="append", metavar="ADDR",
                   help="peer address to listen on, e.g. tcp:0.0.0.0:47100 or tcp:[::]:0 (repeatable)")
    d.add_argument("--dht-port", type=int, metavar="N", help="UDP port of the DHT node (0-65535)")
    d.add_argument("--dht-host", metavar="HOST", help="address the DHT node binds to, e.g. 0.0.0.0")
    d.add_argument("--bootstrap", action="append", metavar="HOST:PORT",
                   help="DHT bootstrap node, e.g. 203.0.113.5:6881 (repeatable)")
    d.add_argument("--no-lan", action="store_true", help="no LAN (mDNS) discovery")
    d.add_argument("--no-dht", action="store_true", help="no DHT")
    d.add_argument("--api-port", type=int, metavar="N", help="port of the control API on 127.0.0.1 (0: any free)")
    d.add_argument("--log-file", metavar="PATH",
                   help="log there, rotated at 10 MiB keeping 3 (`cobox start` gives HOME/daemon.log)")

    _sub(sub, "start", "start the daemon in the background (log in HOME/daemon.log)", "  cobox start\n")
    _sub(sub, "stop", "stop the daemon gracefully", "  cobox stop\n")
    lo = _sub(sub, "logs", "the daemon log of this home (HOME/daemon.log, written by `cobox start`)",
              "  cobox logs\n  cobox logs -n 200\n  cobox logs --follow\n")
    lo.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="show the last N lines (50)")
    lo.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (until Ctrl-C)")
    sv = _sub(sub, "service", "run cobox as a systemd user service (install); keep groups for others (invite, list, "
              "revoke)")
    svs = sv.add_subparsers(dest="action", required=True, metavar="ACTION")
    si = _sub(svs, "install", "write ~/.config/systemd/user/cobox.service for this cobox (Type=notify)",
              "  cobox service install && systemctl --user daemon-reload && systemctl --user enable --now cobox\n"
              "  cobox --home ~/cobox-backup service install --print\n")
    si.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    sinv = _sub(svs, "invite", "backup as a service: print a cobox://backup/... invite for a member "
                "(`cobox backup add GROUP URI` there); defaults from [hosting]",
                "  cobox service invite --quota-mb 20000 --groups 3 --expires 7 --label 'grandma'\n")
    sinv.add_argument("--quota-mb", type=float, metavar="N", help="MiB for all its groups together (0: no limit)")
    sinv.add_argument("--groups", type=int, metavar="N", help="how many groups it may add (0: no limit)")
    sinv.add_argument("--expires", type=float, metavar="DAYS", help="days it can add groups (0: forever)")
    sinv.add_argument("--label", default="", metavar="TEXT", help="a note for `service list` (who it is for)")
    _sub(svs, "list", "service invites: who uses them, groups, bytes held, quota",
         "  cobox service list\n  cobox service list --json\n") \
        .add_argument("--json", action="store_true", help="machine-readable output")
    _sub(svs, "revoke", "end an invite or a device: no new data; what is held is cleared after "
         "[hosting] revoke_grace_days", "  cobox service revoke 3f2a9c01\n") \
        .add_argument("what", metavar="INVITE|DEVICE", help="an invite id or device id (or a prefix, 6+ hex digits)")
    s = _sub(sub, "status", "identity, addresses, groups, peers",
             "  cobox status\n  cobox status --verbose\n  cobox status --json\n")
    s.add_argument("--json", action="store_true", help="machine-readable output (exact numbers)")
    s.add_argument("-v", "--verbose", action="store_true", help="also each group's feeds and entries")

    g = _sub(sub, "group", "create, join, list, invite, leave groups")
    gs = g.add_subparsers(dest="action", required=True, metavar="ACTION")
    _sub(gs, "create", "create a group and print its invite URI", "  cobox group create photos > invite.txt\n") \
        .add_argument("name", help="a name for the group on this device")
    j = _sub(gs, "join", "join a group from an invite URI (best given on stdin)",
             "  cobox group join < invite.txt\n  cobox group join --name photos < invite.txt\n")
    j.add_argument("uri", nargs="?", default="-", metavar="URI|-",
                   help="'-' or nothing: read it from stdin, or ask for it (not shown) on a terminal")
    j.add_argument("--name", help="the name to give the group here (default: the one in the invite)")
    _sub(gs, "list", "groups on this device").add_argument("--json", action="store_true", help="machine-readable")
    i = _sub(gs, "invite", "print a group's invite URI", "  cobox group invite photos\n"
             "  cobox group invite photos --seed   for a backup peer\n")
    i.add_argument("name", help="the group")
    i.add_argument("--seed", action="store_true", help="the backup-peer URI (replicates, cannot read)")
    lv = _sub(gs, "leave", "leave a group and delete what this device stored for it",
              "  cobox group leave photos\n  cobox group leave photos --yes\n  cobox group leave photos --keep-data\n")
    lv.add_argument("name", help="the group")
    _leave_options(lv)

    lg = _sub(sub, "log", "the group log")
    ls = lg.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = _sub(ls, "append", "append an entry", "  cobox log append notes 'hello'\n"
             "  echo hello | cobox log append notes -   (one trailing newline is dropped)\n")
    a.add_argument("group", help="the group")
    a.add_argument("text", help="the entry's text, or '-' to read it from stdin")
    c = _sub(ls, "cat", "print the group's entries from every member",
             "  cobox log cat notes\n  cobox log cat notes --follow\n")
    c.add_argument("group", help="the group")
    c.add_argument("--json", action="store_true", help="one JSON object per line")
    c.add_argument("--follow", action="store_true", help="keep printing new entries (until Ctrl-C or stop)")

    pe = _sub(sub, "peers", "connected and known peers",
              "  cobox peers\n  cobox peers add 127.0.0.1:47100\n  cobox peers remove 192.168.1.20:47100\n")
    pe.add_argument("--json", action="store_true", help="machine-readable output")
    pes = pe.add_subparsers(dest="action", metavar="ACTION")
    _sub(pes, "add", "connect to a peer address and keep it: redialled after restarts and drops",
         "  cobox peers add 192.168.1.20:47100\n  cobox peers add 'tcp:[fe80::1]:47100'\n") \
        .add_argument("address", help="HOST:PORT, [IPV6]:PORT, or a full address tcp:HOST:PORT~noise:KEY")
    _sub(pes, "remove", "forget a known peer (no more redials) and close its connection",
         "  cobox peers remove 192.168.1.20:47100\n  cobox peers remove 3f9a2c\n") \
        .add_argument("peer", help="its address, key, or the start of its hex id (as `cobox peers` shows)")

    sy = _sub(sub, "sync", "wait for a group to be in sync")
    sys_ = sy.add_subparsers(dest="action", required=True, metavar="ACTION")
    w = _sub(sys_, "wait", "wait until this device holds what its peers have",
             "  cobox sync wait photos --timeout 60\n")
    w.add_argument("group", help="the group")
    w.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up after S seconds (300)")

    se = _sub(sub, "seed", "back up a group: `seed [URI|-] [NAME]` (the URI best on stdin), "
              "`seed list [--json]`, `seed remove NAME`",
              "  cobox seed < seed-invite.txt\n  cobox seed - photos-backup < seed-invite.txt\n"
              "  cobox seed list\n  cobox seed remove photos-backup\n")
    se.add_argument("what", nargs="?", default="-", metavar="URI|-|list|remove",
                    help="'-' or nothing: read the seed URI from stdin, or ask for it (not shown) on a terminal")
    se.add_argument("name", nargs="?", help="with a URI: the name to give it here; with remove: the group to remove")
    se.add_argument("--json", action="store_true", help="with list: machine-readable output")
    _leave_options(se, "with remove: ")

    dv = _sub(sub, "device", "this device's name; the devices of a group")
    dvs = dv.add_subparsers(dest="action", required=True, metavar="ACTION")
    _sub(dvs, "rename", "rename this device (every group is told)", "  cobox device rename laptop\n") \
        .add_argument("name", help="the new name (up to 64 bytes; overrides [device] name)")
    dl = _sub(dvs, "list", "every device of a group: name, id, role, connected, feeds held",
              "  cobox device list photos\n  cobox device list photos --json\n")
    dl.add_argument("group", help="the group")
    dl.add_argument("--json", action="store_true", help="machine-readable output (exact ids)")
    add_device_remove(dvs, _sub)

    b = _sub(sub, "backup", "what backup peers hold of this device's data")
    bs = b.add_subparsers(dest="action", required=True, metavar="ACTION")
    st = _sub(bs, "status", "per backup peer and feed: how far it is held", "  cobox backup status photos\n")
    st.add_argument("group", help="the group")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ba = _sub(bs, "add", "have a backup host keep a group, by its service invite (best given on stdin)",
              "  cobox backup add photos < service-invite.txt\n")
    ba.add_argument("group", help="the group")
    ba.add_argument("uri", nargs="?", default="-", metavar="URI|-",
                    help="'-' or nothing: read it from stdin, or ask for it (not shown) on a terminal")
    _sub(bs, "list", "each group's backup hosts: state, use, quota, receipts and audit",
         "  cobox backup list\n  cobox backup list --json\n") \
        .add_argument("--json", action="store_true", help="machine-readable output")
    br = _sub(bs, "remove", "ask a backup host to drop a group", "  cobox backup remove photos 3f2a9c01\n")
    br.add_argument("group", help="the group")
    br.add_argument("host", help="the host's id, or a prefix of it (`cobox backup list`)")

    fo = _sub(sub, "folder", "sync a folder with a group")
    fs = fo.add_subparsers(dest="action", required=True, metavar="ACTION")
    fa = _sub(fs, "add", "bind a folder to a group (its files are imported)", "  cobox folder add photos ~/Pictures\n")
    fa.add_argument("group", help="the group")
    fa.add_argument("path", help="the folder (made if missing)")
    _folder_options(fa)
    fse = _sub(fs, "set", "change a folder's type or rescan interval",
               "  cobox folder set photos --type receive-only\n  cobox folder set photos --rescan-interval 600\n")
    fse.add_argument("group", help="the group")
    _folder_options(fse)
    for action, text, example in (
            ("rescan", "scan the folder now (answers when the scan is done)", "rescan photos"),
            ("override", "send-only: make the group take this device's files (overrides remote changes)",
             "override photos"),
            ("revert", "receive-only: make this device's files the group's again (drops local changes)",
             "revert photos")):
        _sub(fs, action, text, f"  cobox folder {example}\n").add_argument("group", help="the group")
    fa.add_argument("--history-days", type=float, metavar="N",
                    help="keep replaced and deleted versions N days here (default: [folders] history_days)")
    fp = _sub(fs, "prune", "drop the history older than the folder's retention now, and say what it freed",
              "  cobox folder prune photos\n")
    fp.add_argument("group", help="the group")
    fp.add_argument("--json", action="store_true", help="machine-readable output (exact numbers)")
    _sub(fs, "list", "bound folders").add_argument("--json", action="store_true", help="machine-readable")
    _sub(fs, "remove", "unbind a group's folder (files stay)").add_argument("group", help="the group")
    fst = _sub(fs, "status", "files, bytes, pending up/down, conflicts", "  cobox folder status photos\n")
    fst.add_argument("group", help="the group")
    fst.add_argument("--json", action="store_true", help="machine-readable output")
    fh = _sub(fs, "history", "every version of a file",
              "  cobox folder history photos 2024/cat.jpg\n  cobox folder history photos ~/Pictures/2024/cat.jpg\n")
    fh.add_argument("group", help="the group")
    fh.add_argument("file", help="the file: relative to the folder, or an absolute path inside it")
    fh.add_argument("--json", action="store_true", help="machine-readable output")
    fr = _sub(fs, "restore", "bring back a version of a file",
              "  cobox folder restore photos 2024/cat.jpg\n"
              "  cobox folder restore photos 2024/cat.jpg --version 3-1a2b3c4d --to /tmp/cat.jpg\n")
    fr.add_argument("group", help="the group")
    fr.add_argument("file", help="the file: relative to the folder, or an absolute path inside it")
    fr.add_argument("--version", metavar="V", help="a version from `folder history` (default: the latest)")
    fr.add_argument("--to", metavar="PATH", help="write it there (a file, or a directory to put it in) instead of "
                    "restoring in place")
    fr.add_argument("--force", action="store_true", help="with --to: replace a file that is already there")

    k = _sub(sub, "keys", "back up this device's keys on a backup peer, or restore them")
    ks = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("backup", "store the keyring, encrypted under a password"),
                         ("restore", "recover the keyring on a fresh home")):
        kp = _sub(ks, action, text, f"  cobox keys {action} --peer tcp:203.0.113.5:47100~noise:KEY --user alice\n")
        kp.add_argument("--peer", required=True, metavar="ADDR",
                        help="the backup peer's full address, with ~noise:KEY (`cobox status` there)")
        kp.add_argument("--trust-first-use", action="store_true",
                        help="accept an address without ~noise:KEY and print the key the peer presents")
        kp.add_argument("--user", required=True, metavar="NAME", help="the name the keyring is kept under")
        kp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if action == "restore":
            kp.add_argument("--force", action="store_true",
                            help="replace this home's identity even if it is in use (the old key is kept as "
                                 "identity.key.replaced-<time>)")
            kp.add_argument("--yes", action="store_true", help="bind the keyring's folders without asking")
    o = _sub(sub, "open", "open the web dashboard in the browser (one-time login link)", "  cobox open\n")
    o.add_argument("--no-browser", action="store_true",
                   help="only print the link (paste it into the address bar; never pass it on a command line)")

    commands_controls.add_parsers(sub, _sub)
    _sub(sub, "demo", "three daemons on this machine replicating a group, live", "  cobox demo\n")
    _global_options_everywhere(p)
    return p


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``--home`` follow any command (``cobox status --home X``). On a subcommand the default
    is SUPPRESS, so a ``--home`` given before the command is not overwritten by its absence."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("--home", type=Path, default=argparse.SUPPRESS, help=HOME_HELP)
                _global_options_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = Home((args.home or default_home()).expanduser().resolve())
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(commands.run(args, home))
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except (CoboxError, StorageError, NetworkError) as e:
        print(f"cobox: {e}{_advice(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cobox: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 1


def _advice(e: Exception) -> str:
    """What to do about an error whose message alone does not say."""
    if isinstance(e, StoreCorruptError) and "newer than this cobox" in str(e):
        return (f"; a newer cobox (this is {__version__}) used this home: upgrade cobox "
                "(`pipx upgrade cobox`, or `git pull && make run`), or give another --home")
    return ""


def _reader_went_away() -> int:
    """stdout's reader closed it (``| head``): nothing to say. stdout is pointed at /dev/null so
    that flushing it at exit cannot raise again; the exit code is the shell's for SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def run() -> None:
    """The console script and ``python -m cobox``."""
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:
        rc = _reader_went_away()
    sys.exit(rc)


if __name__ == "__main__":
    run()
