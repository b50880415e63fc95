"""[access]: who may run which command, and where. Enforced for slash commands and buttons alike.

A rule allows a user who is listed in `users` or is a member of one of `usergroups` (when either
is given), in one of `channels` (when given). A command without a rule is open to everyone in the
workspace. User group membership comes from Slack (usergroups.users.list) and is cached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.config import AccessRule

CACHE_SECONDS = 300
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Denial:
    command: str
    users: tuple[str, ...]
    usergroups: tuple[str, ...]
    channels: tuple[str, ...]
    wrong_channel: bool
    unverified: bool = False


class Access:
    def __init__(self, rules: dict[str, AccessRule], group_members: Callable[[str], set[str]]):
        self.rules = rules
        self._group_members = group_members
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def check(self, command: str, user: str, channel: str | None) -> Denial | None:
        rule = self.rules.get(command)
        if rule is None:
            return None
        if rule.channels and channel not in rule.channels:
            return Denial(command, rule.users, rule.usergroups, rule.channels, wrong_channel=True)
        if (not rule.users and not rule.usergroups) or user in rule.users:
            return None
        unverified = False
        for group in rule.usergroups:
            members = self._members(group)
            if members is None:
                unverified = True
            elif user in members:
                return None
        return Denial(command, rule.users, rule.usergroups, rule.channels, wrong_channel=False,
                      unverified=unverified)

    def _members(self, group: str) -> set[str] | None:
        with self._lock:
            cached = self._cache.get(group)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            members = self._group_members(group)
        except Exception:
            log.warning("could not read the members of user group %s", group, exc_info=True)
            return cached[1] if cached else None
        with self._lock:
            self._cache[group] = (time.monotonic(), members)
        return members
