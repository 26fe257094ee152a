"""The ``ldap`` backend's options, read and checked once, when the backend
is built.  Every mistake is a :class:`nxauth.ConfigError` naming the key.
The option reference is in :mod:`nxauth.backends.ldap`."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import nxauth.backends.ldap.filter as filters
from nxauth.backends.ldap import wire
from nxauth.backends.ldap.connection import ServerSpec, make_ssl_context, parse_uri
from nxauth.backends.ldap.escape import DnTemplate, check_ad_logon_name, normalize_dn, parse_dn
from nxauth.model import Secret

if TYPE_CHECKING:
    from nxauth.plugins.registry import BackendContext

__all__ = ["GroupSettings", "Settings", "read_settings"]

AD: Final = "activedirectory"
GENERIC: Final = "generic"
MEMBERSHIPS: Final = {
    "member": "member",
    "uniquemember": "uniqueMember",
    "memberuid": "memberUid",
    "memberof": "memberOf",
}
GROUP_SIDE: Final = ("member", "uniqueMember", "memberUid")
#: Users, not computers (whose objectClass is also ``user``) nor contacts.
AD_USER_FILTER: Final = (
    "(&(objectCategory=person)(objectClass=user)(|(sAMAccountName={username})(userPrincipalName={username})))"
)
GENERIC_USER_FILTER: Final = "(uid={username})"


@final
@dataclass(frozen=True, slots=True)
class GroupSettings:
    base: str | None
    scope: int
    filter: filters.Filter | None
    membership: tuple[str, ...]
    nested: bool
    max_depth: int
    name_attribute: str  # "dn" for DNs
    member_uid_attribute: str
    require: tuple[str, ...]  # normalized: DNs through normalize_dn, names casefolded
    deny: tuple[str, ...]
    in_identity: bool

    @property
    def enabled(self) -> bool:
        """Groups are looked up at all."""
        possible = self.base is not None or "memberOf" in self.membership
        return possible and (self.in_identity or bool(self.require) or bool(self.deny))


@final
@dataclass(frozen=True, slots=True)
class Settings:
    name: str
    implementation: str
    servers: tuple[ServerSpec, ...]
    selection: str
    retry_after: float
    connect_timeout: float
    operation_timeout: float
    pool_size: int
    connection_lifetime: float
    ssl_context: ssl.SSLContext | None
    referrals: bool
    mode: str  # "dn", "search", "upn", "downlevel"
    dn_template: DnTemplate | None
    upn_suffix: str | None
    netbios_domain: str | None
    user_base: str | None
    user_scope: int
    user_filter: filters.Filter
    user_filter_text: str
    bind_dn: str | None
    bind_password: Secret | None
    password_policy: bool
    attributes: tuple[str, ...]
    key_attribute: str
    groups: GroupSettings
    #: the attribute whose value is the user's stored name, read back after the bind
    username_attribute: str = "uid"

    @property
    def active_directory(self) -> bool:
        return self.implementation == AD


def _attribute_name(ctx: BackendContext, key: str, value: str) -> str:
    if not value or not all(c.isalnum() or c in "-;" for c in value) or not value[0].isalpha():
        raise ctx.error(key, f"not an attribute name: {value!r}")
    return value


def _dn(ctx: BackendContext, key: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_dn(value)
    except ValueError as exc:
        raise ctx.error(key, f"not a DN: {exc}") from None
    if not value.strip():
        raise ctx.error(key, "an empty DN is not allowed here")
    return value


def _filter(ctx: BackendContext, key: str, text: str, slots: tuple[str, ...]) -> filters.Filter:
    try:
        compiled = filters.parse_filter(text, slots)
    except filters.FilterError as exc:
        raise ctx.error(key, str(exc)) from None
    for slot in slots:
        if slot not in compiled.slots:
            raise ctx.error(key, f"the filter must use {{{slot}}}")
    return compiled


def _path(ctx: BackendContext, key: str, *, directory: bool = False) -> str | None:
    value = ctx.options.string(key)
    if value is None:
        return None
    resolved = str(ctx.path(value))  # relative to the configuration file
    check = os.path.isdir if directory else os.path.isfile
    if not check(resolved):
        raise ctx.error(key, f"{'directory' if directory else 'file'} not found: {resolved}")
    return resolved


def _group_item(ctx: BackendContext, key: str, item: str) -> str:
    if "=" in item:
        try:
            parse_dn(item)
        except ValueError as exc:
            raise ctx.error(key, f"not a DN: {exc}") from None
        return "dn:" + normalize_dn(item)
    return "name:" + item.casefold()


def read_settings(ctx: BackendContext) -> Settings:
    """Read and check every option of one ``ldap`` backend instance."""
    opts = ctx.options
    implementation = opts.choice("implementation", (GENERIC, AD), GENERIC)
    ad = implementation == AD

    # ---------------------------------------------------------- servers and TLS
    uris = opts.strings("uri")
    if not uris:
        raise ctx.error("uri", 'is required: "ldaps://host" or a list of URIs')
    insecure = opts.boolean("insecure", False)
    servers = []
    for index, uri in enumerate(uris):
        try:
            servers.append(parse_uri(uri, insecure=insecure))
        except ValueError as exc:
            raise ctx.error(f"uri[{index}]", str(exc)) from None
    if len(set(servers)) != len(servers):
        raise ctx.error("uri", "a server is listed twice")
    ca_file = _path(ctx, "ca_file")
    ca_dir = _path(ctx, "ca_dir", directory=True)
    client_cert = _path(ctx, "client_cert")
    client_key = _path(ctx, "client_key")
    if client_key is not None and client_cert is None:
        raise ctx.error("client_key", "needs client_cert")
    context: ssl.SSLContext | None = None
    if any(s.tls != "none" for s in servers):
        try:
            context = make_ssl_context(ca_file=ca_file, ca_dir=ca_dir, client_cert=client_cert, client_key=client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ctx.error("ca_file" if client_cert is None else "client_cert", f"cannot load: {exc}") from None

    connect_timeout = opts.number("connect_timeout", 5.0, minimum=0.01, maximum=300.0)
    operation_timeout = opts.number("operation_timeout", 5.0, minimum=0.01, maximum=300.0)

    # ---------------------------------------------------------- finding the user
    user_dn = opts.string("user_dn")
    upn_suffix = opts.string("upn_suffix")
    netbios_domain = opts.string("netbios_domain")
    chosen = [k for k, v in (("user_dn", user_dn), ("upn_suffix", upn_suffix), ("netbios_domain", netbios_domain)) if v]
    if len(chosen) > 1:
        raise ctx.error(chosen[1], f"choose one of user_dn, upn_suffix and netbios_domain (also set: {chosen[0]})")
    if (upn_suffix or netbios_domain) and not ad:
        raise ctx.error(chosen[0], 'is for implementation = "activedirectory"')
    template = None
    if user_dn is not None:
        try:
            template = DnTemplate(user_dn)
        except ValueError as exc:
            raise ctx.error("user_dn", str(exc)) from None
    for key, value in (("upn_suffix", upn_suffix), ("netbios_domain", netbios_domain)):
        if value is not None and (value != value.strip() or check_ad_logon_name(value.replace(".", "a")) is not None):
            raise ctx.error(key, f"not a domain name: {value!r}")
    user_base = _dn(ctx, "user_base", opts.string("user_base"))
    scope_name = opts.choice("user_scope", tuple(wire.SCOPES), "subtree")
    filter_text = opts.string("user_filter", AD_USER_FILTER if ad else GENERIC_USER_FILTER)
    user_filter = _filter(ctx, "user_filter", filter_text, ("username",))
    if template is not None:
        mode = "dn"
    elif upn_suffix is not None:
        mode = "upn"
    elif netbios_domain is not None:
        mode = "downlevel"
    elif user_base is not None:
        mode = "search"
    else:
        raise ctx.error("user_base", "is required (search then bind), unless user_dn (direct bind) is set")
    bind_dn = _dn(ctx, "bind_dn", opts.string("bind_dn"))
    bind_password = opts.secret("bind_password")
    if bind_dn is not None and bind_password is None:
        raise ctx.error("bind_password", 'is required with bind_dn: {env = "NAME"} or {file = "/path"}')
    if bind_password is not None and bind_dn is None:
        raise ctx.error("bind_dn", "is required with bind_password")
    if bind_password is not None and bind_password.is_empty():
        raise ctx.error("bind_password", "is empty (an empty password would be an anonymous bind)")

    # ---------------------------------------------------------- groups
    membership_raw = opts.strings("group_membership", ("memberOf",) if ad else ("member",))
    membership = []
    for index, item in enumerate(membership_raw):
        canonical = MEMBERSHIPS.get(item.lower())
        if canonical is None:
            raise ctx.error(f"group_membership[{index}]", f"one of {', '.join(MEMBERSHIPS.values())}; got {item!r}")
        if canonical not in membership:
            membership.append(canonical)
    group_base = _dn(ctx, "group_base", opts.string("group_base"))
    group_scope = opts.choice("group_scope", tuple(wire.SCOPES), "subtree")
    group_filter_text = opts.string("group_filter", "(objectClass=group)" if ad else "")
    group_filter = _filter(ctx, "group_filter", group_filter_text, ()) if group_filter_text else None
    nested = opts.boolean("nested_groups", False)
    require = tuple(_group_item(ctx, "require_groups", g) for g in opts.strings("require_groups"))
    deny = tuple(_group_item(ctx, "deny_groups", g) for g in opts.strings("deny_groups"))
    name_attribute = opts.string("group_name_attribute", "cn")
    if name_attribute.lower() != "dn":
        _attribute_name(ctx, "group_name_attribute", name_attribute)
    groups = GroupSettings(
        base=group_base,
        scope=wire.SCOPES[group_scope],
        filter=group_filter,
        membership=tuple(membership),
        nested=nested,
        max_depth=opts.integer("max_group_depth", 16, minimum=1, maximum=100),
        name_attribute="dn" if name_attribute.lower() == "dn" else name_attribute,
        member_uid_attribute=_attribute_name(
            ctx, "member_uid_attribute", opts.string("member_uid_attribute", "sAMAccountName" if ad else "uid")
        ),
        require=require,
        deny=deny,
        in_identity=opts.boolean("groups_in_identity", True),
    )
    explicit_group_side = "group_membership" in opts and any(m in GROUP_SIDE for m in membership)
    if group_base is None and (explicit_group_side or (nested and ad)):
        raise ctx.error("group_base", "is required to search groups by member, uniqueMember or memberUid")
    if (require or deny) and not groups.enabled:
        raise ctx.error(
            "require_groups" if require else "deny_groups",
            'needs group_base (or group_membership = ["memberOf"]) to find the groups',
        )

    attributes = tuple(
        a if a.lower() == "dn" else _attribute_name(ctx, "attributes", a) for a in opts.strings("attributes")
    )
    if mode in ("upn", "downlevel") and user_base is None:  # the entry cannot be found
        raise ctx.error("user_base", "is required to read the user's entry (its stored name, groups, attributes)")
    username_attribute = _attribute_name(
        ctx, "username_attribute", opts.string("username_attribute", _default_username_attribute(template, ad))
    )
    settings = Settings(
        name=ctx.name,
        implementation=implementation,
        servers=tuple(servers),
        selection=opts.choice("server_selection", ("first", "round_robin"), "first"),
        retry_after=opts.number("retry_dead_after", 30.0, minimum=0.0, maximum=86400.0),
        connect_timeout=connect_timeout,
        operation_timeout=operation_timeout,
        pool_size=opts.integer("pool_size", 8, minimum=1, maximum=1024),
        connection_lifetime=opts.number("connection_lifetime", 300.0, minimum=1.0, maximum=86400.0),
        ssl_context=context,
        referrals=opts.boolean("referrals", False),
        mode=mode,
        dn_template=template,
        upn_suffix=upn_suffix,
        netbios_domain=netbios_domain,
        user_base=user_base,
        user_scope=wire.SCOPES[scope_name],
        user_filter=user_filter,
        user_filter_text=filter_text,
        bind_dn=bind_dn,
        bind_password=bind_password,
        password_policy=opts.boolean("password_policy", not ad),
        attributes=attributes,
        key_attribute=_attribute_name(ctx, "key_attribute", opts.string("key_attribute", "sshPublicKey")),
        groups=groups,
        username_attribute=username_attribute,
    )
    return settings


def _default_username_attribute(template: DnTemplate | None, ad: bool) -> str:
    """The attribute the user's name is stored in: the one ``{username}``
    stands for in ``user_dn``, else ``sAMAccountName`` (AD) or ``uid``."""
    if template is not None:
        prefix = template.text.split(DnTemplate.PLACEHOLDER, 1)[0][:-1]
        name = prefix.rsplit(",", 1)[-1].rsplit("+", 1)[-1].strip()
        if name:
            return name
    return "sAMAccountName" if ad else "uid"
