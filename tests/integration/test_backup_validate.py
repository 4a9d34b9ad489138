"""chom.storage.backup_validate against a real SeaweedFS, run through the ansible CLI."""

from __future__ import annotations

import gzip
import json
import random

import pytest

BUCKET = "chom-backups"
NOW = "20260110T030000Z"


def mysql_dump(rows: int = 400, trailer: bool = True) -> bytes:
    rng = random.Random(rows)
    lines = ["-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)", "--", "-- Host: localhost    Database: wp", "",
             "DROP TABLE IF EXISTS `wp_options`;", "CREATE TABLE `wp_options` (",
             "  `option_id` bigint unsigned NOT NULL AUTO_INCREMENT,", "  `option_value` longtext NOT NULL,",
             "  PRIMARY KEY (`option_id`)", ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;", ""]
    lines += [f"INSERT INTO `wp_options` VALUES ({i},'{rng.getrandbits(160):040x}');" for i in range(rows)]
    if trailer:
        lines += ["", "-- Dump completed on 2026-01-10  2:00:03"]
    return ("\n".join(lines) + "\n").encode()


GOOD = gzip.compress(mysql_dump())
CASES = {
    # site: (stamp, body, expected status, words of the reason)
    "good-site": ("20260110T020000Z", GOOD, "valid", None),
    "truncated-site": ("20260110T020000Z", GOOD[: len(GOOD) * 2 // 3], "invalid", "truncated"),
    "small-site": ("20260110T020000Z", gzip.compress(mysql_dump(rows=2)), "invalid", "below the floor of 1024 B"),
    "no-trailer-site": ("20260110T020000Z", gzip.compress(mysql_dump(trailer=False)), "invalid",
                        "does not end with '-- Dump completed'"),
    "old-site": ("20260105T020000Z", GOOD, "valid", None),  # outside the 24 h window of the counts
}


@pytest.fixture(scope="module")
def engine(seaweedfs_factory):
    server = seaweedfs_factory()
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    for site, (stamp, body, _, _) in CASES.items():
        client.put_object(Bucket=BUCKET, Key=f"{site}/db/{stamp}/dump.sql.gz", Body=body)
    client.put_object(Bucket=BUCKET, Key="good-site/full/20260110T020000Z/files.tar.gz", Body=b"not a dump")
    return server


def markers(server) -> dict:
    found = {}
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for entry in page.get("Contents", []):
            if "/.chom/" in entry["Key"]:
                found[entry["Key"]] = server.client().get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
    return found


def test_dumps_are_marked_counted_and_rerun_is_idempotent(run_module, engine, tmp_path):
    results_file = tmp_path / "state" / "backup-results.json"
    args = dict(engine.module_args(), results_file=str(results_file), now=NOW)
    assert len(CASES["good-site"][1]) > 1024

    # Check mode: reports everything, writes nothing.
    dry = run_module("backup_validate", args, check=True)
    assert not dry.failed and dry.changed, dry.result
    assert dry.result["marked"] == {"valid": 2, "invalid": 3}
    assert dry.result["counts"] == {"succeeded": 1, "failed": 3}
    assert markers(engine) == {} and not results_file.exists()

    first = run_module("backup_validate", args)
    assert not first.failed and first.changed, first.result
    by_site = {item["site"]: item for item in first.result["items"]}
    assert set(by_site) == set(CASES)  # the full backup is not a db item
    for site, (stamp, _, status, words) in CASES.items():
        item = by_site[site]
        assert item["status"] == status and item["stamp"] == stamp and item["dumps"] == ["dump.sql.gz"]
        assert item["marker"] == f"{site}/db/{stamp}/.chom/{status}"
        if words:
            assert words in item["reason"], item
    stored = markers(engine)
    assert sorted(stored) == sorted(item["marker"] for item in first.result["items"])
    assert stored["good-site/db/20260110T020000Z/.chom/valid"] == b""
    assert b"truncated" in stored["truncated-site/db/20260110T020000Z/.chom/invalid"]
    assert first.result["counts"] == {"succeeded": 1, "failed": 3}
    assert json.loads(results_file.read_text()) == {"succeeded": 1, "failed": 3}

    second = run_module("backup_validate", args)
    assert not second.failed and not second.changed, second.result
    assert all(item["already_marked"] for item in second.result["items"])
    assert second.result["marked"] == {"valid": 0, "invalid": 0}
    assert second.result["counts"] == {"succeeded": 1, "failed": 3}
    assert markers(engine) == stored

    # A day later the same items fall out of the window: only the results file changes.
    later = run_module("backup_validate", dict(args, now="20260111T030000Z"))
    assert not later.failed and later.changed and later.result["results_file_changed"], later.result
    assert json.loads(results_file.read_text()) == {"succeeded": 0, "failed": 0}


def test_a_new_dump_is_the_only_one_read(run_module, engine):
    client = engine.client()
    client.put_object(Bucket=BUCKET, Key="good-site/db/20260110T025000Z/dump.sql.gz", Body=GOOD)
    run = run_module("backup_validate", dict(engine.module_args(), sites=["good-site"], now=NOW))
    assert not run.failed and run.changed, run.result
    fresh = [item for item in run.result["items"] if not item["already_marked"]]
    assert [item["item"] for item in fresh] == ["good-site/db/20260110T025000Z/"]
    assert run.result["marked"] == {"valid": 1, "invalid": 0}


def test_bad_input_fails_clearly(run_module, engine):
    run = run_module("backup_validate", dict(engine.module_args(), sites=["../etc"]))
    assert run.failed and "site ID" in run.msg
    run = run_module("backup_validate", dict(engine.module_args(), now="yesterday"))
    assert run.failed and "now=" in run.msg
