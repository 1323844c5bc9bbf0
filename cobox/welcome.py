"""What a new user is told at the end of the daemon's first run (a home with no identity yet)."""

from __future__ import annotations

from .paths import Home, default_home

FIRST_RUN = """cobox: first run: a new device identity is in {home} (back that directory up).
cobox: what to do next:
cobox:   cobox{flag} group create NAME            a new group; share the invite it prints, or
cobox:   cobox{flag} group join < invite.txt      join a group from another device's invite
cobox:   cobox{flag} folder add NAME ~/Folder     sync a folder with the group
cobox:   cobox{flag} open                         the dashboard in your browser
cobox:   cobox{flag} status                       what this daemon sees; `cobox --help` for more"""


def next_steps(home: Home) -> str:
    """The first-run text, with ``--home`` in the commands when the home is not the default."""
    flag = "" if home.root == default_home().expanduser().resolve() else f" --home {home.root}"
    return FIRST_RUN.format(home=home.root, flag=flag)
