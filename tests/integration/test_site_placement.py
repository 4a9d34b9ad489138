"""site_placement against a real PostgreSQL: recording, keeping, proposing, and the golden file."""

from __future__ import annotations

import json

import pytest
from conftest import REPO_ROOT

TIB = 1 << 40
GOLDEN = json.loads((REPO_ROOT / "tests/golden/placement.json").read_text())


@pytest.fixture
def placement_db(pg_db, run_module):
    """A database with the schema, hosts storage-1..3 (1 TiB, active) and the 1,000 golden sites."""
    assert not run_module("control_plane_schema", pg_db.module_args).failed
    for n in (1, 2, 3):
        register(run_module, pg_db, f"storage-{n}")
    with pg_db.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO sites (id) VALUES (%s)", [(s,) for s in GOLDEN["site_ids"]])
    return pg_db


def register(run_module, db, name, role="active", capacity=TIB):
    """Hosts are written directly: the storage_host module has tests of its own."""
    with db.connect() as conn:
        conn.execute("INSERT INTO storage_hosts (hostname, ip_address, role, total_capacity_bytes)"
                     " VALUES (%s, %s, %s, %s)", (name, f"10.9.0.{name[-1]}", role, capacity))


def recorded(db) -> dict:
    with db.connect() as conn:
        rows = conn.execute("SELECT s.id, h.hostname FROM sites s LEFT JOIN storage_hosts h"
                            " ON h.id = s.storage_host_id").fetchall()
    return dict(rows)


def golden_map(count: str) -> dict:
    return dict(zip(GOLDEN["site_ids"], GOLDEN["rings"][count]["placements"], strict=True))


def test_assign_records_the_golden_placement_then_changes_nothing(placement_db, run_module):
    first = run_module("site_placement", placement_db.module_args)
    assert first.changed and not first.failed, first.msg
    assert recorded(placement_db) == golden_map("3")
    assert first.result["assigned"] == golden_map("3")

    second = run_module("site_placement", placement_db.module_args)
    assert not second.changed and second.result["assigned"] == {}
    assert second.result["placements"] == golden_map("3")


def test_check_mode_writes_nothing(placement_db, run_module):
    run = run_module("site_placement", placement_db.module_args, check=True)
    assert run.changed and run.result["assigned"] == golden_map("3")
    assert set(recorded(placement_db).values()) == {None}


@pytest.mark.parametrize("count", ["4", "5"])
def test_placed_sites_keep_their_host_and_moves_match_the_golden_ring(placement_db, run_module, count):
    assert run_module("site_placement", placement_db.module_args).changed
    hosts = GOLDEN["rings"][count]["hosts"]
    for name in hosts[3:]:
        register(run_module, placement_db, name)

    again = run_module("site_placement", placement_db.module_args)
    assert not again.changed
    assert recorded(placement_db) == golden_map("3")

    proposal = run_module("site_placement", dict(placement_db.module_args, mode="propose"))
    expected = golden_map(count)
    assert not proposal.changed
    assert proposal.result["moves"] == [
        {"site_id": s, "from": h, "to": expected[s]} for s, h in sorted(golden_map("3").items()) if expected[s] != h
    ]
    assert all(move["to"] in hosts[3:] for move in proposal.result["moves"])
    assert recorded(placement_db) == golden_map("3")


def test_new_sites_avoid_ineligible_hosts_and_nothing_else_changes(placement_db, run_module):
    with placement_db.connect() as conn:
        conn.execute("UPDATE storage_hosts SET role = 'maintenance' WHERE hostname = 'storage-2'")
        conn.execute("UPDATE storage_hosts SET used_capacity_bytes = total_capacity_bytes * 95 / 100"
                     " WHERE hostname = 'storage-3'")
        conn.execute("INSERT INTO sites (id) VALUES ('site-new-1'), ('site-new-2'), ('site-new-3')")
    run = run_module("site_placement", dict(placement_db.module_args, site_ids=["site-new-1", "site-new-2",
                                                                                  "site-new-3"]))
    assert run.changed, run.msg
    assert set(run.result["assigned"].values()) == {"storage-1"}
    assert run.result["excluded_hosts"] == {"storage-2": "role is maintenance", "storage-3": "capacity state is full"}
    assert {s: h for s, h in recorded(placement_db).items() if s.startswith("site-new")} == run.result["assigned"]


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"mode": "propose", "hosts": []}, "the host list is empty"),
        ({"mode": "propose", "hosts": [{"name": "storage-1", "weight": 0}]}, "weight must be a positive number"),
        ({"mode": "propose", "hosts": [{"name": "storage-1", "weight": -2}]}, "weight must be a positive number"),
        ({"mode": "propose", "hosts": ["storage-1", "storage-1"]}, "duplicate hostnames: storage-1"),
        ({"hosts": ["storage-1"]}, "hosts may only be given with mode=propose"),
        ({"vnodes": 0}, "vnodes must be a positive integer"),
        ({"site_ids": [" "]}, "site_ids must be non-empty strings"),
        ({"site_ids": ["no-such-site"]}, "Sites not in the sites table: no-such-site"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(placement_db, run_module, extra, message):
    run = run_module("site_placement", dict(placement_db.module_args, **extra))
    assert run.failed and message in run.msg
    assert set(recorded(placement_db).values()) == {None}
