"""chom.storage.backup_retention against a real SeaweedFS and PostgreSQL, run through the ansible CLI."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.config import Config

from ansible_collections.chom.storage.plugins.module_utils.control_plane import apply_schema

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
NOW_ISO = "2026-06-15T12:00:00Z"
BUCKETS = ("chom-backups", "chom-archives", "chom-media")
OUTSIDE_KEYS = ("README.txt", "alpha/unknown-kind/x", "alpha/db/not-a-stamp/dump.sql.gz", "Alpha/db/x/y")
DB_FILES_PER_INCREMENTAL = 30


def stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def objects_of_site(site: str, days: int) -> list[tuple[str, str, bytes]]:
    """(bucket, key, body): weekly fulls, daily incrementals of many files, daily dumps with markers."""
    objects = []
    for day in range(days, -1, -1):
        when = NOW - timedelta(days=day, hours=1)
        kind = "full" if day % 7 == 0 else "incremental"
        prefix = f"{site}/{kind}/{stamp(when)}/"
        count = 3 if kind == "full" else DB_FILES_PER_INCREMENTAL
        objects += [("chom-backups", f"{prefix}files/{n:03d}", b"x" * 10) for n in range(count)]
        db = f"{site}/db/{stamp(when - timedelta(hours=1))}/"
        objects.append(("chom-backups", db + "dump.sql.gz", b"d" * 100))
        # Every 5th dump failed validation, every 7th is still waiting for it.
        if day % 5 == 3:
            objects.append(("chom-backups", db + ".chom/invalid", b"too small"))
        elif day % 7 != 2:
            objects.append(("chom-backups", db + ".chom/valid", b""))
        logs = f"{site}/logs/{stamp(when)}/"
        objects.append(("chom-archives", logs + "laravel.log.gz", b"l" * 50))
    for n in range(3):
        objects.append(("chom-media", f"{site}/media/uploads/{n}.jpg", b"m" * 20))
    return objects


@pytest.fixture
def world(seaweedfs_factory, pg_db):
    engine = seaweedfs_factory()
    client = engine.client()
    uploader = boto3.client("s3", endpoint_url=engine.endpoint, aws_access_key_id=engine.admin.access_key,
                            aws_secret_access_key=engine.admin.secret_key, region_name="us-east-1",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                          max_pool_connections=32))
    for bucket in BUCKETS:
        client.create_bucket(Bucket=bucket)
    with pg_db.connect() as conn:
        apply_schema(conn)
        conn.execute("INSERT INTO sites (id, tier, deleted_at) VALUES ('alpha', 'starter', NULL),"
                     " ('beta', 'pro', NULL), ('gone', 'starter', %s)", (NOW - timedelta(days=30),))
    objects = objects_of_site("alpha", 60) + objects_of_site("beta", 40) + objects_of_site("gone", 10)
    objects += [("chom-backups", key, b"?") for key in OUTSIDE_KEYS]
    objects.append(("chom-backups", "nobody/db/20200101T000000Z/dump.sql.gz", b"old"))  # site unknown to the DB
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda o: uploader.put_object(Bucket=o[0], Key=o[1], Body=o[2]), objects))
    return engine, pg_db, objects


def all_keys(client) -> set[tuple[str, str]]:
    keys = set()
    for bucket in BUCKETS:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys |= {(bucket, obj["Key"]) for obj in page.get("Contents", [])}
    return keys


def item_of(bucket: str, key: str) -> str:
    parts = key.split("/")
    return f"{bucket}/{key}" if parts[1] == "media" else f"{bucket}/{'/'.join(parts[:3])}/"


def test_check_mode_lists_exactly_what_the_run_deletes(world, run_module, tmp_path):
    engine, pg_db, objects = world
    client = engine.client()
    assert sum(1 for _, key, _ in objects if key.startswith("alpha/")) > 1500  # two listing pages at least
    before = all_keys(client)
    metrics_file = tmp_path / "textfile" / "chom_storage_retention.prom"
    results_file = tmp_path / "backup-results.json"
    results_file.write_text(json.dumps({"succeeded": 5, "failed": 1}))  # counts of the snapshot job
    args = dict(engine.module_args(), **pg_db.module_args, now=NOW_ISO, metrics_file=str(metrics_file),
                backup_results_file=str(results_file))

    check = run_module("backup_retention", args, check=True, diff=True)

    assert not check.failed and check.changed, check.msg
    assert all_keys(client) == before
    assert not metrics_file.exists()
    assert json.loads(results_file.read_text()) == {"succeeded": 5, "failed": 1}
    would = {(d["bucket"], d["item"]) for d in check.result["deleted"]}
    assert check.result["diff"]["before"].count("\n") == len(would)
    assert sorted(check.result["outside_scheme"]) == sorted(f"chom-backups/{key}" for key in OUTSIDE_KEYS)

    real = run_module("backup_retention", args)

    assert not real.failed and real.changed, real.msg
    assert {(d["bucket"], d["item"]) for d in real.result["deleted"]} == would
    after = all_keys(client)
    gone = before - after
    assert {item_of(bucket, key) for bucket, key in gone} == {f"{b}/{i}" for b, i in would}
    # Every object of a deleted item went, markers included; nothing of a kept item did.
    assert not {item_of(b, k) for b, k in after if k not in OUTSIDE_KEYS} & {f"{b}/{i}" for b, i in would}
    for key in OUTSIDE_KEYS:
        assert ("chom-backups", key) in after
    assert ("chom-backups", "nobody/db/20200101T000000Z/dump.sql.gz") in after

    deleted = {(d["site"], d["kind"]): [] for d in real.result["deleted"]}
    for d in real.result["deleted"]:
        deleted[(d["site"], d["kind"])].append(d)
    # The deleted site's media went; the live sites' media stayed.
    assert len(deleted[("gone", "media")]) == 3
    assert ("alpha", "media") not in deleted and ("beta", "media") not in deleted
    # Starter db dumps: 3 days, plus the newest valid one; no dump of the last 3 days went.
    alpha_db_kept = {item_of(b, k) for b, k in after if k.startswith("alpha/db/") and k not in OUTSIDE_KEYS}
    assert all(datetime.strptime(i.split("/")[3], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) > NOW - timedelta(days=4)
               for i in alpha_db_kept)
    # Incrementals of alpha kept: those of the last day and the chain back to their base full.
    kept_alpha = {item_of(b, k) for b, k in after if k.startswith("alpha/") and k not in OUTSIDE_KEYS}
    assert any("/full/" in i for i in kept_alpha)

    # The metrics and the backup counts.
    text = metrics_file.read_text()
    freed = sum(d["bytes"] for d in real.result["deleted"])
    assert f'chom_storage_retention_bytes_deleted_total{{source="objects"}} {freed}' in text
    deleted_db = sum(1 for d in real.result["deleted"] if d["kind"] == "db")
    assert f'chom_storage_retention_items{{source="objects",kind="db",action="delete"}} {deleted_db}' in text
    assert 'chom_storage_retention_outside_scheme{source="objects"} 4' in text
    assert "chom_storage_backup_success_rate" not in text  # written by the capacity check alone
    counts = json.loads(results_file.read_text())
    recorded = real.result["backup_results"]["recorded"]
    assert counts["succeeded"] == 5 + recorded["succeeded"] and counts["failed"] == 1 + recorded["failed"]
    assert recorded == {"succeeded": 3, "failed": 0}  # today's dump of each site, all valid

    again = run_module("backup_retention", args)

    assert not again.failed and not again.changed, again.result["deleted"][:5]
    assert all_keys(client) == after
    assert f'chom_storage_retention_bytes_deleted_total{{source="objects"}} {freed}' in metrics_file.read_text()
    assert json.loads(results_file.read_text())["succeeded"] == counts["succeeded"]  # each dump counted once


def test_sites_limit_the_listing_and_emergency_frees_more(world, run_module):
    engine, pg_db, _ = world
    client = engine.client()
    args = dict(engine.module_args(), **pg_db.module_args, now=NOW_ISO, sites=["beta"])
    normal = run_module("backup_retention", args, check=True)
    assert {d["site"] for d in normal.result["deleted"]} == {"beta"}
    urgent = run_module("backup_retention", dict(args, emergency=True, bytes_to_free=10**12), check=True)
    assert len(urgent.result["deleted"]) > len(normal.result["deleted"])
    assert urgent.result["totals"]["objects"]["bytes_short"] > 0
    assert any(d["reason"].startswith("emergency") for d in urgent.result["deleted"])
    # Even then, the newest valid dump of beta stays.
    before = all_keys(client)
    run = run_module("backup_retention", dict(args, emergency=True, bytes_to_free=10**12))
    assert not run.failed
    left = {item_of(b, k) for b, k in all_keys(client) if k.startswith("beta/db/")}
    assert left
    assert any(("chom-backups", i.split("/", 1)[1] + ".chom/valid") in before for i in left)


def test_bad_input_is_refused(run_module, tmp_path):
    result = run_module("backup_retention", dict(snapshot_root=str(tmp_path), site_tiers={}, now="yesterday"))
    assert result.failed and "ISO-8601" in result.msg
    result = run_module("backup_retention", dict(snapshot_root=str(tmp_path), site_tiers={}, emergency=True))
    assert result.failed and "bytes_to_free" in result.msg
    result = run_module("backup_retention", dict(snapshot_root=str(tmp_path / "missing"), site_tiers={}))
    assert result.failed and "not a directory" in result.msg


# ------------------------------------------------------------------------------------ snapshots


def make_snapshot(root, site, age: timedelta, kind=None, status=None, files=3):
    name = stamp(NOW - age)
    path = root / site / name
    path.mkdir(parents=True)
    for n in range(files):
        (path / f"f{n}").write_bytes(b"s" * 5000)
    if kind is not None:
        (root / site / f"{name}.json").write_text(json.dumps({"kind": kind, "status": status, "files": files}))
    return path


def test_snapshot_directories(run_module, tmp_path):
    root = tmp_path / "snapshots"
    days = timedelta(days=1)
    old_full = make_snapshot(root, "alpha", 20 * days, "full", "complete")
    new_full = make_snapshot(root, "alpha", 6 * days, "full", "complete")
    old_inc = make_snapshot(root, "alpha", 3 * days, "incremental", "complete")
    new_inc = make_snapshot(root, "alpha", 2 * days, "incremental", "complete")
    failed_recent = make_snapshot(root, "alpha", 1 * days, "incremental", "failed")
    no_sidecar_recent = make_snapshot(root, "alpha", 5 * days)
    no_sidecar_old = make_snapshot(root, "alpha", 9 * days)
    os.link(new_full / "f0", new_inc / "shared")  # hard-linked: no dependency, no bytes freed for it
    partial = root / "alpha" / (stamp(NOW - 30 * days) + ".partial")
    partial.mkdir()
    leftover = root / "alpha" / (".deleting-" + stamp(NOW - 40 * days))
    (leftover / "deep").mkdir(parents=True)
    (root / "alpha" / "notes.txt").write_text("operator notes")
    unknown_site = make_snapshot(root, "stranger", 300 * days, "full", "complete")
    metrics_file = tmp_path / "retention_snapshots.prom"
    args = dict(snapshot_root=str(root), site_tiers={"alpha": "starter"}, now=NOW_ISO, metrics_file=str(metrics_file))

    check = run_module("backup_retention", args, check=True, diff=True)

    assert not check.failed and check.changed, check.msg
    would = {d["item"] for d in check.result["deleted"]}
    assert would == {str(old_full), str(old_inc), str(no_sidecar_old), str(leftover)}
    assert old_full.exists() and leftover.exists() and not metrics_file.exists()

    real = run_module("backup_retention", args)

    assert not real.failed and real.changed, real.msg
    assert {d["item"] for d in real.result["deleted"]} == would
    for path in (old_full, old_inc, no_sidecar_old, leftover):
        assert not path.exists(), path
    assert not (root / "alpha" / (old_full.name + ".json")).exists()
    for path in (new_full, new_inc, failed_recent, no_sidecar_recent, partial, unknown_site):
        assert path.is_dir(), path
    assert (root / "alpha" / "notes.txt").exists()
    assert not [p for p in (root / "alpha").iterdir() if p.name.startswith(".deleting-")]
    assert str(root / "alpha" / "notes.txt") in real.result["outside_scheme"]
    text = metrics_file.read_text()
    assert 'chom_storage_retention_items{source="snapshots",kind="full",action="delete"} 2' in text

    again = run_module("backup_retention", args)
    assert not again.failed and not again.changed


def test_a_snapshot_stamped_in_the_future_is_kept_reported_and_counted(run_module, tmp_path):
    root = tmp_path / "snapshots"
    days = timedelta(days=1)
    real_old = make_snapshot(root, "alpha", 10 * days, "full", "complete")
    real_new = make_snapshot(root, "alpha", 8 * days, "full", "complete")
    future = make_snapshot(root, "alpha", -12000 * days, "full", "complete")  # a clock in the 2050s
    metrics_file = tmp_path / "retention_snapshots.prom"
    args = dict(snapshot_root=str(root), site_tiers={"alpha": "starter"}, now=NOW_ISO, metrics_file=str(metrics_file))

    run = run_module("backup_retention", args)

    assert not run.failed, run.msg
    assert {d["item"] for d in run.result["deleted"]} == {str(real_old)}
    assert real_new.is_dir() and future.is_dir()
    assert [f["item"] for f in run.result["future_stamped"]] == [str(future)]
    assert run.result["totals"]["snapshots"]["items_future"] == 1
    assert any("stamped in the future" in w for w in run.result.get("warnings", []))
    assert 'chom_storage_retention_future_items{source="snapshots"} 1' in metrics_file.read_text()


def test_a_bad_deleted_at_names_the_site_and_parameter(run_module, tmp_path):
    run = run_module("backup_retention", dict(snapshot_root=str(tmp_path), now=NOW_ISO,
                                              site_tiers={"site-7": {"tier": "pro", "deleted_at": "yesterday"}}))
    assert run.failed
    assert run.msg.startswith("site_tiers['site-7'].deleted_at must be ISO-8601"), run.msg
    run = run_module("backup_retention", dict(snapshot_root=str(tmp_path), now=NOW_ISO,
                                              site_tiers={"site-7": {"tier": "pro", "deleted_at": "2026-03-29T02:30"}}))
    assert run.failed and run.msg.startswith("site_tiers['site-7'].deleted_at must carry an offset"), run.msg
