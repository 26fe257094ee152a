"""The ``ldap`` backend: LDAP directories and Active Directory.

Roles:

- **auth** (``authenticate``): bind as the user, then check the account
  state and the group requirements (so ``require_groups`` holds even when
  the instance is only in ``[[auth]]``).  The groups and the configured
  attributes go into the :class:`nxauth.Identity`.
- **account** (``check_account``): the user's entry exists, its state allows
  a login, the group requirements hold.  Right after this instance's own
  successful ``authenticate`` in the same session, that decision is reused
  (no second round trip).
- **key source** (``authorized_keys``): the transport account's
  ``sshPublicKey`` values (openssh-lpk schema), each an authorized_keys line
  (options allowed), so stage-1 keys can live in the directory.

Security by default:

- Empty and white-space-only passwords are refused before any traffic (a
  simple bind with a DN and an empty password is RFC 4513's unauthenticated
  bind, which some servers let succeed); so are passwords with NUL, and
  usernames with control characters.
- ``ldaps://`` servers, and ``ldap://`` servers through StartTLS: the chain
  (CA file or directory, else the system store) and the host name are
  verified, TLS 1.2 or newer.  Plain LDAP only with ``insecure = true``.
- Values never become filter syntax: filter templates are parsed once and
  the username is placed as raw octets in its assertion; in a DN template it
  is escaped as an RDN value; AD logon names refuse AD's forbidden characters.
  A search that matches more than one entry is refused.
- Every wait is bounded: connecting by ``connect_timeout``, and the whole
  login's directory work by ``operation_timeout``.  A server that does not
  answer is denied as ``timeout`` and skipped for ``retry_dead_after``
  seconds; one that refuses or drops connections is skipped and the next
  server tried within the same login.
- Referrals are not followed unless ``referrals = true``.
- Passwords are sent as typed, UTF-8 (no SASLprep), as OpenLDAP's tools and
  AD expect.  Only a result code 0 is a success; every other answer, error
  or timeout is a deny.

The account and key-source roles read with the service account (or
anonymously without one); in ``upn``/``netbios_domain`` modes they need
``user_base``.

Connections: the service account's connections are pooled and shared by
threads (each checked out by one thread at a time).  User binds run on a
separate pool: a connection bound as one user is only ever used again for
another bind, never for a search on someone else's behalf, and reads made
as the user (when there is no service account) happen within the same
checkout, right after that user's bind.

Options (``[backends.NAME]`` with ``kind = "ldap"``), defaults in brackets:

Servers and TLS
  ``uri``                 a URI or a list of them: ``ldaps://host[:636]``,
                          ``ldap://host[:389]`` (StartTLS)  [required]
  ``server_selection``    ``first`` (first live server) or ``round_robin``  [first]
  ``retry_dead_after``    seconds a failed server is skipped  [30]
  ``connect_timeout``     seconds to connect and finish TLS  [5]
  ``operation_timeout``   seconds for all of one login's directory work  [5]
  ``pool_size``           idle connections kept, per pool (service, user binds)  [8]
  ``connection_lifetime`` seconds before a connection is replaced  [300]
  ``insecure``            ``ldap://`` without StartTLS: plain text  [false]
  ``ca_file``, ``ca_dir`` CA certificates  [the system store]
  ``client_cert``, ``client_key``  a client certificate  [none]
  ``referrals``           follow the referrals of searches, one level, with the
                          same TLS policy and the service account; binds always
                          go to the configured servers  [false]

Finding the user (one of the first three, else search then bind)
  ``user_dn``             direct bind: ``uid={username},ou=people,dc=example,dc=org``
  ``upn_suffix``          AD: bind as ``username@suffix``
  ``netbios_domain``      AD: bind as ``DOMAIN\\username``
  ``user_base``           where users are searched (search then bind; also
                          where AD users' entries are read: required with
                          ``upn_suffix`` and ``netbios_domain``)
  ``user_scope``          ``base``, ``one`` or ``subtree``  [subtree]
  ``user_filter``         with ``{username}``  [``(uid={username})``; AD:
                          ``(&(objectCategory=person)(objectClass=user)(|(sAMAccountName={username})``
                          ``(userPrincipalName={username})))``]
  ``bind_dn``, ``bind_password``  the service account; the password as
                          ``{env = "NAME"}`` or ``{file = "/path"}``  [anonymous]
  ``username_attribute``  the attribute that stores the user's name, read
                          back from the entry; it must hold one value, the
                          canonical form of the name typed  [the attribute
                          ``{username}`` stands for in ``user_dn``, else
                          ``uid``; AD: ``sAMAccountName``]

Groups
  ``group_base``          where groups are searched  [none]
  ``group_scope``         [subtree]
  ``group_filter``        extra condition for group entries  [none; AD: ``(objectClass=group)``]
  ``group_membership``    any of ``member``, ``uniqueMember``, ``memberUid``,
                          ``memberOf``  [member; AD: memberOf]
  ``nested_groups``       include groups of groups  [false]
  ``max_group_depth``     levels walked for nested groups  [16]
  ``group_name_attribute`` the group's name in the Identity, or ``dn``  [cn]
  ``member_uid_attribute`` the user attribute memberUid holds  [uid; AD: sAMAccountName]
  ``require_groups``      the user must be in one of these (names or DNs)  [none]
  ``deny_groups``         the user must be in none of these; deny wins  [none]
  ``groups_in_identity``  put the groups into the Identity  [true]

Other
  ``implementation``      ``generic`` or ``activedirectory``  [generic]
  ``attributes``          user attributes copied to ``Identity.attributes``
                          (``dn`` for the entry's DN)  [none]
  ``password_policy``     send the ppolicy control on binds  [true; AD: false]
  ``key_attribute``       the key-source attribute  [sshPublicKey]

Account state: with the ppolicy overlay, a locked account
(``accountLocked``) is ``account-locked`` and an expired password or one to
change after a reset is ``password-expired``; ``pwdAccountLockedTime =
000001010000Z`` and 389-ds's ``nsAccountLock`` are honoured by the account
role.  With ``implementation = "activedirectory"``: disabled accounts
(``userAccountControl`` bit 2), expired accounts (``accountExpires``), and
passwords that must change (``pwdLastSet = 0``) are denied, and a failed
bind's sub-code (525, 52e, 530, 531, 532, 533, 701, 773, 775) becomes the
:class:`nxauth.Reason` of the audit trail; the client always sees the
generic message, because several sub-codes reveal that the password was
right.  Nested groups on AD use the ``1.2.840.113556.1.4.1941`` matching rule
(one search); elsewhere they are walked level by level, each group once, so
cycles end.

The name granted: a directory's matching rules are looser than nxauth's
canonical form (``caseIgnoreMatch`` folds width and compatibility forms,
collapses and trims spaces, and folds ``İ`` to ``i``; AD ignores width), so
the entry a look-alike finds is the real user's.  The entry is therefore
always read, and its ``username_attribute`` (one value) is the name the
verdict reports; the core refuses the login (``name-mismatch``) unless it is
the canonical form of the name typed.  When the entry can be read before the
bind (search then bind, or a service account), an entry storing another name
is refused before the password is sent (``username-attribute-differs``), so
look-alikes cannot be used to guess the real user's password past the
throttle.  A user who types
the UPN while the attribute is ``sAMAccountName`` is refused: one account, one
name (set ``username_attribute = "userPrincipalName"`` and a matching
``user_filter`` to log in by UPN).

Reasons: bad password ``bad-password``, no entry ``unknown-user``, several
entries / server errors ``backend-error``, no answer in time ``timeout``,
not in a required group ``not-in-group``, in a denied group ``denied``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nxauth.errors import PluginError
from nxauth.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from nxauth.backends.ldap.backend import LdapBackend
    from nxauth.plugins.registry import BackendContext, BackendRegistry

__all__ = ["LdapBackend", "build_ldap_backend"]

PLUGIN = "nxauth.backends.ldap"


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add("ldap", build_ldap_backend)


def build_ldap_backend(context: BackendContext) -> LdapBackend:
    """The factory for kind ``ldap``: imports ldap3, reads and checks the options."""
    try:
        import ldap3  # noqa: F401
    except ImportError:
        raise PluginError("the ldap backend needs ldap3: pip install 'nx-twostage-auth[ldap]'", plugin=PLUGIN) from None
    from nxauth.backends.ldap.backend import build_ldap_backend as build

    return build(context)


def __getattr__(name: str) -> Any:
    if name == "LdapBackend":
        from nxauth.backends.ldap.backend import LdapBackend

        return LdapBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
