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


class DaemonNotRunningError(CoboxError):
    """No cobox daemon is running for this home directory."""

    code = "daemon_not_running"


class AuthError(CoboxError):
    """The control API refused the token."""

    code = "unauthorized"
    status = 401


class CsrfError(CoboxError):
    """A dashboard request that changes something came without the page's X-Cobox-CSRF header."""

    code = "csrf_required"
    status = 403
