"""The `cobox` command.

For now it has one subcommand, ``daemon``, which opens this device's store in the data
directory and stays in the foreground until SIGINT/SIGTERM. Networking, groups and the control
API arrive with the daemon issue; the CLI will then be a client of that API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import platformdirs

from storage import StorageError, Store

log = logging.getLogger("cobox")


def default_home() -> Path:
    env = os.environ.get("COBOX_HOME")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("cobox", appauthor=False))


async def run_daemon(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(home)
    try:
        feeds = store.feeds()
        print(f"cobox: store {store.path} open, {len(feeds)} feed(s); Ctrl-C to stop", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cobox", description="peer-to-peer sync and backup")
    parser.add_argument("--home", type=Path, default=None, help="data directory")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("daemon", help="run in the foreground")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    home = args.home or default_home()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_daemon(home))
    except StorageError as e:
        print(f"cobox: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
