"""Versioned schema migrations, applied in order at start-up.

A migration, once released, is never edited: a change to the schema is a new migration.
The SQL is kept to what SQLite and PostgreSQL both understand (TEXT ids, ISO-8601 UTC
timestamps as TEXT, JSON documents as TEXT, partial unique indexes).

Every row that belongs to an organisation carries ``organisation_id``, so every query can be
scoped to one organisation by an index, never by a join.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: tuple[str, ...]

    def statements(self) -> tuple[str, ...]:
        return self.sql


_INITIAL = (
    # code: typed at login and shown on devices, so it never changes once created.
    """CREATE TABLE organisations (
        id TEXT PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        short_name TEXT NOT NULL,
        long_name TEXT NOT NULL DEFAULT '',
        licences INTEGER NOT NULL DEFAULT 0,
        devices_per_user INTEGER,
        subscription_expires TEXT,
        features TEXT NOT NULL DEFAULT '{}',
        active INTEGER NOT NULL DEFAULT 1,
        vendor_id TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    # kind: supervisor | vendor | manager | user | resource. System accounts (supervisor,
    # vendor admins) have no organisation.
    """CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        organisation_id TEXT REFERENCES organisations(id),
        login TEXT NOT NULL,
        kind TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        email TEXT,
        password_hash TEXT,
        must_change_password INTEGER NOT NULL DEFAULT 0,
        rights TEXT NOT NULL DEFAULT '[]',
        locale TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX accounts_org_login ON accounts (organisation_id, login)"
    " WHERE organisation_id IS NOT NULL",
    "CREATE UNIQUE INDEX accounts_system_login ON accounts (login) WHERE organisation_id IS NULL",
    # Bearer tokens are stored as SHA-256 of a 256-bit random secret: the secret itself is
    # shown once and never kept.
    """CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        organisation_id TEXT REFERENCES organisations(id),
        token_hash TEXT NOT NULL UNIQUE,
        label TEXT NOT NULL DEFAULT '',
        scope TEXT NOT NULL DEFAULT 'full',
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT
    )""",
    "CREATE INDEX api_tokens_account ON api_tokens (account_id)",
    """CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        owner_id TEXT REFERENCES accounts(id),
        name TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL,
        protocol TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'created',
        imei TEXT,
        serial_number TEXT,
        udid TEXT,
        model TEXT,
        os_version TEXT,
        phone_number TEXT,
        compliant INTEGER,
        inventory TEXT NOT NULL DEFAULT '{}',
        enrolled_at TEXT,
        last_seen_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX devices_org_created ON devices (organisation_id, created_at)",
    "CREATE INDEX devices_owner ON devices (owner_id)",
    # state: queued | sent | acknowledged | failed | cancelled
    """CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        kind TEXT NOT NULL,
        parameters TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'queued',
        result TEXT,
        created_by TEXT REFERENCES accounts(id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX commands_device_state ON commands (device_id, state, created_at)",
    "CREATE INDEX commands_org_created ON commands (organisation_id, created_at)",
    # owner: 'system' for the supervisor's values, else the organisation id.
    """CREATE TABLE service_settings (
        owner TEXT PRIMARY KEY,
        organisation_id TEXT REFERENCES organisations(id),
        settings TEXT NOT NULL,
        revision INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE audit_events (
        id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        organisation_id TEXT,
        actor_id TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target_type TEXT,
        target_id TEXT,
        details TEXT NOT NULL DEFAULT '{}',
        source TEXT
    )""",
    "CREATE INDEX audit_events_org_at ON audit_events (organisation_id, at)",
)

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "initial", _INITIAL),)
