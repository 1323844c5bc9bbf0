"""Folder types, as Syncthing has them: which of ``plan``'s actions a folder carries out.

Theory of operation
-------------------
``plan`` says what would bring disk and group in line both ways. A folder's type filters that
(:func:`restrict`), pure, on the action list:

=================  ==========================================================================
type               what happens
=================  ==========================================================================
send-receive       everything (the default)
send-only          local changes go out (``RecordPut``, ``RecordDelete``); remote changes are
                   not applied here (``Download``, ``MoveLocal``, ``RemoveLocal`` are held
                   back and counted as *out of sync*)
receive-only       remote changes are applied; nothing local goes out (``RecordPut`` and
                   ``RecordDelete`` are held back: those paths are *locally changed*)
=================  ==========================================================================

Bookkeeping (``MarkSynced``, ``Forget``) always runs. The paths held back are what ``folder
status`` lists. Two explicit actions resolve them, each computed from the same three inputs as
``plan`` (merged state, disk, ``Synced`` records), paths the ignore rules match left alone:

- :func:`override` (send-only, Syncthing's *Override Changes*): the group takes this device's
  state. Every path where the disk differs from what the group shows is recorded as a new
  version on top of the group's current one (base: the version shown, so it supersedes it
  rather than conflicting with it): a file that differs becomes a ``RecordPut``, a file the
  group shows and the disk lacks a ``RecordDelete``.
- :func:`revert` (receive-only, Syncthing's *Revert Local Changes*): this device takes the
  group's state. A file that differs is downloaded over the local one (``Download`` replacing
  exactly the file scanned), a file the group lacks is removed (``RemoveLocal``), a file the
  group shows and the disk lacks is downloaded.

A file's content counts as equal to the group's when its content id is known and equal, or when
it is unchanged since its ``Synced`` record and that record is the version shown. A file whose
content is unknown (not hashed by this scan) and that changed since it was synced counts as
different: the worst case is a re-download or a re-record of equal bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence

from ..errors import UsageError
from .merge import FolderState, Version
from .plan import (
    Action,
    Download,
    Forget,
    LocalFile,
    MarkSynced,
    MoveLocal,
    RecordDelete,
    RecordPut,
    RemoveLocal,
    Synced,
)


class FolderKind(enum.Enum):
    SEND_RECEIVE = "send-receive"
    SEND_ONLY = "send-only"
    RECEIVE_ONLY = "receive-only"

    @classmethod
    def parse(cls, text: str) -> FolderKind:
        try:
            return cls(text)
        except ValueError:
            raise UsageError(f"unknown folder type {text!r}: expected one of "
                             f"{', '.join(k.value for k in cls)}") from None


_REMOTE = (Download, MoveLocal, RemoveLocal)  # applying a remote change here
_LOCAL = (RecordPut, RecordDelete)  # sending a local change out


def restrict(kind: FolderKind, actions: Sequence[Action]) -> tuple[list[Action], list[str]]:
    """The actions a folder of ``kind`` carries out, and the paths it holds back (sorted)."""
    held = _REMOTE if kind is FolderKind.SEND_ONLY else _LOCAL if kind is FolderKind.RECEIVE_ONLY else ()
    kept: list[Action] = []
    back: set[str] = set()
    for a in actions:
        if held and isinstance(a, held):
            back.add(a.dst if isinstance(a, MoveLocal) else a.path)
        else:
            kept.append(a)
    return kept, sorted(back)


def _same(path: str, loc: LocalFile, state: FolderState, synced: Mapping[str, Synced]) -> bool:
    """Whether the file scanned at ``path`` holds what the group shows there."""
    shown: Version | None = state.files.get(path)
    if shown is None:
        return False
    if loc.content is not None:
        return loc.content == shown.content
    syn = synced.get(path)
    return syn is not None and syn.stamp == shown.stamp and (loc.size, loc.mtime) == (syn.size, syn.mtime)


def _paths(state: FolderState, local: Mapping[str, LocalFile], ignored: Callable[[str], bool] | None) -> list[str]:
    return sorted(p for p in set(state.files) | set(local) if ignored is None or not ignored(p))


def override(state: FolderState, local: Mapping[str, LocalFile], synced: Mapping[str, Synced],
             ignored: Callable[[str], bool] | None = None) -> list[Action]:
    """Record this device's state on top of the group's (send-only *Override Changes*)."""
    actions: list[Action] = []
    for path in _paths(state, local, ignored):
        shown, loc = state.files.get(path), local.get(path)
        if loc is not None:
            if not _same(path, loc, state, synced):
                actions.append(RecordPut(path, state.head(path), loc))
            elif shown is not None and (s := synced.get(path)) is not None and s.stamp != shown.stamp:
                actions.append(MarkSynced(path, shown))
        elif shown is not None:
            actions.append(RecordDelete(path, shown.stamp))
    return actions


def revert(state: FolderState, local: Mapping[str, LocalFile], synced: Mapping[str, Synced],
           ignored: Callable[[str], bool] | None = None) -> list[Action]:
    """Bring the disk back to the group's state (receive-only *Revert Local Changes*)."""
    downloads: list[Action] = []
    removals: list[RemoveLocal] = []
    rest: list[Action] = []
    for path in _paths(state, local, ignored):
        shown, loc = state.files.get(path), local.get(path)
        if shown is not None and loc is None:
            downloads.append(Download(path, shown, None))
        elif shown is not None and loc is not None:
            if not _same(path, loc, state, synced):
                downloads.append(Download(path, shown, loc))
            elif (s := synced.get(path)) is None or s.stamp != shown.stamp:
                rest.append(MarkSynced(path, shown))
        elif loc is not None:
            removals.append(RemoveLocal(path, loc))
    for path in sorted(p for p in synced if p not in state.files and p not in local):
        rest.append(Forget(path))
    removals.sort(key=lambda a: (a.expect.is_dir, -a.path.count("/")))
    return [*downloads, *removals, *rest]  # directories removed after the files in them, the deepest first
