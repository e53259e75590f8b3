"""Roles from a ``pg_dumpall --globals-only`` dump: create the ones that are missing,
with their attributes, settings and memberships; never touch a role that exists
(a restore must not reset a live password). Tablespaces are reported, not created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from backupd.logging import get_logger

log = get_logger("backupd.roles")

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_ROLE = re.compile(rf"^CREATE ROLE ({_IDENT});$")
_ABOUT_ROLE = re.compile(rf"^(?:ALTER ROLE|COMMENT ON ROLE) ({_IDENT})\s")
_LABEL_ON_ROLE = re.compile(rf"^SECURITY LABEL (?:FOR {_IDENT} )?ON ROLE ({_IDENT})\s")
_GRANT_ROLE = re.compile(rf"^GRANT ({_IDENT}) TO ({_IDENT})(?:\s|;)")
_TABLESPACE = re.compile(rf"^CREATE TABLESPACE ({_IDENT})\s")


def unquote(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


def statements(script: str) -> list[str]:
    """Split pg_dumpall's output into statements: comments dropped, a statement may span
    lines while a string literal is open."""
    result: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not current and (not line.strip() or line.startswith("--")):
            continue
        current.append(line)
        text = "\n".join(current)
        if text.rstrip().endswith(";") and text.count("'") % 2 == 0:
            result.append(text.strip())
            current = []
    return result


@dataclass
class GlobalsPlan:
    roles: dict[str, list[str]] = field(default_factory=dict)  # role -> CREATE and its ALTER/COMMENT statements
    grants: list[tuple[str, str, str]] = field(default_factory=list)  # (group, member, statement)
    tablespaces: list[str] = field(default_factory=list)


def parse_globals(script: str) -> GlobalsPlan:
    plan = GlobalsPlan()
    for statement in statements(script):
        if match := _CREATE_ROLE.match(statement):
            plan.roles.setdefault(unquote(match.group(1)), []).insert(0, statement)
        elif match := (_ABOUT_ROLE.match(statement) or _LABEL_ON_ROLE.match(statement)):
            plan.roles.setdefault(unquote(match.group(1)), []).append(statement)
        elif match := _GRANT_ROLE.match(statement):
            plan.grants.append((unquote(match.group(1)), unquote(match.group(2)), statement))
        elif match := _TABLESPACE.match(statement):
            plan.tablespaces.append(unquote(match.group(1)))
    return plan


@dataclass
class RolesResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # statements that failed and were left out
    tablespaces: list[str] = field(default_factory=list)


def create_missing_roles(conn: psycopg.Connection, script: str, dry_run: bool = False) -> RolesResult:
    """Create the roles of ``script`` that ``conn``'s server lacks, in one transaction.
    With ``dry_run`` the transaction is rolled back: it proves the roles could be created."""
    plan = parse_globals(script)
    result = RolesResult(tablespaces=plan.tablespaces)
    existing = {name for (name,) in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    with conn.transaction(force_rollback=dry_run):
        for role, role_statements in plan.roles.items():
            if role in existing:
                result.existing.append(role)
                continue
            for statement in role_statements:
                if not _execute_in_savepoint(conn, statement):
                    if statement.startswith("CREATE ROLE"):
                        raise psycopg.errors.InvalidParameterValue(f"cannot create role {role!r}")
                    result.skipped.append(_describe(statement))
            result.created.append(role)
        new = set(result.created)
        for _group, member, statement in plan.grants:
            # Only memberships of roles created here: an existing role is never altered.
            if member in new and not _execute_in_savepoint(conn, statement):
                result.skipped.append(_describe(statement))
    if result.tablespaces:
        log.warning("the globals dump names tablespaces; backupd does not create them", tablespaces=result.tablespaces)
    if result.skipped:
        log.warning("some role statements could not be applied", statements=result.skipped)
    return result


def _execute_in_savepoint(conn: psycopg.Connection, statement: str) -> bool:
    try:
        with conn.transaction():
            conn.execute(statement.encode("utf-8"))
        return True
    except psycopg.Error as err:
        log.debug("role statement failed", error=str(err).strip())
        return False


def _describe(statement: str) -> str:
    # Never show a password hash, even a hashed one.
    return re.sub(r"PASSWORD\s+'[^']*'", "PASSWORD '********'", statement)[:200]
