"""A user's groups: direct membership (``member``, ``uniqueMember``,
``memberUid`` on the group, ``memberOf`` on the user), and nested groups:
Active Directory's transitive matching rule in one search, elsewhere level
by level with every group visited once (cycles end there)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, final

import nxauth.backends.ldap.filter as filters
from nxauth.backends.ldap import wire
from nxauth.backends.ldap.config import GroupSettings
from nxauth.backends.ldap.connection import SearchResult
from nxauth.backends.ldap.escape import first_rdn, normalize_dn
from nxauth.errors import BackendError

__all__ = ["Group", "GroupResolver", "Searcher"]

log = logging.getLogger("nxauth.backends.ldap")

#: AD's LDAP_MATCHING_RULE_IN_CHAIN: membership through any depth of nesting.
IN_CHAIN: Final = "1.2.840.113556.1.4.1941"
MAX_GROUPS: Final = 5000
CHUNK: Final = 50  # group DNs per search when walking up one level

#: ``searcher(base, scope, filter, attributes)`` runs one search.
Searcher = Callable[[str, int, filters.Filter, Sequence[str]], SearchResult]


@final
@dataclass(frozen=True, slots=True)
class Group:
    dn: str
    name: str

    @property
    def key(self) -> str:
        return normalize_dn(self.dn)


class GroupResolver:
    """Finds the groups of one user with the configured strategy."""

    def __init__(self, settings: GroupSettings, *, active_directory: bool) -> None:
        self.settings = settings
        self.active_directory = active_directory
        self.dn_members = tuple(m for m in settings.membership if m in ("member", "uniqueMember"))

    def user_attributes(self) -> tuple[str, ...]:
        """Attributes of the user entry the resolver needs."""
        wanted = []
        if "memberOf" in self.settings.membership:
            wanted.append("memberOf")
        if "memberUid" in self.settings.membership:
            wanted.append(self.settings.member_uid_attribute)
        return tuple(wanted)

    def _name_attributes(self) -> list[str]:
        name = self.settings.name_attribute
        return [] if name == "dn" else [name]

    def _search(self, search: Searcher, condition: filters.Filter, attributes: Sequence[str]) -> list[wire.Entry]:
        settings = self.settings
        assert settings.base is not None
        parts = [settings.filter, condition] if settings.filter is not None else [condition]
        result = search(settings.base, settings.scope, filters.all_of(parts), attributes)
        if not result.result.ok:
            raise BackendError(f"group search failed with {result.result.describe()}")
        return list(result.entries)

    def _named(self, entry: wire.Entry) -> Group:
        name_attribute = self.settings.name_attribute
        if name_attribute == "dn":
            return Group(entry.dn, entry.dn)
        values = entry.text(name_attribute)
        return Group(entry.dn, values[0] if values else entry.dn)

    def resolve(self, search: Searcher, user: wire.Entry, username: str) -> list[Group]:
        """All groups of ``user`` (the entry as read with :meth:`user_attributes`)."""
        settings = self.settings
        found: dict[str, Group | str] = {}  # normalized DN -> Group, or the DN while its name is unknown
        frontier: list[str] = []

        def add(dn: str, group: Group | None = None) -> None:
            key = normalize_dn(dn)
            if key not in found:
                if len(found) >= MAX_GROUPS:
                    raise BackendError(f"more than {MAX_GROUPS} groups: refusing to guess")
                found[key] = group if group is not None else dn
                frontier.append(dn)
            elif group is not None and not isinstance(found[key], Group):
                found[key] = group

        if "memberOf" in settings.membership:
            for dn in user.text("memberOf"):
                add(dn)
        if settings.base is not None:
            names = self._name_attributes()
            if self.active_directory and settings.nested:
                condition = filters.matching("member", IN_CHAIN, user.dn.encode("utf-8"))
                for entry in self._search(search, condition, names):
                    add(entry.dn, self._named(entry))
                frontier.clear()  # the matching rule already walked the nesting
            else:
                conditions = [filters.equality(attr, user.dn.encode("utf-8")) for attr in self.dn_members]
                if "memberUid" in settings.membership:
                    uids = user.values(settings.member_uid_attribute) or (username.encode("utf-8"),)
                    conditions += [filters.equality("memberUid", uid) for uid in uids]
                if conditions:
                    for entry in self._search(search, filters.any_of(conditions), names):
                        add(entry.dn, self._named(entry))
        if settings.nested and frontier:
            self._walk_up(search, frontier, add)
        return self._finish(search, found)

    def _walk_up(self, search: Searcher, frontier: list[str], add: Callable[..., None]) -> None:
        """Breadth first, one level per round: the groups that contain any
        group of the previous level.  A group already seen is not walked
        again, so cycles end."""
        settings = self.settings
        names = self._name_attributes()
        for depth in range(settings.max_depth):
            level = list(frontier)
            frontier.clear()
            if not level:
                return
            if settings.base is not None and self.dn_members:
                for start in range(0, len(level), CHUNK):
                    chunk = level[start : start + CHUNK]
                    condition = filters.any_of(
                        [filters.equality(attr, dn.encode("utf-8")) for dn in chunk for attr in self.dn_members]
                    )
                    for entry in self._search(search, condition, names):
                        add(entry.dn, self._named(entry))
            if "memberOf" in settings.membership:
                for dn in level:
                    for parent in self._read(search, dn, ["memberOf"]).text("memberOf"):
                        add(parent)
            if depth == settings.max_depth - 1 and frontier:
                log.warning("group nesting deeper than %d levels: stopped there", settings.max_depth)

    def _read(self, search: Searcher, dn: str, attributes: Sequence[str]) -> wire.Entry:
        result = search(dn, wire.SCOPES["base"], filters.Filter("present", attr="objectClass"), attributes)
        if result.result.code == 32:  # noSuchObject: a dangling reference
            return wire.Entry(dn, {})
        if not result.result.ok or not result.entries:
            raise BackendError(f"reading group entry failed with code {result.result.code}")
        return result.entries[0]

    def _finish(self, search: Searcher, found: dict[str, Group | str]) -> list[Group]:
        name_attribute = self.settings.name_attribute
        groups = []
        for value in found.values():
            if isinstance(value, Group):
                groups.append(value)
                continue
            if name_attribute == "dn":
                groups.append(Group(value, value))
                continue
            rdn = first_rdn(value)
            if rdn is not None and rdn[0] == name_attribute.lower():
                groups.append(Group(value, rdn[1]))
                continue
            entry = self._read(search, value, [name_attribute])
            names = entry.text(name_attribute)
            groups.append(Group(value, names[0] if names else value))
        return groups


def matches(groups: Iterable[Group], wanted: Sequence[str]) -> list[str]:
    """The items of ``wanted`` (``dn:<normalized>`` or ``name:<casefolded>``)
    that one of ``groups`` satisfies."""
    keys = set()
    for group in groups:
        keys.add("dn:" + group.key)
        keys.add("name:" + group.name.casefold())
    return [item for item in wanted if item in keys]
