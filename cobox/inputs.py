"""What a user typed, made into what the control API takes (used by :mod:`cobox.commands`).

Each helper accepts the forms a person is likely to type and refuses the rest with a message
that names the expected form: ``HOST:PORT`` for a peer, a path inside the folder for a file,
text on stdin without the newline that ``echo`` adds.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .control.client import Client
from .errors import UsageError


async def folder_file(api: Client, group: str, file: str) -> str:
    """A file of a group's folder as the API names it: relative paths as given; an absolute path
    (or ``~/...``) inside the folder made relative to it; one outside it refused."""
    from urllib.parse import quote

    path = Path(file).expanduser()
    if not path.is_absolute():
        return file
    root = Path((await api.get(f"/v1/folders/{quote(group, safe='')}"))["path"])
    for candidate in (path, path.resolve()):  # as typed, then through symlinks
        with contextlib.suppress(ValueError):
            return candidate.relative_to(root).as_posix()
    raise UsageError(f"{file} is not inside the folder of {group} ({root})")


def stdin_text() -> str:
    """What stdin holds, less one trailing newline (the one `echo` or an editor adds)."""
    text = sys.stdin.read()
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


PEER_ADDRESS_FORMS = "HOST:PORT (e.g. 127.0.0.1:47100), [IPV6]:PORT, or tcp:HOST:PORT~noise:KEY"


def peer_address(text: str) -> str:
    """``HOST:PORT`` (or ``[IPV6]:PORT``) means ``tcp:HOST:PORT``; a full address is kept. Checked
    here so that a mistyped one is refused with the forms that are expected."""
    from networker import AddressError
    from networker import parse_address as parse

    address = text.strip()
    if not address.startswith(("tcp:", "unix:")):
        address = f"tcp:{address}"
    try:
        parse(address)
    except AddressError as e:
        raise UsageError(f"bad peer address {text!r} ({e}); expected {PEER_ADDRESS_FORMS}") from None
    return address
