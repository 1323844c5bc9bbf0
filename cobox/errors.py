"""Errors of the cobox product layer. Each has a stable ``code`` (also used in API error
bodies) and a message a user can act on."""

from __future__ import annotations


class CoboxError(Exception):
    """Something cobox could not do."""

    code = "error"
    status = 500  # the HTTP status the control API answers with


class UsageError(CoboxError):
    """The request itself is wrong (bad arguments)."""

    code = "bad_request"
    status = 400


class InvalidURIError(UsageError):
    """An invite URI is malformed or truncated."""

    code = "invalid_uri"


class ConfigError(CoboxError):
    """The configuration is invalid; the message names the file and key."""

    code = "invalid_config"


class GroupNotFoundError(CoboxError):
    """No group by that name."""

    code = "group_not_found"
    status = 404


class NotFoundError(CoboxError):
    """What a command names does not exist here (a known peer, ...)."""

    code = "not_found"
    status = 404


class GroupExistsError(CoboxError):
    """A group by that name (or with that address) already exists here."""

    code = "group_exists"
    status = 409


class NotAMemberError(CoboxError):
    """This device only backs the group up (it holds no key to read or write it)."""

    code = "not_a_member"
    status = 403


class DaemonRunningError(CoboxError):
    """Another cobox daemon already uses this home directory."""

    code = "daemon_running"


class FatalServiceError(CoboxError):
    """A service the daemon cannot run without (the store writer) failed; the daemon stopped.
    The message names the service and the cause; the log has the details."""

    code = "fatal_service_failure"


class DaemonNotRunningError(CoboxError):
    """No cobox daemon is running for this home directory."""

    code = "daemon_not_running"


class AuthError(CoboxError):
    """The control API refused the token."""

    code = "unauthorized"
    status = 401


class RecoveryError(CoboxError):
    """Password-based key recovery with a backup peer failed."""

    code = "recovery_failed"
    status = 401


class WrongPasswordError(RecoveryError):
    """The password is wrong, or this backup peer holds no account by that name (the two
    cannot be told apart, on purpose). Check the name and the password and try again."""

    code = "wrong_password"


class LoginFailedError(RecoveryError):
    """(Backup peer side) the client did not prove that it knows the password."""

    code = "login_failed"


class RecoveryProtocolError(RecoveryError):
    """The other side sent a malformed or out-of-place recovery message; end the session."""

    code = "bad_recovery_message"
    status = 400


class WeakParametersError(RecoveryProtocolError):
    """The password-hashing parameters offered are weaker (or far costlier) than this device
    accepts, so it refused to hash the password with them."""

    code = "weak_parameters"


class IllegalTransitionError(RecoveryError):
    """A recovery state machine was driven out of order (a bug in the caller, or a message
    that arrived in the wrong state)."""

    code = "illegal_transition"
    status = 500


class KeyringDecryptError(RecoveryError):
    """The keyring could not be opened: the password is wrong or the blob is damaged."""

    code = "keyring_locked"


class RateLimitedError(RecoveryError):
    """Too many failed attempts for this name; wait and try again later."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FolderError(CoboxError):
    """Folder sync could not do something."""

    code = "folder_error"


class InvalidPathError(FolderError, UsageError):
    """A path in a synced folder is not allowed (absolute, '..', NUL, too long, ...)."""

    code = "invalid_path"
    status = 400


class MalformedRecordError(CoboxError):
    """An entry read from another device's feed is not a valid record: it is refused (skipped,
    counted and reported per device), never fatal."""

    code = "malformed_record"


class MalformedOpError(MalformedRecordError, FolderError):
    """A folder operation record read from a feed is malformed; it is skipped."""

    code = "malformed_op"


class MalformedChunkError(MalformedRecordError, FolderError):
    """A chunk entry is not a well-formed, well-padded chunk, or a chunk reference names an entry
    that is not the chunk named; it is refused."""

    code = "malformed_chunk"


class MalformedLogEntryError(MalformedRecordError):
    """A group log entry is malformed; it is shown as refused."""

    code = "malformed_log_entry"


class IdentityInUseError(CoboxError):
    """This home already has a device identity that is in use (it has groups): restoring a
    keyring would replace it. ``cobox keys restore --force`` replaces it and keeps the old key
    as ``identity.key.replaced-<time>``."""

    code = "identity_in_use"
    status = 409


class DeviceNotFoundError(CoboxError):
    """No device of the group has that name or id prefix (see ``cobox device list GROUP``)."""

    code = "device_not_found"
    status = 404


class MalformedProfileError(MalformedRecordError):
    """A device profile (a device's name in a group) is malformed, or its signature does not
    verify, or it claims another device; it is refused and reported."""

    code = "malformed_profile"
    status = 400


class AdmissionError(CoboxError):
    """A feed offered to a group comes with an admission that does not check out (wrong
    signature, wrong membership tag, malformed), or past a per-device or per-group limit."""

    code = "feed_refused"


class MalformedEpochRecordError(MalformedRecordError):
    """An epoch record (a device removal, :mod:`cobox.epochs`) is malformed, not signed by the
    member whose feed holds it, or seals garbage: it is refused and reported, the epoch stays."""

    code = "malformed_epoch_record"


class RemovalError(UsageError):
    """A device cannot be removed from a group (unknown or ambiguous device, this device, a
    backup peer's copy of the group, a device removed already)."""

    code = "removal_refused"


class DiskReserveError(FolderError):
    """A download would leave less free disk space than ``[folders] min_disk_free``: not started."""

    code = "disk_reserve"


class UnknownVersionError(FolderError):
    """No such version of that file in the folder's history."""

    code = "unknown_version"
    status = 404


class FileChangedError(FolderError):
    """A local file changed since it was indexed (it may be being written): not overwritten."""

    code = "file_changed"
    status = 409


class UnsafePathError(FolderError):
    """A path would be written through a symlink or a non-directory: refused."""

    code = "unsafe_path"


class ForeignOriginError(CoboxError):
    """A dashboard request came from a page of another origin (another site, or another local port)."""

    code = "foreign_origin"
    status = 403


class NoLogError(CoboxError):
    """The home has no daemon log: the daemon never ran there with ``cobox start`` (under systemd
    it logs to the journal; ``cobox daemon`` to its terminal)."""

    code = "no_log"


class HostingError(CoboxError):
    """Backup as a service (``cobox service`` on a host, ``cobox backup add`` on a member) could
    not do something; the message says what to do."""

    code = "hosting_failed"
    status = 409


class HostRefusedError(HostingError):
    """The backup host refused the request (a wrong, expired or revoked invite, a quota reached, a
    group it keeps already); the message is the host's, and says what to do."""

    code = "host_refused"
    status = 403


class HostKeyMismatchError(HostingError):
    """The device that answered at the invite's addresses is not the host the invite names."""

    code = "host_key_mismatch"
    status = 502


class HostUnreachableError(HostingError):
    """No address of the backup host could be reached."""

    code = "host_unreachable"
    status = 502


class MalformedHostingError(HostingError):
    """A backup-service message from another device is not well formed (a remote error: the
    connection is closed)."""

    code = "malformed_hosting_message"
    status = 502
