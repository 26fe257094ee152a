"""``nxauth log``: read the audit trail, in the spirit of ``last`` and ``lastb``.

The trail is the store's audit table when ``[audit] table`` is on (the
whole cluster's, on PostgreSQL), else the JSON lines file of ``[audit]
jsonl``.  Filters: ``--user``, ``--source`` (an address or a network),
``--outcome``, ``--since`` (``2h``, ``30m``, ``7d`` or an ISO time);
``--failed`` is stage 2's failed and refused logins (``lastb``), ``--last``
its accepted ones (``last``); admin changes are included unless a login
filter excludes them.  A table by default, ``--json`` for machines (one
record per line), ``--follow`` to wait for new events.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from nxauth.cli import EXIT_OK, EXIT_USAGE, CommandError
from nxauth.config import Config, default_config_path, load_config
from nxauth.usernames import escape_for_log

#: A line of the JSON lines file longer than this is skipped (nxauth writes short ones).
MAX_LINE: Final = 64 * 1024
FOLLOW_POLL: Final = 0.5


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("log", help="read the audit trail", description=__doc__)
    parser.set_defaults(handler=cmd_log)
    parser.add_argument("--user", help="only events about this user (canonical name)")
    parser.add_argument("--source", help="only events from this address or network (192.0.2.0/24)")
    parser.add_argument("--outcome", choices=("accepted", "failed", "refused"), help="only this outcome")
    parser.add_argument("--since", help="only events since: 2h, 30m, 7d, or an ISO time (2026-12-07T10:00)")
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--failed", action="store_true", help="failed and refused logins (stage 2), like lastb")
    views.add_argument("--last", action="store_true", help="accepted logins (stage 2), like last")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    parser.add_argument("--follow", action="store_true", help="print new events as they come (Ctrl-C ends)")
    parser.add_argument("--from", dest="source_of", choices=("table", "jsonl"), help="which trail (default: see above)")


def _since(text: str | None, now: float) -> float | None:
    if text is None:
        return None
    from nxauth.cli.keys import DURATION, parse_duration

    if DURATION.match(text.strip()):
        return now - parse_duration(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"--since: not a duration or an ISO time: {text!r} (e.g. 2h, 2026-12-07T10:00)", EXIT_USAGE
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without a zone is local time, as date(1) prints it
    return when.timestamp()


def _timestamp(record: dict[str, Any]) -> float:
    try:
        return datetime.datetime.fromisoformat(str(record.get("time"))).timestamp()
    except ValueError:
        return 0.0


def _matcher(args: argparse.Namespace, now: float) -> Callable[[dict[str, Any]], bool]:
    since = _since(args.since, now)
    network = None
    if args.source is not None:
        try:
            network = ipaddress.ip_network(args.source, strict=False)
        except ValueError:
            raise CommandError(f"--source: not an address or a network: {args.source!r}", EXIT_USAGE) from None
    logins_only = args.failed or args.last or args.outcome is not None or args.source is not None

    def match(record: dict[str, Any]) -> bool:
        admin = record.get("kind") == "admin"
        if admin and logins_only:
            return False
        if since is not None and _timestamp(record) < since:
            return False
        if args.user is not None and record.get("user") != args.user:
            return False
        if admin:
            return True
        outcome = record.get("outcome")
        if args.outcome is not None and outcome != args.outcome:
            return False
        if args.failed and (record.get("stage") != 2 or outcome == "accepted"):
            return False
        if args.last and (record.get("stage") != 2 or outcome != "accepted"):
            return False
        if network is not None:
            try:
                if ipaddress.ip_address(str(record.get("host"))) not in network:
                    return False
            except ValueError:
                return False
        return True

    return match


# ------------------------------------------------------------ the trails


def _jsonl(path: Path, follow: bool) -> Iterator[dict[str, Any]]:
    import json

    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise CommandError(f"{path}: no audit trail yet (no event was written)") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        pending = b""
        while True:
            chunk = handle.readline(MAX_LINE + 1)
            if not chunk:
                if not follow:
                    return
                time.sleep(FOLLOW_POLL)
                continue
            pending += chunk
            if not pending.endswith(b"\n"):
                if len(pending) > MAX_LINE:
                    pending = b""  # not a line nxauth wrote
                continue
            line, pending = pending, b""
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def _table(config: Config, follow: bool) -> Iterator[dict[str, Any]]:
    import json

    from nxauth.store import open_store

    store = open_store(config)
    try:
        last = 0
        while True:
            rows = store.execute(
                "SELECT id, host, event FROM audit_events WHERE id > ? ORDER BY id LIMIT 10000", (last,)
            )
            for row_id, host, event in rows:
                last = int(row_id)
                try:
                    record = json.loads(str(event))
                except ValueError:
                    continue
                if isinstance(record, dict):
                    record.setdefault("server", str(host))
                    yield record
            if not rows:
                if not follow:
                    return
                time.sleep(FOLLOW_POLL)
    finally:
        store.close()


# ------------------------------------------------------------ output


def _line(record: dict[str, Any]) -> str:
    when = str(record.get("time", ""))[:19].replace("T", " ")
    if record.get("kind") == "admin":
        what = f"admin {record.get('action')} by {escape_for_log(str(record.get('actor', '')))}"
        detail = " ".join(f"{k}={escape_for_log(str(record[k]))}" for k in ("user", "node") if record.get(k))
        return f"{when}  {what}  {detail}".rstrip()
    user = escape_for_log(str(record.get("user") or '""'))
    source = f"{record.get('host')}:{record.get('port')}"
    outcome = str(record.get("outcome", ""))
    reason = "" if outcome == "accepted" else f" ({record.get('reason')})"
    via = f" via {record.get('backend')}" if record.get("backend") and outcome == "accepted" else ""
    server = f"  [{record['server']}]" if record.get("server") else ""
    return f"{when}  stage {record.get('stage')}  {outcome}{reason}  {user}  from {source}{via}{server}"


def cmd_log(args: argparse.Namespace) -> int:
    """Print the audit trail's events that match the filters, oldest first."""
    import json

    path = args.config or default_config_path()
    config = load_config(path) if path is not None else Config()
    use_table = args.source_of == "table" or (args.source_of is None and config.audit_table)
    if not use_table and config.audit.jsonl is None:
        raise CommandError(
            "no audit trail to read: set [audit] jsonl = PATH (or [audit] table = true), then events are kept",
            EXIT_USAGE,
        )
    if args.user is not None:  # the canonical form, as the events hold it
        from nxauth.backends.userdb import UserDatabase
        from nxauth.usernames import InvalidUsername

        try:
            args.user = UserDatabase(lambda: None, case=config.usernames.case).canonical(args.user)  # type: ignore[arg-type, return-value]
        except InvalidUsername as exc:
            raise CommandError(f"--user: {exc}", EXIT_USAGE) from None
    match = _matcher(args, time.time())
    records = _table(config, args.follow) if use_table else _jsonl(Path(config.audit.jsonl or ""), args.follow)
    shown = 0
    try:
        for record in records:
            if not match(record):
                continue
            shown += 1
            if args.json:
                print(json.dumps(record, ensure_ascii=True, separators=(",", ":")), flush=args.follow)
            else:
                print(_line(record), flush=args.follow)
    except KeyboardInterrupt:
        return EXIT_OK
    if not shown and not args.json:
        print("no matching events")
    return EXIT_OK
