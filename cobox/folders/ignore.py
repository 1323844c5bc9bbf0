"""Which paths of a folder are not synced: ``.coboxignore`` plus cobox's own files.

Theory of operation
-------------------
``.coboxignore`` at the root of the folder uses gitignore syntax (``pathspec``'s
``GitIgnoreSpec``: ``*.tmp``, ``build/``, ``!keep.tmp``, ``/root-only``, ``**/cache``). It is a
synced file like any other, so members share their ignore rules; a nested ``.coboxignore``
has no effect (one file, at the root). Always ignored, whatever the file says: the applier's
temporary files (``paths.TMP_PREFIX``, at any depth) and ``ALWAYS`` (cobox's per-folder state
directory and common OS litter).

``IgnoreRules.match(path, is_dir)`` takes a folder path (``/``-separated, relative); a directory
is matched with a trailing slash, so ``build/`` patterns prune it during a scan.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pathspec

from .paths import TMP_PREFIX

log = logging.getLogger(__name__)

IGNORE_FILE = ".coboxignore"
ALWAYS = (f"{TMP_PREFIX}*", ".cobox/", ".DS_Store", "Thumbs.db")


class IgnoreRules:
    def __init__(self, text: str = "") -> None:
        self.text = text
        self._always = pathspec.GitIgnoreSpec.from_lines(ALWAYS)
        self._spec = pathspec.GitIgnoreSpec.from_lines(text.splitlines())

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """The rules of the folder at ``root`` (none if it has no readable ``.coboxignore``)."""
        try:
            return cls((root / IGNORE_FILE).read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return cls()
        except OSError as e:
            log.warning("cannot read %s: %s (ignoring nothing)", root / IGNORE_FILE, e)
            return cls()

    def match(self, path: str, is_dir: bool = False) -> bool:
        """Whether ``path`` (a directory if ``is_dir``) is excluded from sync."""
        p = path + "/" if is_dir and not path.endswith("/") else path
        if self._always.match_file(p):
            return True
        if path == IGNORE_FILE:
            return False  # the rules themselves are always synced
        return self._spec.match_file(p)

    def __call__(self, path: str) -> bool:
        """Whether a file path, or any directory above it, is excluded (for ``plan``)."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.match("/".join(parts[:i]), is_dir=True):
                return True
        return self.match(path)
