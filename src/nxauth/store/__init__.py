"""The store: where nxauth keeps state — the embedded SQLite file by
default, PostgreSQL shared by every host of a cluster with ``[store] url``.
Both implement :class:`nxauth.Store`; :func:`open_store` picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nxauth.config.schema import Config
    from nxauth.store.protocol import Store

__all__ = ["open_store"]


def open_store(config: Config) -> Store:
    """The store ``config`` names: PostgreSQL when ``[store] url`` is set
    (its password read now, from its secret reference), else the SQLite file
    in the state directory.  Every failure is a :class:`nxauth.StoreError`."""
    settings = config.store
    if settings.url is None:
        from nxauth.store.sqlite import SqliteStore

        return SqliteStore(config.store_path)
    from nxauth.config.options import SecretRef
    from nxauth.errors import ConfigError, StoreError
    from nxauth.store.postgres import PostgresStore

    password = settings.password
    if isinstance(password, SecretRef):
        try:
            password = password.resolve(source=config.source, key="store.password")
        except ConfigError as exc:
            raise StoreError(str(exc)) from None
    return PostgresStore(
        settings.url,
        password=password,
        schema=settings.schema,
        pool_size=settings.pool_size,
        connect_timeout=settings.connect_timeout,
    )
