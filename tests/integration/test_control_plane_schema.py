"""chom.storage.control_plane_schema against a real PostgreSQL, run through the ansible CLI."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ansible_collections.chom.storage.plugins.module_utils.control_plane import MIGRATIONS

SCHEMA_TABLE = "chom_storage_schema_versions"
ALL_VERSIONS = [m.version for m in MIGRATIONS]


def regclass_exists(conn, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def user_tables(conn) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {name for (name,) in rows}


def test_applies_every_version_on_an_empty_database(run_module, pg_db):
    run = run_module("control_plane_schema", pg_db.module_args)

    assert not run.failed, run.result
    assert run.changed
    assert [entry["version"] for entry in run.result["applied"]] == ALL_VERSIONS
    assert run.result["version"] == ALL_VERSIONS[-1]
    with pg_db.connect() as conn:
        assert {"storage_hosts", "storage_migrations", "sites", SCHEMA_TABLE} <= user_tables(conn)
        # capacity_percent is a STORED generated column ...
        generated = conn.execute(
            "SELECT a.attgenerated FROM pg_attribute a WHERE a.attrelid = 'storage_hosts'::regclass"
            " AND a.attname = 'capacity_percent'"
        ).fetchone()
        assert generated == ("s",)
        # ... that PostgreSQL computes from the capacities.
        conn.execute(
            "INSERT INTO storage_hosts (hostname, ip_address, role, total_capacity_bytes, used_capacity_bytes)"
            " VALUES ('h1', '10.0.0.1', 'active', 400, 100), ('h2', '10.0.0.2', 'replica', 0, 0)"
        )
        percents = dict(conn.execute("SELECT hostname, capacity_percent::float FROM storage_hosts").fetchall())
        assert percents == {"h1": 25.0, "h2": 0.0}
        # sites.storage_host_id exists, references storage_hosts and leads an index.
        indexed = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = 'sites'::regclass AND a.attname = 'storage_host_id'"
        ).fetchone()[0]
        assert indexed == 1
        foreign = conn.execute(
            "SELECT a.attname, c.confrelid::regclass::text FROM pg_constraint c JOIN pg_attribute a"
            " ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
            " WHERE c.conrelid = 'sites'::regclass AND c.contype = 'f' ORDER BY a.attname"
        ).fetchall()
        assert foreign == [("dual_write_host_id", "storage_hosts"), ("storage_host_id", "storage_hosts")]
        recorded = conn.execute(f"SELECT version, length(checksum) FROM {SCHEMA_TABLE}").fetchall()
        assert recorded == [(v, 64) for v in ALL_VERSIONS]


def test_second_run_changes_nothing(run_module, pg_db):
    assert run_module("control_plane_schema", pg_db.module_args).changed
    with pg_db.connect() as conn:
        before = conn.execute(f"SELECT version, checksum, applied_at FROM {SCHEMA_TABLE}").fetchall()

    again = run_module("control_plane_schema", pg_db.module_args)
    check = run_module("control_plane_schema", pg_db.module_args, check=True)

    assert not again.failed and not again.changed, again.result
    assert again.result["applied"] == []
    assert not check.failed and not check.changed, check.result
    with pg_db.connect() as conn:
        assert conn.execute(f"SELECT version, checksum, applied_at FROM {SCHEMA_TABLE}").fetchall() == before


def test_check_mode_on_an_empty_database_writes_nothing(run_module, pg_db):
    run = run_module("control_plane_schema", pg_db.module_args, check=True)

    assert not run.failed, run.result
    assert run.changed
    assert [entry["version"] for entry in run.result["applied"]] == ALL_VERSIONS
    with pg_db.connect() as conn:
        assert not regclass_exists(conn, SCHEMA_TABLE)
        assert user_tables(conn) == set()


def test_tampered_checksum_fails_clearly(run_module, pg_db):
    assert run_module("control_plane_schema", pg_db.module_args).changed
    with pg_db.connect() as conn:
        conn.execute(f"UPDATE {SCHEMA_TABLE} SET checksum = repeat('0', 64) WHERE version = 1")

    run = run_module("control_plane_schema", pg_db.module_args)
    check = run_module("control_plane_schema", pg_db.module_args, check=True)

    for result in (run, check):
        assert result.failed, result.result
        assert "schema version 1 was applied with different SQL" in result.msg
        assert "000000000000" in result.msg and "refusing" in result.msg


def test_unknown_newer_version_fails_clearly(run_module, pg_db):
    assert run_module("control_plane_schema", pg_db.module_args).changed
    with pg_db.connect() as conn:
        conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version, name, checksum) VALUES (99, 'future', 'x')")

    run = run_module("control_plane_schema", pg_db.module_args)

    assert run.failed
    assert "[99] unknown to this collection" in run.msg


def test_concurrent_runs_apply_the_schema_once(run_module, pg_db):
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: run_module("control_plane_schema", pg_db.module_args), range(2)))

    assert [run.failed for run in runs] == [False, False], [run.result for run in runs]
    assert sorted(run.changed for run in runs) == [False, True]
    with pg_db.connect() as conn:
        assert conn.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchall() == [(v,) for v in ALL_VERSIONS]


def test_wrong_password_fails_clearly_without_leaking_it(run_module, pg_db):
    wrong = "wrong-pw-" + pg_db.password[::-1]
    run = run_module("control_plane_schema", dict(pg_db.module_args, db_password=wrong), verbosity=3)

    assert run.failed
    assert f"Cannot connect to the control-plane database {pg_db.host}:{pg_db.port}/{pg_db.name}" in run.msg
    assert wrong not in run.raw

