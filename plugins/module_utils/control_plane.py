# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Control-plane data access: the versioned schema and the storage host records.

Plain Python on top of psycopg 3. Every write is done in one transaction; in check mode
only reads run, and the statements that would run are returned instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

HOST_ROLES = ("active", "replica", "unavailable", "maintenance", "decommissioning")
MIGRATION_STATUSES = ("pending", "in_progress", "completed", "failed")
SCHEMA_TABLE = "chom_storage_schema_versions"
# Any constant works; it only has to be the same for every process applying the schema.
SCHEMA_LOCK_KEY = 0x63686F6D


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


MIGRATIONS = (
    Migration(
        1,
        "storage hosts, sites column, storage migrations",
        """
CREATE TABLE storage_hosts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hostname text NOT NULL UNIQUE CHECK (hostname <> ''),
    ip_address inet NOT NULL,
    role text NOT NULL
        CHECK (role IN ('active', 'replica', 'unavailable', 'maintenance', 'decommissioning')),
    total_capacity_bytes bigint NOT NULL DEFAULT 0 CHECK (total_capacity_bytes >= 0),
    used_capacity_bytes bigint NOT NULL DEFAULT 0 CHECK (used_capacity_bytes >= 0),
    capacity_percent numeric(5, 2) GENERATED ALWAYS AS (
        CASE WHEN total_capacity_bytes > 0
             THEN round(used_capacity_bytes * 100.0 / total_capacity_bytes, 2)
             ELSE 0 END
    ) STORED,
    health_status text NOT NULL DEFAULT 'unknown',
    last_health_check_at timestamptz,
    region text NOT NULL DEFAULT 'default',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sites (
    id text PRIMARY KEY,
    domain text,
    tier text NOT NULL DEFAULT 'starter',
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sites ADD COLUMN IF NOT EXISTS storage_host_id uuid
    REFERENCES storage_hosts (id) ON DELETE RESTRICT;
CREATE INDEX IF NOT EXISTS sites_storage_host_id_idx ON sites (storage_host_id);

CREATE TABLE storage_migrations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    site_id text NOT NULL,
    source_host_id uuid NOT NULL REFERENCES storage_hosts (id),
    dest_host_id uuid NOT NULL REFERENCES storage_hosts (id),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    data_size_bytes bigint CHECK (data_size_bytes >= 0),
    started_at timestamptz,
    completed_at timestamptz,
    failure_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (source_host_id <> dest_host_id)
);
CREATE INDEX storage_migrations_site_id_idx ON storage_migrations (site_id);
CREATE INDEX storage_migrations_status_idx ON storage_migrations (status);
""",
    ),
    Migration(
        2,
        "capacity state of storage hosts",
        """
ALTER TABLE storage_hosts
    ADD COLUMN capacity_state text NOT NULL DEFAULT 'normal'
        CHECK (capacity_state IN ('normal', 'warning', 'critical', 'full')),
    ADD COLUMN capacity_reasons text[] NOT NULL DEFAULT '{}',
    ADD COLUMN unavailable_by_capacity boolean NOT NULL DEFAULT false;
""",
    ),
    Migration(
        3,
        "host fencing, site flags and resumable, verified storage migrations",
        """
ALTER TABLE storage_hosts
    ADD COLUMN fenced_at timestamptz,
    ADD COLUMN fenced_reason text;

ALTER TABLE sites
    ADD COLUMN IF NOT EXISTS deleted_at timestamptz,
    ADD COLUMN IF NOT EXISTS backups_paused boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS backups_paused_reason text,
    ADD COLUMN IF NOT EXISTS dual_write_host_id uuid REFERENCES storage_hosts (id) ON DELETE RESTRICT;

ALTER TABLE storage_migrations
    ADD COLUMN strategy text NOT NULL DEFAULT 'maintenance' CHECK (strategy IN ('maintenance', 'live')),
    ADD COLUMN phase text,
    ADD COLUMN objects_total bigint CHECK (objects_total >= 0),
    ADD COLUMN objects_done bigint NOT NULL DEFAULT 0 CHECK (objects_done >= 0),
    ADD COLUMN bytes_done bigint NOT NULL DEFAULT 0 CHECK (bytes_done >= 0),
    ADD COLUMN switched_at timestamptz,
    ADD COLUMN source_retained_until timestamptz,
    ADD COLUMN source_deleted_at timestamptz,
    ADD COLUMN rolled_back_at timestamptz,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX storage_migrations_one_open_per_site
    ON storage_migrations (site_id) WHERE status IN ('pending', 'in_progress');

CREATE TABLE storage_migration_objects (
    migration_id uuid NOT NULL REFERENCES storage_migrations (id) ON DELETE CASCADE,
    bucket text NOT NULL,
    key text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    source_etag text NOT NULL,
    in_snapshot boolean NOT NULL,
    sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    dest_etag text,
    dest_checksum text,
    verified_at timestamptz,
    PRIMARY KEY (migration_id, bucket, key)
);
""",
    ),
)


class SchemaError(Exception):
    """The database holds a schema this code cannot reconcile."""


def applied_versions(conn) -> dict[int, str]:
    """Versions already applied, with the checksum recorded for each."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_TABLE,))
        if not cur.fetchone()[0]:
            return {}
        cur.execute(f"SELECT version, checksum FROM {SCHEMA_TABLE}")
        return {version: checksum for version, checksum in cur.fetchall()}


def pending_migrations(conn, migrations=MIGRATIONS) -> list[Migration]:
    applied = applied_versions(conn)
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise SchemaError(
                f"schema version {migration.version} was applied with different SQL "
                f"(checksum {recorded[:12]}, expected {migration.checksum[:12]}); refusing to continue"
            )
    known = {m.version for m in migrations}
    unknown = sorted(v for v in applied if v not in known)
    if unknown:
        raise SchemaError(f"database has schema versions {unknown} unknown to this collection; upgrade it first")
    return [m for m in migrations if m.version not in applied]


def apply_schema(conn, check_mode: bool = False, migrations=MIGRATIONS) -> list[Migration]:
    """Apply pending migrations in one transaction; return those applied (or that would be)."""
    if check_mode:
        return pending_migrations(conn, migrations)
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        pending = pending_migrations(conn, migrations)
        with conn.cursor() as cur:
            for migration in pending:
                cur.execute(migration.sql)
                cur.execute(
                    f"INSERT INTO {SCHEMA_TABLE} (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
    return pending


HOST_FIELDS = ("ip_address", "role", "total_capacity_bytes", "region")


def get_storage_host(conn, hostname: str) -> dict | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id::text, hostname, host(ip_address), role, total_capacity_bytes, used_capacity_bytes,"
            " capacity_percent::float, health_status, region FROM storage_hosts WHERE hostname = %s",
            (hostname,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    keys = ("id", "hostname", "ip_address", "role", "total_capacity_bytes", "used_capacity_bytes",
            "capacity_percent", "health_status", "region")
    return dict(zip(keys, row, strict=True))


def host_changes(current: dict | None, wanted: dict, enforce_role: bool) -> dict:
    """Fields of ``wanted`` that differ from the stored row (all of them for a new host)."""
    if current is None:
        return dict(wanted)
    changes = {}
    for field in HOST_FIELDS:
        if field not in wanted or wanted[field] is None:
            continue
        if field == "role" and not enforce_role:
            continue
        if current.get(field) != wanted[field]:
            changes[field] = wanted[field]
    return changes


def ensure_storage_host(conn, wanted: dict, enforce_role: bool = False, check_mode: bool = False):
    """Insert or update one storage host row. Returns (changed, before, after)."""
    if wanted.get("role") not in HOST_ROLES:
        raise ValueError(f"role must be one of {', '.join(HOST_ROLES)}, got {wanted.get('role')!r}")
    hostname = wanted["hostname"]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"storage_host:{hostname}",))
        before = get_storage_host(conn, hostname)
        changes = host_changes(before, {k: v for k, v in wanted.items() if k != "hostname"}, enforce_role)
        if not changes:
            return False, before, before
        if check_mode:
            after = dict(before or {"hostname": hostname}, **changes)
            return True, before, after
        with conn.cursor() as cur:
            if before is None:
                columns = ["hostname", *changes]
                cur.execute(
                    f"INSERT INTO storage_hosts ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                    [hostname, *changes.values()],
                )
            else:
                assignments = ", ".join(f"{field} = %s" for field in changes)
                cur.execute(
                    f"UPDATE storage_hosts SET {assignments}, updated_at = now() WHERE hostname = %s",
                    [*changes.values(), hostname],
                )
        return True, before, get_storage_host(conn, hostname)


def placement_hosts(conn, thresholds=None) -> list[dict]:
    """Every storage host as the placement ring wants it: name, capacity, role, capacity state."""
    from ansible_collections.chom.storage.plugins.module_utils.capacity import DEFAULT_THRESHOLDS, capacity_state

    with conn.cursor() as cur:
        cur.execute("SELECT id::text, hostname, role, total_capacity_bytes, capacity_percent::float, capacity_state"
                    " FROM storage_hosts ORDER BY hostname")
        rows = cur.fetchall()
    # The recorded state (bytes, inodes, I/O, network, backups) and the byte share alone: the worse counts.
    order = ("normal", "warning", "critical", "full")
    return [
        {"id": host_id, "name": name, "role": role, "capacity_bytes": total or None,
         "capacity_state": max(recorded, capacity_state(percent or 0.0, thresholds or DEFAULT_THRESHOLDS),
                               key=order.index)}
        for host_id, name, role, total, percent, recorded in rows
    ]


def site_hosts(conn, site_ids=None) -> dict[str, str | None]:
    """Recorded hostname of each site (None when not placed yet); all sites when none given."""
    query = ("SELECT s.id, h.hostname FROM sites s LEFT JOIN storage_hosts h ON h.id = s.storage_host_id")
    with conn.cursor() as cur:
        if site_ids is None:
            cur.execute(query)
        else:
            cur.execute(query + " WHERE s.id = ANY(%s)", (list(site_ids),))
        return dict(cur.fetchall())


def record_site_hosts(conn, assignments: dict[str, str], host_ids: dict[str, str]) -> list[str]:
    """Record hosts for sites that have none, in one transaction. Placed sites keep their host.

    Returns the site IDs actually recorded (a site placed meanwhile by someone else is not).
    """
    recorded = []
    with conn.transaction():
        with conn.cursor() as cur:
            for site_id, hostname in sorted(assignments.items()):
                cur.execute(
                    "UPDATE sites SET storage_host_id = %s WHERE id = %s AND storage_host_id IS NULL",
                    (host_ids[hostname], site_id),
                )
                if cur.rowcount == 1:
                    recorded.append(site_id)
    return recorded


def record_capacity(conn, hostname: str, measures: dict, state: str, reasons: list[str],
                    check_mode: bool = False) -> dict:
    """Record a capacity check and apply its consequence to the host's role.

    A full ``active`` host becomes ``unavailable`` (and is remembered as put there by capacity).
    It becomes ``active`` again only once its state is back to normal or warning: a host that
    dropped from full to critical stays out, so it does not flap around the full threshold.
    A host an operator made unavailable is never put back by this function.

    Returns dict(changed, before, after, transition) where ``changed`` covers the role, the
    state and the reasons; the measurements and the check time are recorded on every call.
    """
    from ansible_collections.chom.storage.plugins.module_utils.capacity import CAPACITY_STATES

    if state not in CAPACITY_STATES:
        raise ValueError(f"capacity state must be one of {', '.join(CAPACITY_STATES)}, got {state!r}")
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute(
                "SELECT role, capacity_state, capacity_reasons, unavailable_by_capacity, health_status"
                " FROM storage_hosts WHERE hostname = %s FOR UPDATE",
                (hostname,),
            )
            row = cur.fetchone()
            if row is None:
                raise ValueError(f"storage host {hostname} is not registered")
            role, old_state, old_reasons, by_capacity, old_health = row
            new_role, new_flag, transition = role, by_capacity, None
            if state == "full" and role == "active":
                new_role, new_flag, transition = "unavailable", True, "marked unavailable (full)"
            elif role == "unavailable" and by_capacity and state in ("normal", "warning"):
                new_role, new_flag, transition = "active", False, f"back to active ({state})"
            before = dict(role=role, capacity_state=old_state, capacity_reasons=list(old_reasons),
                          health_status=old_health)
            after = dict(role=new_role, capacity_state=state, capacity_reasons=list(reasons), health_status=state)
            if not check_mode:
                cur.execute(
                    "UPDATE storage_hosts SET role = %s, unavailable_by_capacity = %s, capacity_state = %s,"
                    " capacity_reasons = %s, health_status = %s, used_capacity_bytes = %s,"
                    " total_capacity_bytes = %s, last_health_check_at = now(), updated_at = now()"
                    " WHERE hostname = %s",
                    (new_role, new_flag, state, list(reasons), state, measures["used_bytes"],
                     measures["total_bytes"], hostname),
                )
    return dict(changed=before != after, before=before, after=after, transition=transition)


def hosts_info(conn) -> list[dict]:
    """Every storage host with its role, capacity, fencing and the number of sites it holds.

    An empty list before the schema is applied (a new control plane).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('storage_hosts') IS NOT NULL AND to_regclass('sites') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute(
            "SELECT h.hostname, host(h.ip_address), h.role, h.total_capacity_bytes, h.used_capacity_bytes,"
            " h.capacity_percent::float, h.capacity_state, h.fenced_at IS NOT NULL, h.fenced_reason,"
            " (SELECT count(*) FROM sites s WHERE s.storage_host_id = h.id)"
            " FROM storage_hosts h ORDER BY h.hostname")
        keys = ("hostname", "ip_address", "role", "total_capacity_bytes", "used_capacity_bytes", "capacity_percent",
                "capacity_state", "fenced", "fenced_reason", "sites")
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


class TopologyError(Exception):
    """The control plane does not hold the topology a failover or failback expects."""


def promote(conn, old: str, new: str, reason: str, old_role: str = "unavailable", fence_old: bool = True,
            unfence_new: bool = False, check_mode: bool = False) -> dict:
    """Make ``new`` the active host in place of ``old``, in one transaction.

    Failover: ``old`` becomes ``unavailable`` and fenced (with ``reason``), ``new`` becomes
    ``active``; failback passes ``old_role="replica"``, ``fence_old=False`` and ``unfence_new=True``.
    Every site recorded on ``old`` is recorded on ``new``. Running it again once done changes
    nothing. A fenced ``new`` is refused unless ``unfence_new``. Returns dict(changed,
    sites_moved, before, after).
    """
    if old_role not in HOST_ROLES:
        raise ValueError(f"old_role must be one of {', '.join(HOST_ROLES)}")
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SELECT hostname, role, fenced_at IS NOT NULL, id FROM storage_hosts"
                        " WHERE hostname = ANY(%s) ORDER BY hostname FOR UPDATE", ([old, new],))
            rows = {name: (role, fenced, host_id) for name, role, fenced, host_id in cur.fetchall()}
            missing = [name for name in (old, new) if name not in rows]
            if missing:
                raise TopologyError(f"storage host(s) {', '.join(missing)} not registered in the control plane")
            before = {name: dict(role=rows[name][0], fenced=rows[name][1]) for name in (old, new)}
            cur.execute("SELECT count(*) FROM sites WHERE storage_host_id = %s", (rows[old][2],))
            sites = cur.fetchone()[0]
            after = {old: dict(role=old_role, fenced=fence_old), new: dict(role="active", fenced=False)}
            if before == after and sites == 0:
                return dict(changed=False, sites_moved=0, before=before, after=after)
            if before[new]["fenced"] and not unfence_new:
                raise TopologyError(f"{new} is fenced (it was failed away from); bring it back with failback")
            if not check_mode:
                cur.execute("UPDATE storage_hosts SET role = %s, unavailable_by_capacity = false,"
                            " fenced_at = CASE WHEN %s THEN coalesce(fenced_at, now()) END,"
                            " fenced_reason = CASE WHEN %s THEN %s END, updated_at = now()"
                            " WHERE hostname = %s", (old_role, fence_old, fence_old, reason, old))
                cur.execute("UPDATE storage_hosts SET role = 'active', fenced_at = NULL, fenced_reason = NULL,"
                            " updated_at = now() WHERE hostname = %s", (new,))
                cur.execute("UPDATE sites SET storage_host_id = %s WHERE storage_host_id = %s",
                            (rows[new][2], rows[old][2]))
                cur.execute("UPDATE sites SET dual_write_host_id = NULL WHERE dual_write_host_id = %s",
                            (rows[old][2],))
    return dict(changed=True, sites_moved=sites, before=before, after=after)
