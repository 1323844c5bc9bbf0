"""What each ``cobox`` command does (parsing is in :mod:`cobox.cli`): :func:`run` dispatches to one
module per command group (``commands_daemon``, ``commands_groups``, ``commands_folders``,
``commands_keys``; printing in ``commands_show``); ``cobox open`` is here."""

from __future__ import annotations

import argparse
import sys

from .commands_controls import limits_command, pause_command
from .commands_daemon import daemon, service_command, start, stop
from .commands_devices import device
from .commands_folders import folder
from .commands_groups import backup_status, group, log_command, seed, sync_wait
from .commands_hosting import backup_command, hosting_command
from .commands_keys import keep_current, keys
from .commands_show import quote_name, show_peers, show_status
from .control.client import Client
from .errors import UsageError
from .inputs import peer_address
from .paths import Home, write_private


async def run(args: argparse.Namespace, home: Home) -> int:
    cmd = args.command
    if cmd == "daemon":
        while True:  # a key restore restarts the daemon under the recovered identity
            rc, restart = await daemon(args, home)
            if not restart:
                return rc
    if cmd == "start":
        return await start(home)
    if cmd == "service" and args.action == "install":
        return service_command(args, home)
    if cmd == "logs":
        from .logs import show

        return await show(home.log, args.lines, args.follow)
    if cmd == "demo":
        from .demo import demo

        return await demo()
    async with Client(home) as api:
        if cmd == "stop":
            return await stop(api, home)
        if cmd == "status":
            return show_status(await api.get("/v1/status"), args.json, args.verbose)
        if cmd == "group":
            rc = await group(api, args)
            if args.action in ("create", "join", "leave"):
                await keep_current(api)
            return rc
        if cmd == "log":
            return await log_command(api, args)
        if cmd == "device" and args.action == "remove":
            from .commands_devices_remove import remove

            return await remove(api, args)
        if cmd == "peers":
            if args.action == "add":
                peer = await api.post("/v1/peers", {"address": peer_address(args.address)})
                print(f"connected to {peer['peer_id']}; kept as a known peer (redialled when it drops)")
                return 0
            if args.action == "remove":
                gone = await api.delete(f"/v1/peers/known/{quote_name(args.peer)}")
                print(f"forgot {gone['forgot']}")
                return 0
            return show_peers(await api.get("/v1/peers"), args.json, await api.get("/v1/peers/known"))
        if cmd == "sync":
            return await sync_wait(api, args.group, args.timeout)
        if cmd == "seed":
            rc = await seed(api, args)
            if args.what != "list":
                await keep_current(api)
            return rc
        if cmd == "backup":
            if args.action == "status":
                return await backup_status(api, args.group, args.json)
            return await backup_command(api, args)
        if cmd == "service":
            return await hosting_command(api, args)
        if cmd == "device":
            return await device(api, args)
        if cmd == "keys":
            return await keys(api, args, home)
        if cmd == "folder":
            rc = await folder(api, args)
            if args.action in ("add", "remove"):
                await keep_current(api)
            return rc
        if cmd in ("pause", "resume"):
            return await pause_command(api, args)
        if cmd == "limits":
            return await limits_command(api, args)
        if cmd == "open":
            return await open_dashboard(api, home, args.no_browser)
    raise UsageError(f"unknown command {cmd}")


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url={url}"><title>cobox: logging in</title></head>
<body><p>Opening the cobox dashboard&hellip; <a href="{url}">continue</a></p></body></html>
"""


async def open_dashboard(api: Client, home: Home, no_browser: bool) -> int:
    """Log in to the dashboard with a one-time link that never shows on a command line.

    The link (``http://127.0.0.1:PORT/#code=...``) goes into a 0600 page in the 0700 home that
    redirects to it; the browser is started with that page's path, which is all that another
    user sees in the process list, and cannot read. With ``--no-browser`` the link is printed."""
    import html

    link = await api.post("/v1/login-link")
    if no_browser:
        print(link["url"], flush=True)
        return 0
    page = home.login_page
    write_private(page, LOGIN_PAGE.format(url=html.escape(link["url"], quote=True)).encode())
    import webbrowser

    if webbrowser.open(page.as_uri()):
        print(f"cobox: opened the dashboard in the browser (the login in {page} is valid once, "
              f"for {link['expires_in']:.0f}s)")
    else:
        print(f"cobox: no browser found; open {page.as_uri()} in one within {link['expires_in']:.0f}s "
              "(or use --no-browser and paste the link into the address bar)", file=sys.stderr)
    return 0
