"""chom.storage.storage_host against a real PostgreSQL, run through the ansible CLI."""

from __future__ import annotations

import itertools

import pytest

_names = itertools.count(1)


@pytest.fixture(scope="module")
def cp_db(postgres, run_module):
    """One database with the schema applied by the module itself; each test uses its own host names."""
    db = postgres.create_database("chom_it_hosts")
    applied = run_module("control_plane_schema", db.module_args)
    assert applied.changed and not applied.failed, applied.result
    return db


@pytest.fixture
def hostname() -> str:
    return f"storage-it-{next(_names)}"


def host_args(db, hostname, **overrides) -> dict:
    args = dict(db.module_args, hostname=hostname, ip_address="10.0.0.11", role="active",
                total_capacity_bytes=2_000_000_000_000, region="eu-west")
    args.update(overrides)
    return args


def stored_row(db, hostname):
    with db.connect() as conn:
        cur = conn.execute(
            "SELECT id::text, host(ip_address), role, total_capacity_bytes, region, updated_at"
            " FROM storage_hosts WHERE hostname = %s",
            (hostname,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return dict(zip(("id", "ip_address", "role", "total_capacity_bytes", "region", "updated_at"), row, strict=True))


def row_count(db) -> int:
    with db.connect() as conn:
        return conn.execute("SELECT count(*) FROM storage_hosts").fetchone()[0]


def test_insert_then_rerun_is_idempotent(run_module, cp_db, hostname):
    first = run_module("storage_host", host_args(cp_db, hostname))

    assert not first.failed and first.changed, first.result
    row = stored_row(cp_db, hostname)
    assert row is not None
    assert (row["ip_address"], row["role"], row["total_capacity_bytes"], row["region"]) == (
        "10.0.0.11", "active", 2_000_000_000_000, "eu-west")
    returned = first.result["storage_host"]
    assert returned["id"] == row["id"] and returned["hostname"] == hostname
    assert returned["ip_address"] == "10.0.0.11" and returned["capacity_percent"] == 0.0

    second = run_module("storage_host", host_args(cp_db, hostname))

    assert not second.failed and not second.changed, second.result
    assert second.result["storage_host"]["id"] == row["id"]
    assert stored_row(cp_db, hostname) == row  # updated_at included: nothing was written


def test_changed_ip_is_updated(run_module, cp_db, hostname):
    assert run_module("storage_host", host_args(cp_db, hostname)).changed
    before = stored_row(cp_db, hostname)

    run = run_module("storage_host", host_args(cp_db, hostname, ip_address="10.0.0.21"), diff=True)

    assert not run.failed and run.changed, run.result
    after = stored_row(cp_db, hostname)
    assert after["ip_address"] == "10.0.0.21"
    assert after["id"] == before["id"]
    assert after["updated_at"] > before["updated_at"]
    assert run.result["diff"]["before"]["ip_address"] == "10.0.0.11"
    assert run.result["diff"]["after"]["ip_address"] == "10.0.0.21"


def test_ipv6_address_is_stored_canonically_and_stays_idempotent(run_module, cp_db, hostname):
    assert run_module("storage_host", host_args(cp_db, hostname, ip_address="2001:DB8:0:0::11")).changed
    assert stored_row(cp_db, hostname)["ip_address"] == "2001:db8::11"

    again = run_module("storage_host", host_args(cp_db, hostname, ip_address="2001:db8::0:11"))

    assert not again.failed and not again.changed, again.result


def test_role_is_kept_unless_enforced(run_module, cp_db, hostname):
    assert run_module("storage_host", host_args(cp_db, hostname, role="active")).changed
    before = stored_row(cp_db, hostname)

    kept = run_module("storage_host", host_args(cp_db, hostname, role="replica"))

    assert not kept.failed and not kept.changed, kept.result
    assert stored_row(cp_db, hostname) == before

    enforced = run_module("storage_host", host_args(cp_db, hostname, role="replica", enforce_role=True))

    assert not enforced.failed and enforced.changed, enforced.result
    assert stored_row(cp_db, hostname)["role"] == "replica"
    assert enforced.result["storage_host"]["role"] == "replica"


def test_check_mode_returns_the_new_row_and_writes_nothing(run_module, cp_db, hostname):
    count = row_count(cp_db)

    run = run_module("storage_host", host_args(cp_db, hostname), check=True)

    assert not run.failed and run.changed, run.result
    would_be = run.result["storage_host"]
    assert would_be["hostname"] == hostname
    assert (would_be["ip_address"], would_be["role"], would_be["total_capacity_bytes"]) == (
        "10.0.0.11", "active", 2_000_000_000_000)
    assert stored_row(cp_db, hostname) is None
    assert row_count(cp_db) == count


def test_check_mode_on_an_existing_row_writes_nothing(run_module, cp_db, hostname):
    assert run_module("storage_host", host_args(cp_db, hostname)).changed
    before = stored_row(cp_db, hostname)

    run = run_module("storage_host", host_args(cp_db, hostname, ip_address="10.0.0.99",
                                               total_capacity_bytes=5, role="maintenance", enforce_role=True),
                     check=True)

    assert not run.failed and run.changed, run.result
    would_be = run.result["storage_host"]
    assert (would_be["id"], would_be["ip_address"], would_be["role"], would_be["total_capacity_bytes"]) == (
        before["id"], "10.0.0.99", "maintenance", 5)
    assert stored_row(cp_db, hostname) == before  # updated_at included


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ip_address": "10.0.0.256"}, "ip_address '10.0.0.256' is not an IP address"),
        ({"ip_address": "storage-1.example"}, "is not an IP address"),
        ({"role": "primary"}, "role must be one of: active, replica, unavailable, maintenance, decommissioning"),
        ({"total_capacity_bytes": -1}, "total_capacity_bytes must not be negative"),
        ({"hostname": "  "}, "hostname must not be empty"),
    ],
    ids=["bad-ipv4", "name-not-ip", "unknown-role", "negative-capacity", "blank-hostname"],
)
def test_bad_input_fails_clearly_and_writes_nothing(run_module, cp_db, hostname, overrides, message):
    count = row_count(cp_db)

    args = host_args(cp_db, hostname)
    args.update(overrides)
    run = run_module("storage_host", args)

    assert run.failed, run.result
    assert message in run.msg
    assert row_count(cp_db) == count


def test_db_password_never_appears_in_the_output(run_module, cp_db, hostname):
    password = cp_db.password
    runs = [
        run_module("storage_host", host_args(cp_db, hostname), diff=True, verbosity=3),
        run_module("storage_host", host_args(cp_db, hostname, ip_address="10.0.0.12"), diff=True, verbosity=3),
        run_module("storage_host", host_args(cp_db, hostname, ip_address="10.0.0.13"), check=True, diff=True,
                   verbosity=3),
        run_module("storage_host", host_args(cp_db, hostname, ip_address="nope"), verbosity=3),
    ]

    assert [run.failed for run in runs] == [False, False, False, True]
    for run in runs:
        assert password not in run.raw
        assert password not in repr(run.result)
