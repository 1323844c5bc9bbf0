"""What to do to bring one device's folder in line with the merged state, and which local
changes to record: a pure function the daemon executes.

Theory of operation
-------------------
Three inputs, all keyed by folder path:

- ``state.files``: what the merged state shows (``merge.FolderState``);
- ``local``: what is on disk now (``LocalFile``: size, mtime, mode, and the content id when
  the scanner computed it), from ``scan``;
- ``synced``: the daemon's record of the last agreement between disk and state for each path
  (``Synced``: the version stamp and the size/mtime/content the file had then). The daemon
  writes it after each download (the version written) and each recorded local op (the op).

Per path, *locally changed* means the file differs from its ``Synced`` record (new, deleted,
or another size/mtime with no content id proving the content equal), and *remotely changed*
means the state shows another version than the ``Synced`` one (or none). Then:

=================  ====================  ==========================================================
local              remote                action
=================  ====================  ==========================================================
unchanged          unchanged             nothing (``MarkSynced`` if only the mtime moved)
unchanged          changed               ``Download`` the shown version over it / ``RemoveLocal``
changed            unchanged             ``RecordPut`` (base: the synced version, else the state's
                                         head) / ``RecordDelete`` (base: the synced version)
changed            changed               record the local edit with the *synced* base, so the merge
                                         sees two concurrent versions and keeps both (one becomes a
                                         conflict copy on the next round); a local delete against
                                         a remote edit downloads the edit; same content on both
                                         sides is ``MarkSynced``
=================  ====================  ==========================================================

A locally changed file is never overwritten or removed by a plan: the file may be being
written. ``Download`` and ``RemoveLocal`` carry the ``LocalFile`` they expect to replace, and
``apply`` refuses if the disk moved on since.

Moves: when a file that is about to be replaced or removed, unchanged since synced, holds
exactly the content of a version to be downloaded to a path that is free, the plan moves it
(``MoveLocal``) instead of downloading again: this is how a remote rename, and one's own edit
turned into a conflict copy, land without transfer.

Directories are items too (``LocalFile.is_dir``: the scanner reports every directory with size
and mtime 0 and ``DIR_CONTENT``; a ``dir`` version has that content), so an empty directory is
synced like a file: created (``Download`` of a ``dir`` version: make it), recorded
(``RecordPut`` of a directory: a ``Mkdir``), removed, deleted. A directory is never moved
(``MoveLocal`` is for file content). A directory to be removed that still holds local paths
staying here (new or edited files, a remote file being downloaded into it...) is not removed:
it is recorded again on top of the deletion (``RecordPut``, base: the state's head), so it
comes back for everyone rather than a device losing files or looping.

Order of the actions: moves, downloads, removals (directories after the files, deepest first),
bookkeeping (``MarkSynced``, ``Forget``), then local records. Paths for which ``ignored(path)``
holds are left alone on both sides (``ignored(path + "/")`` for a directory).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .merge import FolderState, Version
from .model import DIR_CONTENT, Stamp


@dataclass(frozen=True)
class LocalFile:
    size: int
    mtime: int  # ns
    mode: int = 0o644
    content: bytes | None = None  # chunking.content_id, when computed (DIR_CONTENT: a directory)

    @property
    def is_dir(self) -> bool:
        return self.content == DIR_CONTENT


@dataclass(frozen=True)
class Synced:
    stamp: Stamp
    size: int
    mtime: int
    content: bytes


@dataclass(frozen=True)
class Download:
    """Write ``version`` at ``path``; ``replace`` is the file expected there (``None``: none)."""

    path: str
    version: Version
    replace: LocalFile | None


@dataclass(frozen=True)
class MoveLocal:
    """Move the unchanged local file ``src`` (expected ``expect``) to the free path ``dst``,
    which then holds ``version``."""

    src: str
    dst: str
    expect: LocalFile
    version: Version


@dataclass(frozen=True)
class RemoveLocal:
    path: str
    expect: LocalFile


@dataclass(frozen=True)
class RecordPut:
    """Chunk the local file, store new chunks, append a ``Put`` with this ``base``."""

    path: str
    base: Stamp | None
    local: LocalFile


@dataclass(frozen=True)
class RecordDelete:
    path: str
    base: Stamp


@dataclass(frozen=True)
class MarkSynced:
    """The local file already holds ``version``: record that (re-stat it)."""

    path: str
    version: Version


@dataclass(frozen=True)
class Forget:
    """Gone on both sides: drop the ``Synced`` record."""

    path: str


Action = Download | MoveLocal | RemoveLocal | RecordPut | RecordDelete | MarkSynced | Forget
_ORDER = {MoveLocal: 0, Download: 1, RemoveLocal: 2, MarkSynced: 3, Forget: 3, RecordDelete: 4, RecordPut: 4}


def _rank(a: Action) -> tuple[int, int]:
    if isinstance(a, RemoveLocal) and a.expect.is_dir:
        return 2, -a.path.count("/") - 1  # after the files, the deepest first
    return _ORDER[type(a)], 0


def _same_content(loc: LocalFile, syn: Synced) -> bool:
    return loc.content is not None and loc.content == syn.content


def plan(state: FolderState, local: Mapping[str, LocalFile], synced: Mapping[str, Synced],
         ignored: Callable[[str], bool] | None = None) -> list[Action]:
    actions: list[Action] = []
    movable: dict[str, tuple[bytes, LocalFile]] = {}  # path about to be replaced -> its content
    for path in sorted(set(state.files) | set(local) | set(synced)):
        remote, loc, syn = state.files.get(path), local.get(path), synced.get(path)
        if ignored is not None and ignored(path + "/" if _is_dir(remote, loc, syn) else path):
            continue
        if syn is None:
            local_changed = loc is not None
        else:
            local_changed = loc is None or ((loc.size, loc.mtime) != (syn.size, syn.mtime)
                                            and not _same_content(loc, syn))
        remote_changed = (remote is not None) if syn is None else (remote is None or remote.stamp != syn.stamp)

        if not local_changed and not remote_changed:
            if syn is not None and loc is not None and remote is not None and (loc.size, loc.mtime) != (
                    syn.size, syn.mtime):
                actions.append(MarkSynced(path, remote))  # touched, same content
        elif not local_changed:
            if loc is not None and syn is not None and not loc.is_dir:
                movable[path] = (syn.content, loc)
            if remote is not None:
                actions.append(Download(path, remote, loc))
            elif loc is not None:
                actions.append(RemoveLocal(path, loc))
            else:
                actions.append(Forget(path))
        elif not remote_changed:
            if loc is not None:
                base = syn.stamp if syn is not None else state.head(path)
                actions.append(RecordPut(path, base, loc))
            else:
                assert syn is not None
                actions.append(RecordDelete(path, syn.stamp))
        elif loc is None:  # deleted here, changed there: the edit wins
            actions.append(Download(path, remote, None) if remote is not None else Forget(path))
        elif remote is not None and loc.content is not None and loc.content == remote.content:
            actions.append(MarkSynced(path, remote))
        else:  # edited here, changed there: record ours against what we had; the merge keeps both
            base = syn.stamp if syn is not None else (None if remote is not None else state.head(path))
            actions.append(RecordPut(path, base, loc))
    return sorted(_keep_dirs(state, _moves(actions, movable, local), local), key=_rank)


def _is_dir(remote: Version | None, loc: LocalFile | None, syn: Synced | None) -> bool:
    return ((remote is not None and remote.kind == "dir") or (loc is not None and loc.is_dir)
            or (syn is not None and syn.content == DIR_CONTENT))


def _keep_dirs(state: FolderState, actions: list[Action], local: Mapping[str, LocalFile]) -> list[Action]:
    """A directory to be removed that still holds local paths that stay is recorded again."""
    dirs = sorted((a for a in actions if isinstance(a, RemoveLocal) and a.expect.is_dir),
                  key=lambda a: -a.path.count("/"))
    if not dirs:
        return actions
    gone = {a.path for a in actions if isinstance(a, RemoveLocal) and not a.expect.is_dir}
    gone |= {a.src for a in actions if isinstance(a, MoveLocal)}
    gone |= {a.path for a in dirs}
    names = sorted(set(local) | {a.path for a in actions if isinstance(a, Download)}
                   | {a.dst for a in actions if isinstance(a, MoveLocal)})  # what is here after the round
    kept: dict[str, Action] = {}
    for a in dirs:  # the deepest first: a kept subdirectory keeps its parents
        prefix = a.path + "/"
        k = bisect.bisect_left(names, prefix)
        while k < len(names) and names[k].startswith(prefix):
            if names[k] not in gone:
                kept[a.path] = RecordPut(a.path, state.head(a.path), a.expect)
                gone.discard(a.path)
                break
            k += 1
    return [kept.get(a.path, a) if isinstance(a, RemoveLocal) else a for a in actions]


def _moves(actions: list[Action], movable: dict[str, tuple[bytes, LocalFile]],
           local: Mapping[str, LocalFile]) -> list[Action]:
    by_content: dict[bytes, list[str]] = {}
    for path, (content, _) in sorted(movable.items()):
        by_content.setdefault(content, []).append(path)
    moved: dict[str, str] = {}  # src -> dst
    out: list[Action] = []
    for a in actions:
        if isinstance(a, Download) and a.replace is None and a.path not in local:
            sources = by_content.get(a.version.content)
            if sources:
                src = sources.pop(0)
                moved[src] = a.path
                out.append(MoveLocal(src, a.path, movable[src][1], a.version))
                continue
        out.append(a)
    result: list[Action] = []
    for a in out:
        if isinstance(a, RemoveLocal) and a.path in moved:
            continue  # moved away instead
        if isinstance(a, Download) and a.path in moved:
            a = replace(a, replace=None)  # the old file moved away first
        result.append(a)
    return result
