"""The daemon's folders: each group's folder bound, started, moved and unbound as supervised services.

Theory of operation
-------------------
A folder is bound to a group by a record in the store (scope ``folders``: group name -> the
folder's absolute path) and its options (``cobox.folders.options``). At start the daemon calls
:meth:`Syncing.resume` once its groups are active: every recorded folder of a known group starts.

Each folder runs as two services of the daemon's :class:`~cobox.supervisor.Supervisor`:

- ``folder:NAME`` (backoff): the :class:`~cobox.folders.sync.FolderSync`. :meth:`Syncing.start`
  tries to start it at once; a folder that cannot start (its directory is gone, say) is still
  handed to the supervisor, which retries it with backoff, its error shown in ``status``. Once
  started, FolderSync's own loop runs and reports its rounds; cancelling the service stops it.
- ``prune:NAME`` (backoff): expiry of the folder's old versions (``cobox.folders.prune``).
- ``single:NAME`` (backoff): one copy (``cobox.folders.single``): the folder's files rebuild the
  chunk entries they hold, which are released from the store when the folder is quiet
  (``[folders] single_copy``). Unbinding a folder stores those entries again from its files first.

:meth:`Syncing.add` checks a new binding first (the group is joined, not only backed up here; it
has no folder yet; the path is a directory that overlaps no other folder), then records it.
:meth:`Syncing.move` restarts a folder on a group's next epoch (after a device removal), its
synced state kept. :meth:`Syncing.remove` cancels both services and deletes the records.

Invariant: ``folders`` (the dict given at construction, the daemon's ``Daemon.folders``, read by
status, the controls and the API) holds exactly the folders whose ``folder:NAME`` service exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from storage import Store

from .controls import Controls
from .errors import CoboxError, GroupExistsError, GroupNotFoundError, NotAMemberError, UsageError
from .folders import options as folder_options
from .folders import prune as folder_prune
from .folders import single as folder_single
from .folders.disk import DiskReserve
from .folders.sync import FolderSync
from .groups import Group
from .settings import FoldersSettings
from .supervisor import Supervisor, hold

FOLDERS_SCOPE = "folders"

log = logging.getLogger("cobox.daemon")


class Syncing:
    """Binds, starts, moves and unbinds the folders of the daemon's groups."""

    def __init__(self, folders: dict[str, FolderSync], store: Store, supervisor: Supervisor, controls: Controls,
                 settings: FoldersSettings) -> None:
        self.folders = folders
        self.store = store
        self.supervisor = supervisor
        self.controls = controls
        self.settings = settings
        self.served: Callable[[Group], int] = lambda group: 0  # bytes of a group's feeds sent to peers (daemon)

    async def resume(self, groups: dict[str, Group]) -> None:
        """Start every recorded folder of a group in ``groups``."""
        for name, path in (await self.store.records(FOLDERS_SCOPE)).items():
            if name in groups:
                await self.start(groups[name], Path(path.decode()))

    async def start(self, group: Group, root: Path) -> FolderSync:
        """Start the folder now and hand it to the supervisor as ``folder:NAME``. A folder that
        cannot start (its directory is gone, say) is retried with backoff, its error shown in
        ``status``; once started, FolderSync's own loop runs and reports its rounds."""
        cfg = self.settings
        sync = FolderSync(group, root, min_disk_free=DiskReserve.parse(cfg.min_disk_free))
        sync.gate.stable.interval = cfg.stable_wait
        folder_options.apply(sync, await folder_options.load(self.store, group.name), cfg.rescan_interval)
        self.controls.on_folder(sync, group.name)
        started = True
        try:
            await sync.start()
        except (OSError, CoboxError) as e:
            log.warning("folder %s of group %s not started: %s", root, group.name, e)
            sync.error = sync.last_error = str(e)
            started = False
            await sync.stop()

        async def serve() -> None:
            nonlocal started
            if not started:
                try:
                    await sync.start()
                except BaseException as e:
                    sync.error = sync.last_error = str(e)
                    await sync.stop()
                    raise
                sync.error = ""
            started = False  # a restart starts it again
            await hold(sync.stop)

        self.folders[group.name] = sync
        self.supervisor.spawn(f"folder:{group.name}", serve, restart="backoff")
        self.supervisor.spawn(f"prune:{group.name}", lambda: folder_prune.run(sync, cfg.history_days),
                              restart="backoff")
        self.supervisor.spawn(f"single:{group.name}",
                              lambda: folder_single.run(sync, cfg.single_copy, served=lambda: self.served(group)),
                              restart="backoff")
        return sync

    async def add(self, group: Group, path: str, options: folder_options.FolderOptions | None = None) -> FolderSync:
        """Bind the directory ``path`` to ``group``, record it and start it."""
        name = group.name
        if not group.is_member:
            raise NotAMemberError(f"{name!r} is backed up here, not joined: it has no folder to show")
        if name in self.folders:
            raise GroupExistsError(f"group {name!r} already has a folder: {self.folders[name].root}")
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory")
        for f in self.folders.values():
            if root == f.root or root in f.root.parents or f.root in root.parents:
                raise UsageError(f"{root} overlaps the folder of group {f.group.name!r}")
        await folder_options.save(self.store, name, options or folder_options.FolderOptions())
        await self.store.put_record(FOLDERS_SCOPE, name, str(root).encode())
        return await self.start(group, root)

    def get(self, name: str) -> FolderSync:
        try:
            return self.folders[name]
        except KeyError:
            raise GroupNotFoundError(f"group {name!r} has no folder here") from None

    async def move(self, name: str, group: Group) -> None:
        """Restart the folder of group ``name`` (if it has one) on ``group``, its next epoch."""
        if name in self.folders:  # its synced state is kept
            root = self.folders[name].root
            await self.supervisor.cancel(f"folder:{name}")
            await self.supervisor.cancel(f"prune:{name}")  # start() spawns all three again
            await self.supervisor.cancel(f"single:{name}")
            del self.folders[name]
            await self.start(group, root)

    async def remove(self, name: str, *, restore: bool = True) -> None:
        """Stop the folder of group ``name`` and forget its binding (its files stay on disk).
        ``restore``: store again the entries its files held (False: the group's data is about
        to be deleted, leaving)."""
        group = self.get(name).group
        await self.supervisor.cancel(f"folder:{name}")  # it stops the folder
        await self.supervisor.cancel(f"prune:{name}")
        await self.supervisor.cancel(f"single:{name}")
        del self.folders[name]
        await folder_single.forget(group, restore=restore)
        await self.store.delete_record(FOLDERS_SCOPE, name)
        await folder_options.forget(self.store, name)
