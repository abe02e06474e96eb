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

_TENANCY = (
    # Login id rules of the organisation's accounts: JSON, see engine/accounts.py.
    "ALTER TABLE organisations ADD COLUMN name_policy TEXT NOT NULL DEFAULT '{}'",
    # Every account comes from a template: preset kind, rights and locale.
    """CREATE TABLE account_templates (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        rights TEXT NOT NULL DEFAULT '[]',
        locale TEXT,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (organisation_id, name)
    )""",
    "ALTER TABLE accounts ADD COLUMN template_id TEXT REFERENCES account_templates(id)",
    "ALTER TABLE accounts ADD COLUMN phone_number TEXT",
    "CREATE INDEX accounts_org_kind ON accounts (organisation_id, kind, login)",
    """CREATE TABLE device_groups (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (organisation_id, name)
    )""",
    """CREATE TABLE device_group_members (
        group_id TEXT NOT NULL REFERENCES device_groups(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        added_at TEXT NOT NULL,
        PRIMARY KEY (group_id, device_id)
    )""",
    "CREATE INDEX device_group_members_device ON device_group_members (device_id)",
    # purpose: enrol_device (made with a device) | new_account_and_device |
    # new_device_for_account | bind_device. Codes are unique service-wide: a device types
    # one without saying which organisation it belongs to.
    """CREATE TABLE installation_codes (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        code TEXT NOT NULL UNIQUE,
        purpose TEXT NOT NULL,
        device_id TEXT REFERENCES devices(id),
        account_id TEXT REFERENCES accounts(id),
        template_id TEXT REFERENCES account_templates(id),
        expires_at TEXT,
        usage_limit INTEGER,
        times_used INTEGER NOT NULL DEFAULT 0,
        last_used_at TEXT,
        created_by TEXT REFERENCES accounts(id),
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
    "CREATE INDEX installation_codes_org ON installation_codes (organisation_id, created_at)",
    # Uploaded certificates (the APNS push certificate); organisation_id NULL: system-wide.
    """CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        organisation_id TEXT REFERENCES organisations(id),
        purpose TEXT NOT NULL,
        subject TEXT NOT NULL,
        topic TEXT,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        certificate_pem TEXT NOT NULL,
        private_key_pem TEXT,
        created_by TEXT REFERENCES accounts(id),
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX certificates_org ON certificates (organisation_id, purpose)",
    # Inventory lists sort by these within one organisation.
    "CREATE INDEX devices_org_name ON devices (organisation_id, name)",
    "CREATE INDEX devices_org_last_seen ON devices (organisation_id, last_seen_at)",
    "CREATE INDEX devices_org_platform ON devices (organisation_id, platform)",
    # A bulk command (one request, many devices) shares a batch id.
    "ALTER TABLE commands ADD COLUMN batch_id TEXT",
    "ALTER TABLE commands ADD COLUMN sent_at TEXT",
    "ALTER TABLE commands ADD COLUMN completed_at TEXT",
    "CREATE INDEX commands_org_state ON commands (organisation_id, state, created_at)",
    "CREATE INDEX commands_batch ON commands (batch_id)",
)

_INVENTORY_INDEXES = (
    # Paging the inventory reads ids in sort order from the index alone (no row reads for
    # the rows it skips); the state is in the index because lists leave out removed devices.
    "DROP INDEX devices_org_name",
    "DROP INDEX devices_org_last_seen",
    "CREATE INDEX devices_org_name ON devices (organisation_id, name, state, id)",
    "CREATE INDEX devices_org_last_seen ON devices (organisation_id, last_seen_at, state, id)",
)

_MESSAGES = (
    # Messages an organisation broadcasts to its device owners (engine/messages.py).
    # severity: info | warning | urgent; audience: all (every device owner) | groups (owners
    # of devices in the groups of message_groups). ON DELETE: removing the organisation
    # removes its messages, removing an account keeps what it posted without its author,
    # removing a device group takes it out of the audiences that named it.
    """CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        body TEXT NOT NULL DEFAULT '',
        severity TEXT NOT NULL DEFAULT 'info',
        audience TEXT NOT NULL DEFAULT 'all',
        valid_from TEXT NOT NULL,
        valid_until TEXT,
        created_by TEXT REFERENCES accounts(id) ON DELETE SET NULL,
        created_at TEXT NOT NULL,
        withdrawn_at TEXT
    )""",
    "CREATE INDEX messages_org_created ON messages (organisation_id, created_at)",
    # What a device owner is shown: the organisation's messages valid now, newest first.
    "CREATE INDEX messages_org_valid ON messages (organisation_id, withdrawn_at, valid_from)",
    """CREATE TABLE message_groups (
        message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        group_id TEXT NOT NULL REFERENCES device_groups(id) ON DELETE CASCADE,
        organisation_id TEXT NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
        PRIMARY KEY (message_id, group_id)
    )""",
    "CREATE INDEX message_groups_group ON message_groups (group_id)",
)

_COMMAND_OWNERS = (
    # The device's owner when the command was queued (NULL: the device had none). Owners see
    # the commands given while the device was theirs, never those of its earlier or later
    # owners (engine/commands.py). Removing the account leaves its commands to managers.
    "ALTER TABLE commands ADD COLUMN owner_id TEXT REFERENCES accounts(id) ON DELETE SET NULL",
    # Until now commands went with the device's owner of the day; the current owner is the
    # best guess there is for the commands already given.
    "UPDATE commands SET owner_id = (SELECT d.owner_id FROM devices d"
    " WHERE d.id = commands.device_id)",
    # An owner's list (organisation and owner equal, newest first); owner_id leads so that
    # ON DELETE SET NULL finds an account's commands by the same index.
    "CREATE INDEX commands_owner ON commands (owner_id, organisation_id, created_at)",
)

_SIGN_IN_ATTEMPTS = (
    # Failed sign-ins per sign-in name (organisation code + login id), whether an account of
    # that name exists or not: lock-outs then tell nothing about which accounts exist.
    """CREATE TABLE sign_in_attempts (
        name TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until TEXT,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX sign_in_attempts_updated ON sign_in_attempts (updated_at)",
    # Counted per name now (above), no longer per account.
    "ALTER TABLE accounts DROP COLUMN failed_logins",
    "ALTER TABLE accounts DROP COLUMN locked_until",
)

_WINDOWS_ENROLMENT = (
    # One row per device enrolled through Microsoft's enrolment services (MS-MDE2): the
    # certificate it was given (SHA-1 thumbprint as Windows names certificates; the current
    # one only: a renewal replaces it), what it said of itself, and the unenrolment state
    # (enrolled | unenrolment_requested | unenrolled) an OMA DM session acts on.
    """CREATE TABLE windows_enrolments (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        owner_id TEXT REFERENCES accounts(id),
        hardware_id TEXT,
        enrolment_type TEXT NOT NULL,
        auth_policy TEXT NOT NULL,
        certificate_thumbprint TEXT NOT NULL,
        certificate_serial TEXT NOT NULL,
        certificate_not_after TEXT NOT NULL,
        client_secret TEXT NOT NULL,
        server_secret TEXT NOT NULL,
        client_nonce TEXT NOT NULL,
        state TEXT NOT NULL,
        unenrolment_requested_at TEXT,
        unenrolment_requested_by TEXT REFERENCES accounts(id),
        unenrolled_at TEXT,
        enrolled_at TEXT NOT NULL,
        renewed_at TEXT,
        updated_at TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX windows_enrolments_thumbprint"
    " ON windows_enrolments (certificate_thumbprint)",
    "CREATE INDEX windows_enrolments_hardware ON windows_enrolments (organisation_id, hardware_id)",
    # Tokens of the Federated sign-in page (MS-MDE2 AuthenticationServiceUrl): one-time,
    # short-lived, stored as SHA-256 like API tokens; used up by the enrolment they allow.
    """CREATE TABLE windows_enrolment_tokens (
        token_hash TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX windows_enrolment_tokens_expiry ON windows_enrolment_tokens (expires_at)",
)

_APPLE_MDM = (
    # Device identities handed out in enrolment profiles, by the SHA-256 of the
    # certificate: a check-in is only believed from an identity issued here, and the first
    # Authenticate binds it to that device's enrolment (enrolment_id). device_id/owner_id:
    # the inventory entry or owner an installation code named when the profile was made.
    """CREATE TABLE apple_mdm_identities (
        fingerprint TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        device_id TEXT REFERENCES devices(id),
        owner_id TEXT REFERENCES accounts(id) ON DELETE SET NULL,
        enrolment_id TEXT,
        not_after TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX apple_mdm_identities_org ON apple_mdm_identities (organisation_id)",
    # One row per channel: the device channel (id = UDID or EnrollmentID) and its user
    # channels (id = "<device channel>/<UserID or EnrollmentUserID>", parent_id = the device
    # channel). state: authenticated | enrolled | checked_out. unlock_token and
    # bootstrap_token are sealed (AES-GCM with a key derived from the service CA's key).
    # token_bad_at: APNs called the push token permanently bad; no push until a new one.
    """CREATE TABLE apple_mdm_enrolments (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        parent_id TEXT REFERENCES apple_mdm_enrolments(id) ON DELETE CASCADE,
        user_id TEXT,
        user_short_name TEXT,
        user_long_name TEXT,
        user_enrolment INTEGER NOT NULL DEFAULT 0,
        identity TEXT NOT NULL,
        topic TEXT NOT NULL,
        state TEXT NOT NULL,
        push_token TEXT,
        push_magic TEXT,
        unlock_token TEXT,
        bootstrap_token TEXT,
        awaiting_configuration INTEGER NOT NULL DEFAULT 0,
        token_bad_at TEXT,
        token_bad_reason TEXT,
        last_push_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX apple_mdm_enrolments_device ON apple_mdm_enrolments (device_id)",
    "CREATE INDEX apple_mdm_enrolments_org ON apple_mdm_enrolments (organisation_id, state)",
    "CREATE INDEX apple_mdm_enrolments_parent ON apple_mdm_enrolments (parent_id)",
)

_PIM = (
    # One collection per account and kind (contacts | calendar | tasks | notes). ``version``
    # is the collection's change counter: every change takes the next number, so a device's
    # state is "every change after N" (engine/pim.py).
    """CREATE TABLE pim_collections (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        account_id TEXT NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        UNIQUE (account_id, kind)
    )""",
    # The latest state of every item, deleted ones kept as tombstones (data NULL), so that
    # "changes after N" includes deletions. ``origin``: the device whose change this is
    # (NULL: the service or a portal), not echoed back to that device. ``fingerprint``:
    # the item's normalised content, to recognise an item a device sends again in a slow sync.
    """CREATE TABLE pim_items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id TEXT NOT NULL REFERENCES pim_collections(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        version INTEGER NOT NULL,
        origin TEXT,
        content_type TEXT NOT NULL,
        data TEXT,
        uid TEXT,
        fingerprint TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX pim_items_changes ON pim_items (collection_id, version)",
    "CREATE INDEX pim_items_fingerprint ON pim_items (collection_id, fingerprint)",
    "CREATE INDEX pim_items_uid ON pim_items (collection_id, uid)",
    # What one device holds of one collection: its sync anchors, the last change it has
    # seen, how it last synchronised, and whether its owner asked for a refresh.
    """CREATE TABLE pim_sync_states (
        device_id TEXT NOT NULL REFERENCES devices(id),
        collection_id TEXT NOT NULL REFERENCES pim_collections(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        datastore TEXT NOT NULL,
        client_anchor TEXT,
        server_anchor TEXT,
        seen_version INTEGER NOT NULL DEFAULT 0,
        last_sync_at TEXT,
        last_mode TEXT,
        refresh_requested INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, collection_id)
    )""",
    # The device's own ids of items (LUID) beside the service's.
    """CREATE TABLE pim_id_map (
        device_id TEXT NOT NULL REFERENCES devices(id),
        collection_id TEXT NOT NULL REFERENCES pim_collections(id),
        luid TEXT NOT NULL,
        item_id INTEGER NOT NULL REFERENCES pim_items(id),
        PRIMARY KEY (device_id, collection_id, luid)
    )""",
    "CREATE INDEX pim_id_map_item ON pim_id_map (device_id, collection_id, item_id)",
    # Per device: the nonce of its next MD5 authentication and what its DevInf said.
    """CREATE TABLE pim_peers (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        nonce TEXT,
        devinf TEXT NOT NULL DEFAULT '{}',
        updated_at TEXT NOT NULL
    )""",
    # SyncML MD5 authentication needs B64(MD5(user:password)) on the service's side; it is
    # kept once the owner has authenticated with Basic (checked against the scrypt hash).
    """CREATE TABLE pim_credentials (
        account_id TEXT PRIMARY KEY REFERENCES accounts(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        username TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    # Devices are found by the id their sync client sends.
    # Partial: devices without the value are left out, so the planner's statistics describe
    # only real values (with thousands of NULLs it would judge the index useless and scan).
    "CREATE INDEX devices_imei ON devices (imei) WHERE imei IS NOT NULL",
    "CREATE INDEX devices_serial_number ON devices (serial_number) WHERE serial_number IS NOT NULL",
    "CREATE INDEX devices_udid ON devices (udid) WHERE udid IS NOT NULL",
)

_ACTIVESYNC = (
    # One row per Exchange ActiveSync device: its own device id and type, the policy key it
    # acknowledged (and the temporary one of an unfinished Provision), a remote wipe on its
    # way, its folder hierarchy sync key and folders, its last Ping and DeviceInformation.
    """CREATE TABLE eas_devices (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        account_id TEXT NOT NULL REFERENCES accounts(id),
        eas_device_id TEXT NOT NULL,
        device_type TEXT NOT NULL,
        protocol_version TEXT,
        policy_key TEXT,
        pending_policy_key TEXT,
        policy_revision INTEGER,
        provisioned_at TEXT,
        wipe_command_id TEXT,
        wipe_kind TEXT,
        wipe_sent_at TEXT,
        wiped_at TEXT,
        folder_sync_key INTEGER NOT NULL DEFAULT 0,
        folders TEXT NOT NULL DEFAULT '[]',
        heartbeat INTEGER,
        ping_folders TEXT NOT NULL DEFAULT '[]',
        device_information TEXT NOT NULL DEFAULT '{}',
        last_command TEXT,
        last_seen_at TEXT,
        last_sync_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX eas_devices_account ON eas_devices (account_id, eas_device_id)",
    "CREATE INDEX eas_devices_org ON eas_devices (organisation_id)",
    # Per device and folder: the SyncKey it holds, the change number it has seen, and the
    # key and change number before, so a Sync repeated after a lost response is served again;
    # reset_version: the change number when the device started over (SyncKey 0), before
    # which the device's own items are sent to it again.
    """CREATE TABLE eas_folder_states (
        device_id TEXT NOT NULL REFERENCES devices(id),
        folder TEXT NOT NULL,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        collection_id TEXT REFERENCES pim_collections(id),
        sync_key INTEGER NOT NULL,
        seen_version INTEGER NOT NULL DEFAULT 0,
        previous_key INTEGER,
        previous_version INTEGER,
        reset_version INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (device_id, folder)
    )""",
    # The organisation's ActiveSync settings: the device policy (EASProvisionDoc), the Ping
    # heartbeat bounds and whether unknown devices may enrol at first contact.
    """CREATE TABLE eas_settings (
        organisation_id TEXT PRIMARY KEY REFERENCES organisations(id),
        settings TEXT NOT NULL DEFAULT '{}',
        revision INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT NOT NULL
    )""",
)

_WSDM = (
    # The WSDM side of a device (engine/wsdm.py): its device token as SHA-256 (the token
    # itself is shown once, at enrolment), its XMPP push identity, and its check-ins.
    # unenrolled_at: the token no longer works; a new enrolment replaces the row.
    # enrolment_id (SHA-256 of the id the device chose) and enrolled_with (the code or
    # account, JSON): a retried enrolment whose answer was lost is known by them.
    """CREATE TABLE wsdm_devices (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        token_hash TEXT NOT NULL UNIQUE,
        push_jid TEXT,
        enrolled_at TEXT NOT NULL,
        last_checkin_at TEXT,
        last_checkin_id TEXT,
        checkins INTEGER NOT NULL DEFAULT 0,
        configuration_hash TEXT,
        overdue_since TEXT,
        unenrolled_at TEXT,
        enrolment_id TEXT,
        enrolled_with TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX wsdm_devices_org_checkin ON wsdm_devices (organisation_id, last_checkin_at)",
    "CREATE INDEX wsdm_devices_enrolment ON wsdm_devices (organisation_id, enrolment_id)",
    # Locations the devices report; one per device and moment, so a repeated report is one.
    """CREATE TABLE wsdm_locations (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        command_id TEXT,
        latitude REAL NOT NULL,
        longitude REAL NOT NULL,
        accuracy REAL,
        recorded_at TEXT NOT NULL,
        received_at TEXT NOT NULL,
        UNIQUE (device_id, recorded_at)
    )""",
    "CREATE INDEX wsdm_locations_org ON wsdm_locations (organisation_id, device_id, recorded_at)",
    # Recurring jobs of the WSDM scheduler, claimed here so that two nodes never both run
    # one: a node takes a job by moving its due_at forward in the same statement that
    # checks it was due.
    """CREATE TABLE wsdm_schedules (
        name TEXT PRIMARY KEY,
        organisation_id TEXT REFERENCES organisations(id),
        due_at TEXT NOT NULL,
        claimed_by TEXT,
        claimed_at TEXT
    )""",
)

_OMA_DM = (
    # The management tree snapshot of OMA DM devices (Windows and plain OMA DM): the last
    # known value of every node read from the device or written to it.
    """CREATE TABLE omadm_nodes (
        device_id TEXT NOT NULL REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        uri TEXT NOT NULL,
        value TEXT,
        format TEXT,
        type TEXT,
        source TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (device_id, uri)
    )""",
    # Per device: the DM credentials' digest B64(MD5(user:password)) (kept once the owner
    # authenticated with Basic), the nonce of its next MD5/HMAC authentication, the session
    # count and time, and a wake-up waiting for a server-initiated session (no push channel
    # reaches the device: Windows' WNS is not reachable, and the package 0 notification is
    # what an SMS/WAP-push gateway would carry).
    """CREATE TABLE omadm_peers (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        username TEXT,
        digest TEXT,
        nonce TEXT,
        pending_alert_at TEXT,
        notification TEXT,
        login_status TEXT,
        sessions INTEGER NOT NULL DEFAULT 0,
        last_session_at TEXT,
        updated_at TEXT NOT NULL
    )""",
    # Node values a manager set for a device (a setting, a Windows Policy CSP value), sent
    # as Replace in its next session. state: queued | sent | applied | failed.
    """CREATE TABLE omadm_settings (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        uri TEXT NOT NULL,
        value TEXT NOT NULL,
        format TEXT NOT NULL,
        type TEXT,
        state TEXT NOT NULL,
        status INTEGER,
        created_by TEXT REFERENCES accounts(id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX omadm_settings_device ON omadm_settings (device_id, state, created_at)",
)

_EAS_FOLDERS = (
    # Several collections per account and kind: the *default* one (is_default = 1, one per
    # account and kind: the one OMA DS synchronises and ActiveSync shows as Contacts,
    # Calendar, ...) and folders the owner made over ActiveSync (FolderCreate), with their
    # display name, parent folder (ActiveSync ServerId, '0' the root) and ActiveSync folder
    # type. A deleted folder keeps its row (deleted_at) as its items keep their tombstones.
    # SQLite cannot drop a table's UNIQUE constraint, so the table is made again; the
    # tables that refer to it are made again with it (children first dropped, then every
    # new table renamed: the references follow the renames), all in this one transaction.
    """CREATE TABLE pim_collections_m13 (
        id TEXT PRIMARY KEY,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        account_id TEXT NOT NULL REFERENCES accounts(id),
        kind TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        is_default INTEGER NOT NULL DEFAULT 1,
        display_name TEXT,
        parent_id TEXT,
        folder_type INTEGER,
        updated_at TEXT,
        deleted_at TEXT
    )""",
    "INSERT INTO pim_collections_m13 (id, organisation_id, account_id, kind, version,"
    " created_at, is_default) SELECT id, organisation_id, account_id, kind, version,"
    " created_at, 1 FROM pim_collections",
    """CREATE TABLE pim_items_m13 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection_id TEXT NOT NULL REFERENCES pim_collections_m13(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        version INTEGER NOT NULL,
        origin TEXT,
        content_type TEXT NOT NULL,
        data TEXT,
        uid TEXT,
        fingerprint TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "INSERT INTO pim_items_m13 (id, collection_id, organisation_id, version, origin,"
    " content_type, data, uid, fingerprint, deleted, created_at, updated_at)"
    " SELECT id, collection_id, organisation_id, version, origin, content_type, data, uid,"
    " fingerprint, deleted, created_at, updated_at FROM pim_items",
    """CREATE TABLE pim_sync_states_m13 (
        device_id TEXT NOT NULL REFERENCES devices(id),
        collection_id TEXT NOT NULL REFERENCES pim_collections_m13(id),
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        datastore TEXT NOT NULL,
        client_anchor TEXT,
        server_anchor TEXT,
        seen_version INTEGER NOT NULL DEFAULT 0,
        last_sync_at TEXT,
        last_mode TEXT,
        refresh_requested INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, collection_id)
    )""",
    "INSERT INTO pim_sync_states_m13 (device_id, collection_id, organisation_id, datastore,"
    " client_anchor, server_anchor, seen_version, last_sync_at, last_mode, refresh_requested)"
    " SELECT device_id, collection_id, organisation_id, datastore, client_anchor,"
    " server_anchor, seen_version, last_sync_at, last_mode, refresh_requested"
    " FROM pim_sync_states",
    """CREATE TABLE pim_id_map_m13 (
        device_id TEXT NOT NULL REFERENCES devices(id),
        collection_id TEXT NOT NULL REFERENCES pim_collections_m13(id),
        luid TEXT NOT NULL,
        item_id INTEGER NOT NULL REFERENCES pim_items_m13(id),
        PRIMARY KEY (device_id, collection_id, luid)
    )""",
    "INSERT INTO pim_id_map_m13 (device_id, collection_id, luid, item_id)"
    " SELECT device_id, collection_id, luid, item_id FROM pim_id_map",
    # filter_type: the Sync FilterType the device last asked for in this folder (0: none).
    """CREATE TABLE eas_folder_states_m13 (
        device_id TEXT NOT NULL REFERENCES devices(id),
        folder TEXT NOT NULL,
        organisation_id TEXT NOT NULL REFERENCES organisations(id),
        collection_id TEXT REFERENCES pim_collections_m13(id),
        sync_key INTEGER NOT NULL,
        seen_version INTEGER NOT NULL DEFAULT 0,
        previous_key INTEGER,
        previous_version INTEGER,
        reset_version INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        filter_type INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, folder)
    )""",
    "INSERT INTO eas_folder_states_m13 (device_id, folder, organisation_id, collection_id,"
    " sync_key, seen_version, previous_key, previous_version, reset_version, updated_at)"
    " SELECT device_id, folder, organisation_id, collection_id, sync_key, seen_version,"
    " previous_key, previous_version, reset_version, updated_at FROM eas_folder_states",
    "DROP TABLE eas_folder_states",
    "DROP TABLE pim_id_map",
    "DROP TABLE pim_sync_states",
    "DROP TABLE pim_items",
    "DROP TABLE pim_collections",
    "ALTER TABLE pim_collections_m13 RENAME TO pim_collections",
    "ALTER TABLE pim_items_m13 RENAME TO pim_items",
    "ALTER TABLE pim_sync_states_m13 RENAME TO pim_sync_states",
    "ALTER TABLE pim_id_map_m13 RENAME TO pim_id_map",
    "ALTER TABLE eas_folder_states_m13 RENAME TO eas_folder_states",
    "CREATE UNIQUE INDEX pim_collections_default ON pim_collections (account_id, kind)"
    " WHERE is_default = 1",
    "CREATE INDEX pim_collections_account ON pim_collections (account_id, kind)",
    "CREATE INDEX pim_items_changes ON pim_items (collection_id, version)",
    "CREATE INDEX pim_items_fingerprint ON pim_items (collection_id, fingerprint)",
    "CREATE INDEX pim_items_uid ON pim_items (collection_id, uid)",
    "CREATE INDEX pim_id_map_item ON pim_id_map (device_id, collection_id, item_id)",
)

_OMA_DM_SERVER_CREDENTIALS = (
    # The server's own credentials on a plain OMA DM device (DMAcc AppAuth SRVCRED): its
    # password is derived per device from the CA key and never stored; server_nonce is the
    # nonce the device expects in the server's next MD5/HMAC credential and package 0
    # (given by the bootstrap, then by the device's NextNonce); bootstrapped_at: when the
    # device acknowledged the DMAcc account the service provisioned.
    "ALTER TABLE omadm_peers ADD COLUMN server_nonce TEXT",
    "ALTER TABLE omadm_peers ADD COLUMN bootstrapped_at TEXT",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", _INITIAL),
    Migration(2, "tenancy", _TENANCY),
    Migration(3, "inventory indexes", _INVENTORY_INDEXES),
    Migration(4, "messages", _MESSAGES),
    Migration(5, "command owners", _COMMAND_OWNERS),
    Migration(6, "sign-in attempts", _SIGN_IN_ATTEMPTS),
    Migration(7, "wsdm", _WSDM),
    Migration(8, "apple mdm", _APPLE_MDM),
    Migration(9, "pim store and oma ds", _PIM),
    Migration(10, "windows enrolment", _WINDOWS_ENROLMENT),
    Migration(11, "oma dm", _OMA_DM),
    Migration(12, "exchange activesync", _ACTIVESYNC),
    Migration(13, "activesync folders", _EAS_FOLDERS),
    Migration(14, "oma dm server credentials", _OMA_DM_SERVER_CREDENTIALS),
)
