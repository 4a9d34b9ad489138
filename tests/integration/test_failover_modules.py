"""The control-plane and replica halves of failover: storage_hosts_info, storage_failover, replication_state."""

from __future__ import annotations

import json
import time

import pytest

from ansible_collections.chom.storage.plugins.module_utils.control_plane import apply_schema

MARKER_KEY = "_platform/replication/last-success.json"


@pytest.fixture
def pair(pg_db):
    """storage-a active with three sites, storage-b its replica, storage-c another active host with one."""
    with pg_db.connect() as conn:
        apply_schema(conn)
        for name, role, n in (("storage-a", "active", 1), ("storage-b", "replica", 2), ("storage-c", "active", 3)):
            conn.execute("INSERT INTO storage_hosts (hostname, ip_address, role) VALUES (%s, %s, %s)",
                         (name, f"10.9.2.{n}", role))
        conn.execute("INSERT INTO sites (id, storage_host_id) SELECT s, (SELECT id FROM storage_hosts"
                     " WHERE hostname = 'storage-a') FROM unnest(ARRAY['s1', 's2', 's3']) s")
        conn.execute("INSERT INTO sites (id, storage_host_id) SELECT 's4', id FROM storage_hosts"
                     " WHERE hostname = 'storage-c'")
    return pg_db


def hosts(db) -> dict:
    with db.connect() as conn:
        rows = conn.execute("SELECT h.hostname, h.role, h.fenced_at IS NOT NULL,"
                            " (SELECT count(*) FROM sites s WHERE s.storage_host_id = h.id)"
                            " FROM storage_hosts h ORDER BY 1").fetchall()
    return {name: (role, fenced, sites) for name, role, fenced, sites in rows}


def test_hosts_info_reads_roles_fencing_and_site_counts(pair, run_module):
    run = run_module("storage_hosts_info", pair.module_args)
    assert not run.failed and not run.changed, run.msg
    assert {h["hostname"]: (h["role"], h["fenced"], h["sites"]) for h in run.result["hosts"]} == hosts(pair)
    assert run.result["by_name"]["storage-a"]["sites"] == 3


def test_hosts_info_on_a_new_database_is_empty(pg_db, run_module):
    run = run_module("storage_hosts_info", pg_db.module_args)
    assert not run.failed and run.result["hosts"] == []


def test_hosts_info_with_the_database_down_is_a_clear_error(pg_db, run_module):
    run = run_module("storage_hosts_info", dict(pg_db.module_args, db_port=1, db_connect_timeout=2))
    assert run.failed and "Cannot connect to the control-plane database" in run.msg
    assert pg_db.password not in run.raw


def test_failover_moves_sites_fences_and_is_idempotent(pair, run_module):
    args = dict(pair.module_args, old_active="storage-a", new_active="storage-b", reason="primary lost")
    check = run_module("storage_failover", args, check=True)
    assert check.changed and check.result["sites_moved"] == 3
    assert hosts(pair)["storage-a"] == ("active", False, 3)

    run = run_module("storage_failover", args)
    assert run.changed and not run.failed, run.msg
    assert hosts(pair) == {"storage-a": ("unavailable", True, 0), "storage-b": ("active", False, 3),
                           "storage-c": ("active", False, 1)}
    again = run_module("storage_failover", args)
    assert not again.changed and not again.failed, again.msg

    # A fenced host is not made active by mistake; failback unfences it explicitly.
    wrong = run_module("storage_failover", dict(args, old_active="storage-b", new_active="storage-a"))
    assert wrong.failed and "fenced" in wrong.msg
    back = run_module("storage_failover", dict(args, old_active="storage-b", new_active="storage-a",
                                               old_role="replica", fence=False, unfence=True))
    assert back.changed and not back.failed, back.msg
    assert hosts(pair) == {"storage-a": ("active", False, 3), "storage-b": ("replica", False, 0),
                           "storage-c": ("active", False, 1)}


def test_failover_refuses_unknown_and_identical_hosts(pair, run_module):
    unknown = run_module("storage_failover", dict(pair.module_args, old_active="storage-a", new_active="nope"))
    assert unknown.failed and "nope" in unknown.msg
    same = run_module("storage_failover", dict(pair.module_args, old_active="storage-a", new_active="storage-a"))
    assert same.failed and "same host" in same.msg
    assert hosts(pair)["storage-a"] == ("active", False, 3)


def test_replication_state_reads_the_marker(seaweedfs, run_module):
    client = seaweedfs.client()
    client.create_bucket(Bucket="chom-freshness")
    args = dict(seaweedfs.module_args(), bucket="chom-freshness")
    never = run_module("replication_state", args)
    assert not never.failed and never.result["replicated"] is False
    start = time.time() - 120
    client.put_object(Bucket="chom-freshness", Key=MARKER_KEY, Body=json.dumps(
        {"primary": "storage-a", "last_success_start": start, "last_success_end": start + 3}).encode())
    run = run_module("replication_state", args)
    assert not run.failed and run.result["replicated"] and run.result["primary"] == "storage-a"
    assert 119 <= run.result["lag_seconds"] <= 180
    assert seaweedfs.admin.secret_key not in run.raw
