"""site_migration between two real SeaweedFS engines with a real PostgreSQL control plane.

Each test migrates its own site between the engines ``src`` and ``dst`` (hosts ``mig-src`` and
``mig-dst`` in the control plane); ``mig-other`` is a third active host for concurrent moves.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO_ROOT, wait_for

from ansible_collections.chom.storage.plugins.module_utils.control_plane import apply_schema
from ansible_collections.chom.storage.plugins.module_utils.migration import (
    MiB,
    MigrationError,
    MigrationRefused,
    Migrator,
    Request,
    Settings,
    SiteMoved,
)

BUCKETS = ("chom-backups", "chom-media", "chom-archives")
# Small thresholds so that a 12 MiB object is a multipart copy (3 parts of 5 MiB).
SMALL = dict(multipart_threshold=5 * MiB, part_size=5 * MiB, memory_budget=32 * MiB, concurrency=6,
             progress_interval=0.2, batch_size=50)
AWKWARD = ("with space.sql.gz", "plus+sign", "per%25cent%", "naïve-ünïcödé-日本.txt", "folder/", "zero-bytes",
           "deep/a/b/c.tar.gz", "#hash?q=1&x", "tilde~and'quote\"")


@pytest.fixture(scope="module")
def engines(seaweedfs_factory):
    src, dst = seaweedfs_factory(), seaweedfs_factory()
    for engine in (src, dst):
        client = engine.client()
        for bucket in BUCKETS:
            client.create_bucket(Bucket=bucket)
    return src, dst


@pytest.fixture
def cp(pg_db):
    """Control plane with the schema, three active hosts and nothing else."""
    with pg_db.connect() as conn:
        apply_schema(conn)
        for n, name in enumerate(("mig-src", "mig-dst", "mig-other"), start=1):
            conn.execute("INSERT INTO storage_hosts (hostname, ip_address, role, total_capacity_bytes)"
                         " VALUES (%s, %s, 'active', %s)", (name, f"10.9.1.{n}", 1 << 40))
    return pg_db


def new_site(cp, host="mig-src") -> str:
    site = f"site-{secrets.token_hex(4)}"
    with cp.connect() as conn:
        conn.execute("INSERT INTO sites (id, tier, storage_host_id) SELECT %s, 'pro', id FROM storage_hosts"
                     " WHERE hostname = %s", (site, host))
    return site


def fill(engine, site, count=20, size=2048, extra=()):
    """Put ``count`` small objects, the awkward keys and ``extra`` (key, bytes) under the site; return key -> sha."""
    client = engine.client()
    objects = {("chom-backups", f"{site}/full/20261201T020000Z/part-{i:05d}.bin"): os.urandom(size)
               for i in range(count)}
    for n, name in enumerate(AWKWARD):
        objects[(BUCKETS[n % 3], f"{site}/media/{name}")] = b"" if name in ("zero-bytes", "folder/") \
            else os.urandom(100 + n)
    objects.update(dict(extra))

    def put(item):
        (bucket, key), body = item
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-chom-test")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects.items()))
    return {k: hashlib.sha256(v).hexdigest() for k, v in objects.items()}


def contents(engine, site) -> dict:
    """(bucket, key) -> sha256 of every object of the site on the engine."""
    client = engine.client()
    keys = []
    for bucket in BUCKETS:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{site}/"):
            keys += [(bucket, item["Key"]) for item in page.get("Contents", ())]

    def sha(item):
        body = client.get_object(Bucket=item[0], Key=item[1])["Body"].read()
        return item, hashlib.sha256(body).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(sha, keys))


def endpoint(engine) -> dict:
    return {"endpoint_url": engine.endpoint, "access_key": engine.admin.access_key,
            "secret_key": engine.admin.secret_key}


def module_args(cp, engines, site, **extra) -> dict:
    src, dst = engines
    args = dict(cp.module_args, site_id=site, source_host="mig-src", dest_host="mig-dst", source=endpoint(src),
                dest=endpoint(dst), multipart_threshold_mb=5, part_size_mb=5, memory_budget_mb=32)
    args.update(extra)
    return args


def migrator(cp, engines, site, conn, strategy="maintenance", hooks=None, **settings) -> Migrator:
    src, dst = engines
    merged = dict(SMALL, **settings)
    request = Request(site, "mig-src", "mig-dst", Settings(strategy=strategy, **merged))
    return Migrator(conn, src.client(), dst.client(), request, hooks=hooks)


def site_row(cp, site) -> dict:
    with cp.connect() as conn:
        row = conn.execute("SELECT h.hostname, s.backups_paused, s.dual_write_host_id FROM sites s"
                           " JOIN storage_hosts h ON h.id = s.storage_host_id WHERE s.id = %s", (site,)).fetchone()
    return {"host": row[0], "backups_paused": row[1], "dual_write": row[2]}


def migrations(cp, site) -> list[dict]:
    with cp.connect() as conn:
        rows = conn.execute("SELECT status, failure_reason, objects_total, objects_done, bytes_done, data_size_bytes,"
                            " strategy FROM storage_migrations WHERE site_id = %s ORDER BY created_at",
                            (site,)).fetchall()
    keys = ("status", "failure_reason", "objects_total", "objects_done", "bytes_done", "data_size_bytes", "strategy")
    return [dict(zip(keys, row, strict=True)) for row in rows]


# --------------------------------------------------------------------------------------------


def test_migrates_every_object_verified_then_switches(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    large = os.urandom(12 * MiB + 123)
    expected = fill(src, site, count=1100, size=512, extra={("chom-archives", f"{site}/dr/20261201T000000Z/vps.img"):
                                                            large})
    run = run_module("site_migration", module_args(cp, engines, site))
    assert run.changed and not run.failed, run.msg
    assert contents(dst, site) == expected
    assert contents(src, site) == expected, "the source copy is kept after the switch"
    assert site_row(cp, site) == {"host": "mig-dst", "backups_paused": False, "dual_write": None}
    [row] = migrations(cp, site)
    total_bytes = sum(len(v) for v in [large]) + 1100 * 512 + sum(100 + n for n, a in enumerate(AWKWARD)
                                                                  if a not in ("zero-bytes", "folder/"))
    assert row["status"] == "completed" and row["failure_reason"] is None
    assert row["objects_total"] == row["objects_done"] == len(expected)
    assert row["data_size_bytes"] == row["bytes_done"] == total_bytes
    assert run.result["copied_objects"] == len(expected)
    with cp.connect() as conn:
        manifest = conn.execute("SELECT count(*), count(*) FILTER (WHERE in_snapshot), count(verified_at)"
                                " FROM storage_migration_objects").fetchone()
    assert manifest == (len(expected), len(expected), len(expected))
    head = dst.client().head_object(Bucket="chom-backups", Key=f"{site}/full/20261201T020000Z/part-00000.bin")
    assert head["ContentType"] == "application/x-chom-test"

    again = run_module("site_migration", module_args(cp, engines, site))
    assert not again.changed and not again.failed, again.msg
    assert len(migrations(cp, site)) == 1


def test_check_mode_lists_what_would_be_copied_and_changes_nothing(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    expected = fill(src, site, count=5, size=1000)
    run = run_module("site_migration", module_args(cp, engines, site), check=True)
    assert run.changed and not run.failed, run.msg
    plan = run.result["plan"]
    assert plan["objects_to_copy"] == len(expected)
    assert sorted(plan["would_copy"]) == sorted(f"{b}/{k}" for b, k in expected)
    assert plan["bytes_to_copy"] == 5 * 1000 + sum(100 + n for n, a in enumerate(AWKWARD)
                                                    if a not in ("zero-bytes", "folder/"))
    assert contents(dst, site) == {}
    assert migrations(cp, site) == []
    assert site_row(cp, site)["host"] == "mig-src"


def test_flipped_byte_on_destination_fails_verification_and_nothing_is_switched(cp, engines):
    src, dst = engines
    site = new_site(cp)
    victim = ("chom-backups", f"{site}/full/20261201T020000Z/part-00003.bin")
    expected = fill(src, site, count=10)

    def flip(_):
        body = bytearray(dst.client().get_object(Bucket=victim[0], Key=victim[1])["Body"].read())
        body[17] ^= 0x01
        dst.client().put_object(Bucket=victim[0], Key=victim[1], Body=bytes(body))

    with cp.connect() as conn:
        with pytest.raises(MigrationError, match="verification failed for 1 objects") as failure:
            migrator(cp, engines, site, conn, hooks={"verify": flip}).run()
    assert victim[1] in str(failure.value)
    [row] = migrations(cp, site)
    assert row["status"] == "failed" and "verification failed" in row["failure_reason"]
    assert site_row(cp, site) == {"host": "mig-src", "backups_paused": False, "dual_write": None}
    assert contents(src, site) == expected

    # Content checked by reading back gives the same verdict when no checksum header is trusted.
    with cp.connect() as conn:
        with pytest.raises(MigrationError, match="verification failed for 1 objects"):
            migrator(cp, engines, site, conn, hooks={"verify": flip}, verify_content=True).run()

    # A new run copies again and completes.
    with cp.connect() as conn:
        migrator(cp, engines, site, conn).run()
    assert contents(dst, site) == expected
    assert site_row(cp, site)["host"] == "mig-dst"


KILL_SCRIPT = textwrap.dedent("""
    import json, sys
    import psycopg
    from ansible_collections.chom.storage.plugins.module_utils.migration import Migrator, Request, Settings
    from ansible_collections.chom.storage.plugins.module_utils.s3 import make_client
    cfg = json.load(sys.stdin)
    conn = psycopg.connect(autocommit=True, **cfg["db"])
    clients = [make_client(e["endpoint_url"], e["access_key"], e["secret_key"]) for e in (cfg["src"], cfg["dst"])]
    settings = Settings(concurrency=1, progress_interval=0.05, batch_size=10)
    Migrator(conn, *clients, Request(cfg["site"], "mig-src", "mig-dst", settings)).run()
""")


def test_killed_run_resumes_without_copying_verified_objects_again(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    expected = fill(src, site, count=600, size=4096)
    config = {"db": {"host": cp.host, "port": cp.port, "dbname": cp.name, "user": cp.user, "password": cp.password},
              "src": endpoint(src), "dst": endpoint(dst), "site": site}
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "collections"))
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT], stdin=subprocess.PIPE, env=env)
    process.stdin.write(json.dumps(config).encode())
    process.stdin.close()
    try:
        wait_for(lambda: (migrations(cp, site) or [{}])[0].get("objects_done", 0) >= 150, 60,
                 "the migration to record progress", interval=0.05, alive=lambda: process.poll() is None)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    [row] = migrations(cp, site)
    assert row["status"] == "in_progress" and 150 <= row["objects_done"] < len(expected)
    with cp.connect() as conn:
        verified = conn.execute("SELECT count(verified_at) FROM storage_migration_objects").fetchone()[0]
    assert verified >= 150
    assert site_row(cp, site)["backups_paused"] is True

    run = run_module("site_migration", module_args(cp, engines, site))
    assert run.changed and not run.failed, run.msg
    assert run.result["resumed"] is True
    assert run.result["copied_objects"] <= len(expected) - verified
    assert contents(dst, site) == expected
    [row] = migrations(cp, site)
    assert row["status"] == "completed" and row["objects_done"] == len(expected)
    assert site_row(cp, site) == {"host": "mig-dst", "backups_paused": False, "dual_write": None}


def test_site_moved_meanwhile_aborts_with_the_source_intact(cp, engines):
    src, _ = engines
    site = new_site(cp)
    expected = fill(src, site, count=10)

    def someone_moves_it(_):
        with cp.connect() as other:
            other.execute("UPDATE sites SET storage_host_id = (SELECT id FROM storage_hosts WHERE hostname ="
                          " 'mig-other') WHERE id = %s", (site,))

    with cp.connect() as conn:
        with pytest.raises(SiteMoved, match="moved to mig-other"):
            migrator(cp, engines, site, conn, hooks={"switch": someone_moves_it}).run()
    [row] = migrations(cp, site)
    assert row["status"] == "failed" and "moved to mig-other" in row["failure_reason"]
    assert site_row(cp, site)["host"] == "mig-other"
    assert contents(src, site) == expected


def test_a_second_process_on_the_same_site_is_refused(cp, engines):
    src, _ = engines
    site = new_site(cp)
    fill(src, site, count=3)
    with cp.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"chom-storage migration:{site}",))
        with cp.connect() as conn:
            with pytest.raises(MigrationRefused, match="another process is migrating"):
                migrator(cp, engines, site, conn).run()
    assert migrations(cp, site) == []


def test_live_strategy_catches_writes_during_the_copy_through_dual_write(cp, engines):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=30)
    s, d = src.client(), dst.client()
    before_flag = f"{site}/media/uploads/before-flag.jpg"
    changed = f"{site}/full/20261201T020000Z/part-00001.bin"
    deleted = f"{site}/full/20261201T020000Z/part-00002.bin"
    seen = {}

    def app_writes_to_source_only(_):
        # Written after the snapshot, before dual-write: only the delta pass can bring it over.
        s.put_object(Bucket="chom-media", Key=before_flag, Body=b"early upload")

    def app_honours_dual_write(_):
        with cp.connect() as conn:
            seen["dual"] = conn.execute("SELECT d.hostname FROM sites s JOIN storage_hosts d"
                                        " ON d.id = s.dual_write_host_id WHERE s.id = %s", (site,)).fetchone()
        for client in (s, d):  # CHOM-APP writes and deletes on both hosts while the flag is set
            client.put_object(Bucket="chom-media", Key=f"{site}/media/uploads/during.jpg", Body=b"dual write")
            client.put_object(Bucket="chom-backups", Key=changed, Body=b"rewritten during migration")
            client.delete_object(Bucket="chom-backups", Key=deleted)

    hooks = {"copy": app_writes_to_source_only, "dual_write": app_honours_dual_write}
    with cp.connect() as conn:
        result = migrator(cp, engines, site, conn, strategy="live", hooks=hooks).run()
    assert seen["dual"] == ("mig-dst",)
    final = contents(src, site)
    assert contents(dst, site) == final
    assert ("chom-media", before_flag) in final and ("chom-backups", deleted) not in final
    assert final[("chom-backups", changed)] == hashlib.sha256(b"rewritten during migration").hexdigest()
    assert result["migration"]["strategy"] == "live" and result["migration"]["status"] == "completed"
    assert site_row(cp, site) == {"host": "mig-dst", "backups_paused": False, "dual_write": None}


def test_maintenance_strategy_pauses_backups_until_the_switch(cp, engines):
    src, _ = engines
    site = new_site(cp)
    fill(src, site, count=3)
    seen = {}
    hooks = {"copy": lambda _: seen.setdefault("copy", site_row(cp, site)),
             "switched": lambda _: seen.setdefault("switched", site_row(cp, site))}
    with cp.connect() as conn:
        migrator(cp, engines, site, conn, hooks=hooks).run()
    assert seen["copy"]["backups_paused"] is True and seen["copy"]["dual_write"] is None
    assert seen["switched"]["backups_paused"] is False and seen["switched"]["host"] == "mig-dst"


def test_cleanup_waits_for_retention_reverifies_then_deletes_the_source(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    expected = fill(src, site, count=8)
    assert not run_module("site_migration", module_args(cp, engines, site, retain_hours=24)).failed
    early = run_module("site_migration", module_args(cp, engines, site, state="cleaned"))
    assert early.failed and "kept until" in early.msg
    assert contents(src, site) == expected

    with cp.connect() as conn:
        conn.execute("UPDATE storage_migrations SET source_retained_until = now() - interval '1 minute'"
                     " WHERE site_id = %s", (site,))
    # An object changed on the destination since the switch: its source copy is not the same content.
    changed = f"{site}/full/20261201T020000Z/part-00004.bin"
    dst.client().put_object(Bucket="chom-backups", Key=changed, Body=b"newer")
    check = run_module("site_migration", module_args(cp, engines, site, state="cleaned"), check=True)
    assert check.changed and check.result["plan"]["objects_to_delete"] == len(expected) - 1
    assert contents(src, site) == expected

    run = run_module("site_migration", module_args(cp, engines, site, state="cleaned"))
    assert run.changed and not run.failed, run.msg
    assert run.result["deleted_objects"] == len(expected) - 1
    assert [k["object"] for k in run.result["kept"]] == [f"chom-backups/{changed}"]
    assert list(contents(src, site)) == [("chom-backups", changed)]
    assert len(contents(dst, site)) == len(expected)


def test_rollback_brings_the_site_back_with_writes_made_after_the_switch(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=8)
    assert not run_module("site_migration", module_args(cp, engines, site)).failed
    d = dst.client()
    d.put_object(Bucket="chom-backups", Key=f"{site}/db/20261203T020000Z/dump.sql.gz", Body=b"after switch")
    d.delete_object(Bucket="chom-backups", Key=f"{site}/full/20261201T020000Z/part-00000.bin")

    run = run_module("site_migration", module_args(cp, engines, site, state="rolled_back"))
    assert run.changed and not run.failed, run.msg
    assert site_row(cp, site)["host"] == "mig-src"
    # Everything the current host holds is back on the old source; nothing was deleted there: the
    # object deleted after the switch stays (reported), so an object lost by the current host is
    # never lost twice.
    back, current = contents(src, site), contents(dst, site)
    assert {k: v for k, v in back.items() if k in current} == current
    deleted_after_switch = ("chom-backups", f"{site}/full/20261201T020000Z/part-00000.bin")
    assert set(back) - set(current) == {deleted_after_switch}
    assert run.result["kept_on_destination"] == ["/".join(deleted_after_switch)]
    with cp.connect() as conn:
        rolled = conn.execute("SELECT count(*) FROM storage_migrations WHERE site_id = %s"
                              " AND rolled_back_at IS NOT NULL", (site,)).fetchone()[0]
    assert rolled == 1
    again = run_module("site_migration", module_args(cp, engines, site, state="rolled_back"))
    assert not again.changed and not again.failed, again.msg


@pytest.mark.parametrize("change, message", [
    ("UPDATE storage_hosts SET role = 'replica' WHERE hostname = 'mig-dst'", "cannot take sites"),
    ("UPDATE storage_hosts SET capacity_state = 'critical' WHERE hostname = 'mig-dst'", "cannot take sites"),
    ("UPDATE sites SET storage_host_id = (SELECT id FROM storage_hosts WHERE hostname = 'mig-other')",
     "not on mig-src"),
])
def test_refusals_record_nothing(cp, engines, run_module, change, message):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=2)
    with cp.connect() as conn:
        conn.execute(change)
    run = run_module("site_migration", module_args(cp, engines, site))
    assert run.failed and message in run.msg, run.msg
    assert migrations(cp, site) == [] and contents(dst, site) == {}


@pytest.mark.parametrize("args, message", [
    ({"site_id": "../etc"}, "site ID"),
    ({"dest_host": "mig-src"}, "same host"),
    ({"dest_host": "nowhere"}, "not registered"),
    ({"part_size_mb": 1}, "part_size"),
    ({"site_id": "site-unknown"}, "not in the sites table"),
])
def test_bad_input_is_a_clear_error(cp, engines, run_module, args, message):
    run = run_module("site_migration", module_args(cp, engines, new_site(cp), **args))
    assert run.failed and message in run.msg, run.msg
    assert engines[0].admin.secret_key not in run.raw and engines[1].admin.secret_key not in run.raw


def test_destination_holding_other_objects_of_the_site_is_refused(cp, engines):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=2)
    dst.client().put_object(Bucket="chom-media", Key=f"{site}/media/stale.jpg", Body=b"left over")
    with cp.connect() as conn:
        with pytest.raises(MigrationError, match="already holds 1 objects"):
            migrator(cp, engines, site, conn).run()
    assert site_row(cp, site)["host"] == "mig-src"
    assert dst.client().get_object(Bucket="chom-media", Key=f"{site}/media/stale.jpg")["Body"].read() == b"left over"


def test_stale_objects_on_the_destination_can_be_replaced_explicitly(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    expected = fill(src, site, count=4)
    dst.client().put_object(Bucket="chom-media", Key=f"{site}/media/stale.jpg", Body=b"left over")
    run = run_module("site_migration", module_args(cp, engines, site, replace_stale_on_dest=True))
    assert run.changed and not run.failed, run.msg
    assert contents(dst, site) == expected
    assert run.result["deleted_on_destination"] == [f"chom-media/{site}/media/stale.jpg"]


def test_a_source_that_suddenly_lists_nothing_fails_without_deleting_or_switching(cp, engines):
    src, dst = engines
    site = new_site(cp)
    expected = fill(src, site, count=12)

    def source_goes_blank(migration):
        # As a failed volume or engine would answer: the listing is empty.
        migration.src = type("Blank", (), {"get_paginator": lambda self, name: Blank()})()

    class Blank:
        def paginate(self, **_):
            return [{"Contents": []}]

    with cp.connect() as conn:
        with pytest.raises(MigrationError, match="lists no object"):
            migrator(cp, engines, site, conn, hooks={"delta": source_goes_blank}).run()
    assert site_row(cp, site)["host"] == "mig-src"
    assert contents(dst, site) == expected, "nothing copied may be deleted on the destination"


def test_many_objects_vanishing_during_the_copy_fail_the_migration(cp, engines):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=20)

    def mass_delete(_):
        keys = [f"{site}/full/20261201T020000Z/part-{i:05d}.bin" for i in range(10)]
        src.client().delete_objects(Bucket="chom-backups", Delete={"Objects": [{"Key": k} for k in keys]})

    with cp.connect() as conn:
        with pytest.raises(MigrationError, match="vanished from the source"):
            migrator(cp, engines, site, conn, hooks={"delta": mass_delete}).run()
    assert site_row(cp, site)["host"] == "mig-src"
    assert len(contents(dst, site)) == 20 + len(AWKWARD)


def test_a_write_after_the_last_listing_is_copied_after_the_switch(cp, engines):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=3)
    late = f"{site}/media/uploads/late.jpg"
    with cp.connect() as conn:
        result = migrator(cp, engines, site, conn, hooks={
            "switch": lambda _: src.client().put_object(Bucket="chom-media", Key=late, Body=b"late")}).run()
    assert result["copied_after_switch"] == 1
    assert dst.client().get_object(Bucket="chom-media", Key=late)["Body"].read() == b"late"


def test_an_interrupted_migration_of_a_site_moved_since_is_closed_and_its_flags_released(cp, engines):
    src, _ = engines
    site = new_site(cp)
    fill(src, site, count=3)

    def die(_):
        raise KeyboardInterrupt  # the process dies: nothing is recorded as failed

    with cp.connect() as conn:
        with pytest.raises(KeyboardInterrupt):
            migrator(cp, engines, site, conn, hooks={"delta": die}).run()
    assert migrations(cp, site)[0]["status"] == "in_progress" and site_row(cp, site)["backups_paused"]
    with cp.connect() as conn:
        conn.execute("UPDATE sites SET storage_host_id = (SELECT id FROM storage_hosts WHERE hostname = 'mig-other')"
                     " WHERE id = %s", (site,))
        with pytest.raises(MigrationRefused, match="not on mig-src"):
            migrator(cp, engines, site, conn).run()
    [row] = migrations(cp, site)
    assert row["status"] == "failed" and "moved to mig-other" in row["failure_reason"]
    assert site_row(cp, site) == {"host": "mig-other", "backups_paused": False, "dual_write": None}


def test_cleanup_is_refused_while_the_site_is_being_migrated(cp, engines, run_module):
    src, _ = engines
    site = new_site(cp)
    fill(src, site, count=3)
    assert not run_module("site_migration", module_args(cp, engines, site, retain_hours=0)).failed
    with cp.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"chom-storage migration:{site}",))
        run = run_module("site_migration", module_args(cp, engines, site, state="cleaned"))
    assert run.failed and "another process" in run.msg
    assert len(contents(src, site)) == 3 + len(AWKWARD)



def test_migrate_site_playbook_check_mode_then_real_run(cp, engines, tmp_path):
    src, dst = engines
    site = new_site(cp)
    expected = fill(src, site, count=4)

    def host(engine):
        return {"ansible_connection": "local", "object_store_listen_address": "127.0.0.1",
                "object_store_s3_port": int(engine.endpoint.rsplit(":", 1)[1]),
                "object_store_admin_access_key": engine.admin.access_key,
                "object_store_admin_secret_key": engine.admin.secret_key}

    inventory = {"all": {"hosts": {"mig-src": host(src), "mig-dst": host(dst)},
                         "vars": {"control_plane_db_host": cp.host, "control_plane_db_port": cp.port,
                                  "control_plane_db_name": cp.name, "control_plane_db_user": cp.user,
                                  "control_plane_db_password": cp.password, "control_plane_db_sslmode": "disable"}}}
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    secrets_shown = (src.admin.secret_key, dst.admin.secret_key, cp.password)

    def play(*extra):
        proc = subprocess.run([str(REPO_ROOT / ".venv/bin/ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                               "playbooks/migrate_site.yml", "-e", f"site_id={site}", "-e", "source_host=mig-src",
                               "-e", "dest_host=mig-dst", *extra], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=300, check=False)
        assert not any(secret in proc.stdout + proc.stderr for secret in secrets_shown)
        return proc

    check = play("--check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert "changed=1" in check.stdout and migrations(cp, site) == [] and contents(dst, site) == {}
    real = play()
    assert real.returncode == 0, real.stdout[-3000:]
    assert contents(dst, site) == expected and site_row(cp, site)["host"] == "mig-dst"
    again = play()
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
    bad = play("-e", "dest_host=mig-src")
    assert bad.returncode != 0 and "two different hosts" in bad.stdout


def test_an_s3_auth_error_names_the_endpoint_that_refused(cp, engines, run_module):
    src, dst = engines
    site = new_site(cp)
    fill(src, site, count=2)
    bad_secret = "Zz" + secrets.token_hex(12)
    args = module_args(cp, engines, site)
    args["dest"] = dict(args["dest"], secret_key=bad_secret)
    run = run_module("site_migration", args)
    assert run.failed
    assert f"[dest endpoint {dst.endpoint} of mig-dst]" in run.msg, run.msg
    assert "source endpoint" not in run.msg and bad_secret not in run.raw
    args = module_args(cp, engines, site)
    args["source"] = dict(args["source"], secret_key=bad_secret)
    run = run_module("site_migration", args)
    assert run.failed
    assert f"[source endpoint {src.endpoint} of mig-src]" in run.msg, run.msg
    assert "dest endpoint" not in run.msg and bad_secret not in run.raw
