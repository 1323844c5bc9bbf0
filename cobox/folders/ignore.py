"""Which paths of a folder are not synced: this device's ``.coboxignore`` plus cobox's own files.

Theory of operation
-------------------
Ignore rules are a device's own. ``.coboxignore`` at the root of the folder uses gitignore
syntax (``pathspec``'s ``GitIgnoreSpec``: ``*.tmp``, ``build/``, ``!keep.tmp``, ``/root-only``,
``**/cache``) and is itself *not synced*, as Syncthing's ``.stignore``: the scanner never records
it and the planner never applies a remote operation to it (it matches :meth:`IgnoreRules.match`
like an ignored path, so both sides leave it alone). Otherwise a member could replace it with an
empty file and make every other device upload what it had excluded. A nested ``.coboxignore``
is an ordinary file (one rules file, at the root).

Sharing patterns on purpose: a line ``#include PATH`` (a comment to gitignore) names a folder
file, typically a synced one such as ``shared.ignore``, whose patterns are *added*. An included
file can only add exclusions: a path is ignored when the local patterns ignore it **or** the
included ones do, and negations (``!pattern``) in an included file are dropped with a log line,
so nothing a remote device writes there can un-ignore a local exclusion. Included files do not
include further (``#include`` inside one is a comment), are read up to ``MAX_INCLUDE_BYTES``, and
a missing or unreadable one adds nothing (logged).

Always ignored, whatever the files say: the applier's temporary files (``paths.TMP_PREFIX``, at
any depth) and ``ALWAYS`` (cobox's per-folder state directory and common OS litter).

``IgnoreRules.match(path, is_dir)`` takes a folder path (``/``-separated, relative); a directory
is matched with a trailing slash, so ``build/`` patterns prune it during a scan.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pathspec

from cobox.errors import InvalidPathError

from .paths import TMP_PREFIX, normalize_path

log = logging.getLogger(__name__)

IGNORE_FILE = ".coboxignore"
INCLUDE = "#include"
MAX_INCLUDE_BYTES = 256 * 1024
MAX_INCLUDES = 16
ALWAYS = (f"{TMP_PREFIX}*", ".cobox/", ".DS_Store", "Thumbs.db")


def include_targets(text: str) -> list[str]:
    """The paths named by ``#include`` lines of a local rules file, in order (at most ``MAX_INCLUDES``)."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith(INCLUDE + " "):
            target = line[len(INCLUDE) + 1:].strip()
            if target and target not in out:
                out.append(target)
    if len(out) > MAX_INCLUDES:
        log.warning("%s: only the first %d #include lines are used", IGNORE_FILE, MAX_INCLUDES)
    return out[:MAX_INCLUDES]


def additive_lines(text: str, source: str) -> list[str]:
    """The patterns of an included file that can only add exclusions: negations are dropped."""
    lines = []
    for line in text.splitlines():
        if line.startswith("!"):
            log.warning("%s: ignoring %r: an included file can only add exclusions, not remove them", source, line)
            continue
        lines.append(line)
    return lines


class IgnoreRules:
    """``text``: this device's own rules; ``included``: ``(name, text)`` of included files (additive)."""

    def __init__(self, text: str = "", included: tuple[tuple[str, str], ...] = ()) -> None:
        self.text = text
        self._always = pathspec.GitIgnoreSpec.from_lines(ALWAYS)
        self._spec = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
        extra: list[str] = []
        for name, inc in included:
            extra += additive_lines(inc, name)
        self._included = pathspec.GitIgnoreSpec.from_lines(extra) if extra else None

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """The rules of the folder at ``root`` (none if it has no readable ``.coboxignore``)."""
        try:
            text = (root / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return cls()
        except OSError as e:
            log.warning("cannot read %s: %s (ignoring nothing)", root / IGNORE_FILE, e)
            return cls()
        included = []
        for target in include_targets(text):
            inc = _read_include(root, target)
            if inc is not None:
                included.append((target, inc))
        return cls(text, tuple(included))

    def match(self, path: str, is_dir: bool = False) -> bool:
        """Whether ``path`` (a directory if ``is_dir``) is excluded from sync."""
        p = path + "/" if is_dir and not path.endswith("/") else path
        if self._always.match_file(p) or path == IGNORE_FILE:
            return True  # the local rules file itself is never synced
        if self._spec.match_file(p):
            return True
        return self._included is not None and self._included.match_file(p)

    def __call__(self, path: str) -> bool:
        """Whether a file path, or any directory above it, is excluded (for ``plan``)."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.match("/".join(parts[:i]), is_dir=True):
                return True
        return self.match(path)


def _read_include(root: Path, target: str) -> str | None:
    """The text of an included folder file, or None (logged) if it is not a readable regular file
    inside the folder."""
    try:
        rel = normalize_path(target)
    except InvalidPathError as e:
        log.warning("%s: cannot include %r: %s", IGNORE_FILE, target, e)
        return None
    if rel == IGNORE_FILE:
        return None
    path = root / rel
    try:
        inside = Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
        if not inside or path.is_symlink() or not path.is_file():
            log.warning("%s: included file %r is missing or not a regular file (adds nothing)", IGNORE_FILE, rel)
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_INCLUDE_BYTES + 1)
    except OSError as e:
        log.warning("%s: cannot read included file %r: %s (adds nothing)", IGNORE_FILE, rel, e)
        return None
    if len(data) > MAX_INCLUDE_BYTES:
        log.warning("%s: included file %r is larger than %d bytes; only its start is used", IGNORE_FILE, rel,
                    MAX_INCLUDE_BYTES)
        data = data[:MAX_INCLUDE_BYTES].rsplit(b"\n", 1)[0]
    return data.decode("utf-8", errors="replace")
