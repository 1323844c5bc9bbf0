"""Quota and fairness on a backup host: pure decisions, no I/O.

Decision table for a member's ADD (:func:`refuse_add`; the first row that applies wins, each
answer one line that says what to do):

==========================================  ==============================================
condition                                   answer
==========================================  ==============================================
no such invite, or the proof is wrong       "no such invite here" (the two look alike)
the invite was revoked                      "revoked by the host"
the invite expired                          "expired on DATE"
the host keeps the group already            "keeps that group already"
the host keeps ``max_groups`` groups        "keeps no more groups"
the invite's groups are all used            "its N groups are all used"
the invite's bytes are used up              "its quota of X is used up"
==========================================  ==============================================

A kept group takes new data while :func:`state` says ``ACTIVE``: not when its invite or its
device was revoked (``REVOKED``), nor when its invite's groups together hold the invite's quota,
nor when the group holds the per-group quota (``FULL``). Then replication of it pauses (the
group's ``quota_full``, through ``Group.limit``), receipts say so, nothing is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..commands_show import size_text
from .invites import Hosted, HostInvite
from .messages import State

NEW_INVITE = "ask the host for a new invite (`cobox service invite` there)"
NO_INVITE = f"this host has no such invite (it is wrong, or from another host): {NEW_INVITE}"


@dataclass(frozen=True)
class Limits:
    group_quota_bytes: int = 0  # per kept group (0: no limit)
    max_groups: int = 0         # kept groups on this host, all invites together (0: no limit)


@dataclass(frozen=True)
class Use:
    """What an invite's groups take now."""

    groups: int
    bytes: int


def refuse_add(invite: HostInvite | None, proof_ok: bool, use: Use, *, now: float, already_kept: bool,
               hosted_total: int, limits: Limits) -> str | None:
    """Why the host refuses to keep a new group for ``invite`` (``None``: it accepts)."""
    if invite is None or not proof_ok:
        return NO_INVITE
    if invite.revoked:
        return f"this invite was revoked by the host: {NEW_INVITE}"
    if invite.expires and now >= invite.expires:
        return f"this invite expired on {time.strftime('%Y-%m-%d', time.localtime(invite.expires))}: {NEW_INVITE}"
    if already_kept:
        return "this host keeps that group already: nothing to do (`cobox backup list` shows its hosts)"
    if limits.max_groups and hosted_total >= limits.max_groups:
        return f"this host keeps no more groups ({limits.max_groups}, [hosting] max_groups there)"
    if invite.max_groups and use.groups >= invite.max_groups:
        return (f"this invite's {invite.max_groups} group{'' if invite.max_groups == 1 else 's'} are all used: "
                "remove one (`cobox backup remove GROUP HOST`) or ask the host for an invite with more "
                "(`cobox service invite --groups N`)")
    if invite.quota_bytes and use.bytes >= invite.quota_bytes:
        return (f"this invite's quota of {size_text(invite.quota_bytes)} is used up: ask the host for an "
                "invite with more (`cobox service invite --quota-mb N`)")
    return None


def state(invite: HostInvite | None, hosted: Hosted, invite_bytes: int, group_bytes: int, limits: Limits) -> State:
    """Whether a kept group takes new data, and if not why."""
    if hosted.revoked or invite is None or invite.revoked:
        return State.REVOKED
    if invite.quota_bytes and invite_bytes >= invite.quota_bytes:
        return State.FULL
    if limits.group_quota_bytes and group_bytes >= limits.group_quota_bytes:
        return State.FULL
    return State.ACTIVE


def group_quota(invite: HostInvite | None, invite_bytes: int, group_bytes: int, limits: Limits) -> int:
    """The most this group may hold now: the per-group quota, or what the invite's quota leaves
    it, whichever is less (0: no limit)."""
    room = [limits.group_quota_bytes] if limits.group_quota_bytes else []
    if invite is not None and invite.quota_bytes:
        room.append(max(0, invite.quota_bytes - (invite_bytes - group_bytes)))
    return min(room) if room else 0
