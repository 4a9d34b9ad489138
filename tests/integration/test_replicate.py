"""The real chom-replicate program, object tier, between two real SeaweedFS engines.

The program runs as a subprocess with the virtualenv's python and a JSON configuration of the
shape the replication role writes. The file tier is disabled; the volume guard still applies, so
the source volume is a tmpfs mounted on a temporary directory (root needed) for this module.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROGRAM = REPO_ROOT / "roles/replication/files/chom-replicate"
REPLICA_NAME = "replica-it"
MIB = 1024 * 1024

# Keys that have broken copy tools: spaces, +, %, ?, non-ASCII, two Unicode normalisations of one
# name, a zero-byte "folder" key ending in /, a zero-byte object, and a name next to that folder.
AWKWARD_KEYS = {
    "plain.txt": b"plain\n",
    "with space/and more spaces.txt": b"spaces\n",
    "plus+sign+key.txt": b"plus\n",
    "percent%20encoded%2Fnot.txt": b"percent\n",
    "question?mark=1&x=y.txt": b"question\n",
    "caf\u00e9/\u65e5\u672c\u8a9e \u00fcml\u00e4ut.txt": b"non-ascii\n",
    unicodedata.normalize("NFC", "r\u00e9sum\u00e9.txt"): b"nfc\n",
    unicodedata.normalize("NFD", "r\u00e9sum\u00e9.txt"): b"nfd\n",
    "folder/": b"",
    "folder/inside.txt": b"inside\n",
    "empty.bin": b"",
}
MANY = 1005  # more than one listing page (1000 keys)


@pytest.fixture(scope="module")
def volume():
    """A real mountpoint (tmpfs) standing in for the primary's storage volume."""
    if os.geteuid() != 0:
        pytest.fail("the chom-replicate tests need root to mount a tmpfs as the source volume")
    point = Path(tempfile.mkdtemp(prefix="chom-it-volume-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "chom-it-volume", str(point)],
                   check=True, capture_output=True, timeout=30)
    try:
        assert os.path.ismount(point)
        (point / "files").mkdir()
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True, capture_output=True, timeout=30)
        point.rmdir()


@pytest.fixture(scope="module")
def engines(seaweedfs_factory):
    """Two independent engines: the primary's (source) and the replica's."""
    source, replica = seaweedfs_factory(), seaweedfs_factory()
    yield source, replica
    source.stop()
    replica.stop()


class Replication:
    """One test's buckets (created empty on both engines), configuration and helpers."""

    def __init__(self, engines, volume: Path, workdir: Path, buckets: int = 1):
        self.source_engine, self.replica_engine = engines
        self.source = self.source_engine.client()
        self.replica = self.replica_engine.client()
        self.buckets = [f"rep-{secrets.token_hex(4)}-{n}" for n in range(buckets)]
        for bucket in self.buckets:
            self.source.create_bucket(Bucket=bucket)
            self.replica.create_bucket(Bucket=bucket)
        self.bucket = self.buckets[0]
        self.workdir = workdir
        self.metrics_file = workdir / "metrics" / "chom_storage_replication.prom"
        self.cfg = {
            "replica_name": REPLICA_NAME,
            "volume_path": str(volume),
            "max_delete_percent": 50.0,
            "metrics_dir": str(workdir / "metrics"),
            "state_file": str(workdir / "state" / "replication-state.json"),
            "lock_file": str(workdir / "run" / "replication.lock"),
            "file_tier": {
                "enabled": False,
                "source_path": str(volume / "files"),
                "host": "127.0.0.1",
                "user": "chom-replica",
                "ssh_key": str(workdir / "no-key"),
                "known_hosts": str(workdir / "no-known-hosts"),
            },
            "object_tier": {
                "enabled": True,
                "buckets": self.buckets,
                "region": "us-east-1",
                "source_endpoint": self.source_engine.endpoint,
                "replica_endpoint": self.replica_engine.endpoint,
                "source_access_key": self.source_engine.admin.access_key,
                "source_secret_key": self.source_engine.admin.secret_key,
                "replica_access_key": self.replica_engine.admin.access_key,
                "replica_secret_key": self.replica_engine.admin.secret_key,
            },
        }

    def run(self, **overrides) -> subprocess.CompletedProcess:
        cfg = json.loads(json.dumps(self.cfg))
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split("__")
            node = cfg
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        path = self.workdir / "replication.json"
        path.write_text(json.dumps(cfg, indent=2))
        return subprocess.run([sys.executable, str(PROGRAM), "--config", str(path)], capture_output=True,
                              text=True, timeout=300, check=False, cwd=self.workdir)

    def put(self, client, key: str, body: bytes, bucket: str | None = None) -> None:
        client.put_object(Bucket=bucket or self.bucket, Key=key, Body=body)

    def delete(self, client, *keys: str, bucket: str | None = None) -> None:
        for key in keys:
            client.delete_object(Bucket=bucket or self.bucket, Key=key)

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value, from the textfile the run wrote."""
        values = {}
        for line in self.metrics_file.read_text().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def metric(self, name: str, tier: str | None = None) -> float:
        labels = f'replica="{REPLICA_NAME}"' + (f',tier="{tier}"' if tier else "")
        return self.metrics()[f"chom_storage_replication_{name}{{{labels}}}"]


@pytest.fixture
def replication(engines, volume, tmp_path):
    return Replication(engines, volume, tmp_path)


def keys_of(client, bucket: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def listing(client, bucket: str) -> dict[str, tuple[int, str, object]]:
    """Every object (all pages) but the replication marker, which every run rewrites:
    key -> (size, ETag, LastModified), without reading any content."""
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.update({item["Key"]: (item["Size"], item["ETag"], item["LastModified"])
                        for item in page.get("Contents", []) if item["Key"] != MARKER_KEY})
    return objects


def assert_replicated(rep: Replication, bucket: str) -> None:
    """Replica equals source (probes aside). Single-part ETags are the content's MD5 on both engines;
    objects with a multipart ETag on either side are compared by reading them."""
    source, replica = listing(rep.source, bucket), listing(rep.replica, bucket)
    wanted = {k: v for k, v in source.items() if not k.startswith(NOT_REPLICATED)}
    held = {k: v for k, v in replica.items() if not k.startswith(NOT_REPLICATED)}
    assert sorted(held) == sorted(wanted)
    multipart = {k for k in wanted if "-" in wanted[k][1] or "-" in held[k][1]}
    assert {k: v[:2] for k, v in held.items() if k not in multipart} == \
        {k: v[:2] for k, v in wanted.items() if k not in multipart}
    for key in multipart:
        assert (hashlib.sha256(rep.source.get_object(Bucket=bucket, Key=key)["Body"].read()).digest()
                == hashlib.sha256(rep.replica.get_object(Bucket=bucket, Key=key)["Body"].read()).digest()), key


# Each engine's health probes, and the marker each successful run leaves on the replica.
MARKER_KEY = "_platform/replication/last-success.json"
NOT_REPLICATED = (".chom-probe/", MARKER_KEY)


def snapshot(client, bucket: str) -> dict[str, tuple]:
    """Every object (all pages, probes included): key -> (size, SHA-256, ETag, LastModified, metadata)."""

    def read(key):
        obj = client.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        assert len(data) == obj["ContentLength"], key
        return key, (len(data), hashlib.sha256(data).hexdigest(), obj["ETag"], obj["LastModified"],
                     tuple(sorted(obj["Metadata"].items())))

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(read, keys_of(client, bucket)))


def content_view(snap: dict) -> dict[str, tuple[int, str]]:
    """A snapshot without ETags, probe objects or the replication marker: what replication must make equal."""
    return {k: v[:2] for k, v in snap.items() if not k.startswith(NOT_REPLICATED)}


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_refused(proc: subprocess.CompletedProcess, reason: str) -> None:
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "replica left unchanged" in proc.stdout and reason in proc.stdout, proc.stdout


def copied(proc: subprocess.CompletedProcess) -> tuple[int, int]:
    """(objects copied, objects deleted) as the run logged them."""
    match = re.search(r"object tier: copied (\d+) \(\d+ bytes\), deleted (\d+)", proc.stdout)
    assert match, proc.stdout
    return int(match.group(1)), int(match.group(2))


def load_program():
    """The program as a module, for races that cannot be timed from outside a run."""
    loader = importlib.machinery.SourceFileLoader("chom_replicate", str(PROGRAM))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("chom_replicate", loader))
    loader.exec_module(module)
    return module


def seed(rep: Replication, count: int, prefix: str = "obj/") -> dict[str, bytes]:
    objects = {f"{prefix}{n:04d}": f"object {n}\n".encode() for n in range(count)}
    for key, body in objects.items():
        rep.put(rep.source, key, body)
    return objects


# ---------------------------------------------------------------- copying


def test_new_and_changed_objects_are_copied_byte_identical(engines, volume, tmp_path):
    from boto3.s3.transfer import TransferConfig

    rep = Replication(engines, volume, tmp_path, buckets=2)
    big_bucket, small_bucket = rep.buckets
    for key, body in AWKWARD_KEYS.items():
        rep.put(rep.source, key, body)
    rep.source.put_object(Bucket=big_bucket, Key="plain.txt", Body=AWKWARD_KEYS["plain.txt"],
                          ContentType="text/plain; charset=utf-8", Metadata={"site-id": "s-42"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: rep.put(rep.source, f"many/{n:05d}", f"many {n}\n".encode() * (n % 7)), range(MANY)))
    # Above boto3's 8 MiB threshold, uploaded in 5 MiB parts: a multipart ETag ("...-2") that is no
    # MD5 and that the replica's own upload (8 MiB parts) does not reproduce.
    big = os.urandom(9 * MIB + 123)
    rep.source.upload_fileobj(io.BytesIO(big), big_bucket, "big/multipart.bin",
                              Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    assert rep.source.head_object(Bucket=big_bucket, Key="big/multipart.bin")["ETag"].endswith('-2"')
    rep.put(rep.source, "small.txt", b"second bucket\n", bucket=small_bucket)
    # Probe objects belong to each engine's health checks: never copied, never deleted.
    rep.put(rep.source, ".chom-probe/source-only", b"probe")
    rep.put(rep.replica, ".chom-probe/replica-only", b"probe")

    source_keys = keys_of(rep.source, big_bucket)
    assert len(source_keys) == len(AWKWARD_KEYS) + MANY + 2, "the engine lost or merged some test keys"

    first = rep.run()
    assert_ok(first)
    expected_count = len(AWKWARD_KEYS) + MANY + 1 + 1  # + big object + the second bucket's object
    assert copied(first) == (expected_count, 0)
    source_snap = snapshot(rep.source, big_bucket)
    replica_snap = snapshot(rep.replica, big_bucket)
    assert content_view(replica_snap) == content_view(source_snap)
    assert replica_snap["big/multipart.bin"][1] == hashlib.sha256(big).hexdigest()
    assert replica_snap["big/multipart.bin"][2] != source_snap["big/multipart.bin"][2], \
        "the ETags agree, so this test no longer exercises the multipart comparison"
    assert replica_snap["empty.bin"][0] == 0 and replica_snap["folder/"][0] == 0
    assert ".chom-probe/source-only" not in replica_snap
    head = rep.replica.head_object(Bucket=big_bucket, Key="plain.txt")
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert head["Metadata"].get("site-id") == "s-42"
    assert ".chom-probe/replica-only" in replica_snap
    assert content_view(snapshot(rep.replica, small_bucket)) == content_view(snapshot(rep.source, small_bucket))
    assert rep.metric("last_run_success") == 1
    assert rep.metric("last_run_refused") == 0
    assert rep.metric("objects_copied", "object") == expected_count
    assert rep.metric("source_objects", "object") == expected_count
    assert rep.metric("bytes_copied", "object") == sum(v[0] for v in content_view(source_snap).values()) + 14
    assert 0 <= rep.metric("lag_seconds") < 300

    # Nothing changed: nothing is copied, whatever the ETags look like.
    before_second = listing(rep.replica, big_bucket)
    second = rep.run()
    assert_ok(second)
    assert copied(second) == (0, 0)
    assert rep.metric("objects_copied", "object") == 0
    assert listing(rep.replica, big_bucket) == before_second  # not even rewritten

    # Changed (same size, other bytes; other size), new, and a changed big object.
    rep.put(rep.source, "plain.txt", b"PLAIN\n")
    rep.put(rep.source, "question?mark=1&x=y.txt", b"a longer question\n")
    rep.put(rep.source, "empty.bin", b"no longer empty")
    rep.put(rep.source, "new key + more%.txt", b"new\n")
    big2 = bytearray(big)
    big2[7 * MIB] ^= 0xFF
    rep.source.upload_fileobj(io.BytesIO(bytes(big2)), big_bucket, "big/multipart.bin",
                              Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    third = rep.run()
    assert_ok(third)
    assert copied(third) == (5, 0)
    assert_replicated(rep, big_bucket)
    replica_big = rep.replica.get_object(Bucket=big_bucket, Key="big/multipart.bin")["Body"].read()
    assert hashlib.sha256(replica_big).digest() == hashlib.sha256(big2).digest()

    fourth = rep.run()
    assert_ok(fourth)
    assert copied(fourth) == (0, 0)

    # Deletes of awkward keys reach exactly those keys ("folder/" goes, "folder/inside.txt" stays).
    gone = ["folder/", "question?mark=1&x=y.txt", "percent%20encoded%2Fnot.txt", "plus+sign+key.txt",
            unicodedata.normalize("NFD", "r\u00e9sum\u00e9.txt")]
    rep.delete(rep.source, *gone)
    fifth = rep.run()
    assert_ok(fifth)
    assert copied(fifth) == (0, len(gone))
    replica_keys = set(keys_of(rep.replica, big_bucket))
    assert not replica_keys & set(gone)
    assert {"folder/inside.txt", unicodedata.normalize("NFC", "r\u00e9sum\u00e9.txt")} <= replica_keys
    assert_replicated(rep, big_bucket)

    # More than one DeleteObjects batch (1000 keys) in one run, allowed by a full bound.
    many = [f"many/{n:05d}" for n in range(MANY)]
    for start in range(0, MANY, 1000):
        rep.source.delete_objects(Bucket=big_bucket,
                                  Delete={"Objects": [{"Key": k} for k in many[start:start + 1000]], "Quiet": True})
    sixth = rep.run(max_delete_percent=100)
    assert_ok(sixth)
    assert copied(sixth) == (0, MANY)
    assert_replicated(rep, big_bucket)
    assert ".chom-probe/replica-only" in keys_of(rep.replica, big_bucket)


# ---------------------------------------------------------------- deletes and their guards


def test_deletes_propagate_within_the_bound(replication):
    rep = replication
    seed(rep, 10)
    assert_ok(rep.run())
    rep.delete(rep.source, "obj/0003", "obj/0007")
    rep.put(rep.source, "obj/new", b"new\n")
    proc = rep.run()
    assert_ok(proc)
    assert copied(proc) == (1, 2)
    assert content_view(snapshot(rep.replica, rep.bucket)) == content_view(snapshot(rep.source, rep.bucket))
    assert rep.metric("objects_deleted", "object") == 2
    assert rep.metric("last_run_success") == 1


def test_too_many_deletes_are_refused_and_the_replica_stays(replication):
    rep = replication
    seed(rep, 10)
    assert_ok(rep.run())
    success_time = rep.metric("last_success_timestamp_seconds")
    before = snapshot(rep.replica, rep.bucket)
    rep.delete(rep.source, *(f"obj/{n:04d}" for n in range(6)))  # 60 % > 50 %
    rep.put(rep.source, "obj/0009", b"changed\n")
    rep.put(rep.source, "obj/new", b"new\n")

    proc = rep.run()
    assert_refused(proc, "would be deleted")
    assert snapshot(rep.replica, rep.bucket) == before
    assert rep.metric("last_run_success") == 0
    assert rep.metric("last_run_refused") == 1
    assert rep.metric("last_success_timestamp_seconds") == success_time
    assert rep.metric("lag_seconds") > 0

    # A larger bound lets the same run through.
    proc = rep.run(max_delete_percent=75)
    assert_ok(proc)
    assert copied(proc) == (2, 6)
    assert content_view(snapshot(rep.replica, rep.bucket)) == content_view(snapshot(rep.source, rep.bucket))
    assert rep.metric("last_run_success") == 1


def test_empty_source_is_refused_even_under_a_full_bound(replication):
    rep = replication
    seed(rep, 5)
    assert_ok(rep.run())
    before = snapshot(rep.replica, rep.bucket)
    rep.delete(rep.source, *(f"obj/{n:04d}" for n in range(5)))
    rep.put(rep.source, ".chom-probe/health", b"probe")  # a health probe does not make a source non-empty

    proc = rep.run(max_delete_percent=100)
    assert_refused(proc, "source is empty")
    assert snapshot(rep.replica, rep.bucket) == before
    assert rep.metric("last_run_success") == 0
    assert rep.metric("last_run_refused") == 1


@pytest.mark.parametrize("case", ["plain-directory", "blank", "source-path-elsewhere"])
def test_source_volume_not_mounted_is_refused(replication, tmp_path, case):
    rep = replication
    seed(rep, 4)
    assert_ok(rep.run())
    rep.delete(rep.source, "obj/0000")
    rep.put(rep.source, "obj/new", b"new\n")
    before = snapshot(rep.replica, rep.bucket)

    plain = tmp_path / "not-a-mountpoint"
    (plain / "files").mkdir(parents=True)
    overrides = {
        "plain-directory": dict(volume_path=str(plain), file_tier__source_path=str(plain / "files")),
        "blank": dict(volume_path="", file_tier__source_path=""),
        "source-path-elsewhere": dict(file_tier__source_path=str(plain / "files")),
    }[case]
    proc = rep.run(max_delete_percent=100, **overrides)
    assert_refused(proc, "source ")
    assert snapshot(rep.replica, rep.bucket) == before
    assert rep.metric("last_run_success") == 0
    assert rep.metric("last_run_refused") == 1


# ---------------------------------------------------------------- lock, failures, metrics


def test_a_run_finding_the_lock_held_is_skipped(replication):
    rep = replication
    seed(rep, 3)
    assert_ok(rep.run())
    metrics_before = rep.metrics_file.read_text()
    rep.put(rep.source, "obj/new", b"new\n")
    rep.delete(rep.source, "obj/0000")
    before = snapshot(rep.replica, rep.bucket)

    lock_path = Path(rep.cfg["lock_file"])
    with open(lock_path, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        proc = rep.run()
        assert time.monotonic() - started < 30, "the second run waited for the lock instead of skipping"
    assert_ok(proc)
    assert "holds the lock" in proc.stdout
    assert snapshot(rep.replica, rep.bucket) == before
    assert rep.metrics_file.read_text() == metrics_before

    proc = rep.run()
    assert_ok(proc)
    assert copied(proc) == (1, 1)


def test_a_failed_run_is_recorded_as_failed_not_refused(replication):
    rep = replication
    seed(rep, 2)
    assert_ok(rep.run())
    rep.put(rep.source, "obj/new", b"new\n")
    before = snapshot(rep.replica, rep.bucket)

    proc = rep.run(object_tier__replica_secret_key="wrong-" + secrets.token_hex(8))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "replication failed" in proc.stdout
    assert snapshot(rep.replica, rep.bucket) == before
    assert rep.metric("last_run_success") == 0
    assert rep.metric("last_run_refused") == 0
    assert rep.metric("lag_seconds") > 0


def test_metrics_before_any_success_say_never(replication):
    rep = replication
    seed(rep, 1)
    rep.replica.delete_bucket(Bucket=rep.bucket)  # the replica bucket is missing: the run fails

    proc = rep.run()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rep.metric("lag_seconds") == -1
    assert rep.metric("last_run_success") == 0
    assert "# TYPE chom_storage_replication_lag_seconds gauge" in rep.metrics_file.read_text()



def test_objects_vanishing_or_changing_during_the_run_are_not_a_failure(replication):
    rep = replication
    seed(rep, 6)
    program = load_program()
    cfg = rep.cfg["object_tier"]
    tier = program.ObjectTier(cfg, (cfg["source_access_key"], cfg["source_secret_key"]),
                              (cfg["replica_access_key"], cfg["replica_secret_key"]))
    plan = tier.plan()
    assert plan["deletions"] == 0 and len(plan["buckets"][rep.bucket]["copy"]) == 6
    rep.delete(rep.source, "obj/0002")  # deleted by the site between planning and copying
    rep.put(rep.source, "obj/0004", b"rewritten meanwhile\n")
    result = tier.run(plan)  # before the fix: NoSuchKey, and the whole run failed
    assert result["objects_copied"] == 4
    assert sorted(keys_of(rep.replica, rep.bucket)) == ["obj/0000", "obj/0001", "obj/0003", "obj/0005"]

    # The next run copies the rewritten object; the deleted one never reached the replica.
    proc = rep.run()
    assert_ok(proc)
    assert copied(proc) == (1, 0)
    assert content_view(snapshot(rep.replica, rep.bucket)) == content_view(snapshot(rep.source, rep.bucket))


def test_one_emptied_bucket_is_refused_even_when_other_buckets_are_large(engines, volume, tmp_path):
    rep = Replication(engines, volume, tmp_path, buckets=2)
    big, small = rep.buckets
    for n in range(40):
        rep.put(rep.source, f"obj/{n:04d}", b"big", bucket=big)
    for n in range(2):
        rep.put(rep.source, f"obj/{n:04d}", b"small", bucket=small)
    assert_ok(rep.run())
    before = snapshot(rep.replica, small)
    rep.delete(rep.source, "obj/0000", "obj/0001", bucket=small)  # 2 of 42 in total, but all of one bucket

    proc = rep.run(max_delete_percent=50)
    assert_refused(proc, f"bucket {small}: source is empty")
    assert snapshot(rep.replica, small) == before


# ---------------------------------------------------------------- freshness marker and copy-only runs


def test_a_successful_run_leaves_a_freshness_marker_on_the_replica_only(replication):
    seed(replication, 3)
    before = time.time()
    assert_ok(replication.run())
    marker = json.loads(replication.replica.get_object(Bucket=replication.bucket, Key=MARKER_KEY)["Body"].read())
    assert before - 1 <= marker["last_success_start"] <= marker["last_success_end"] <= time.time() + 1
    assert MARKER_KEY not in keys_of(replication.source, replication.bucket)
    # The marker is neither deleted nor counted by the next run.
    second = replication.run()
    assert_ok(second)
    assert copied(second) == (0, 0)
    assert MARKER_KEY in keys_of(replication.replica, replication.bucket)


def test_a_failed_run_does_not_move_the_marker(replication):
    seed(replication, 2)
    assert_ok(replication.run())
    first = json.loads(replication.replica.get_object(Bucket=replication.bucket, Key=MARKER_KEY)["Body"].read())
    replication.delete(replication.source, *keys_of(replication.source, replication.bucket))
    assert_refused(replication.run(), "source is empty")
    again = json.loads(replication.replica.get_object(Bucket=replication.bucket, Key=MARKER_KEY)["Body"].read())
    assert again == first


def test_copy_only_brings_the_replica_forward_and_deletes_nothing(replication):
    objects = seed(replication, 6)
    assert_ok(replication.run())
    replication.delete(replication.source, "obj/0000", "obj/0001")
    replication.put(replication.source, "obj/new", b"written later")
    # Written on the replica since (an app already writing there): it is newer there and stays.
    replication.put(replication.replica, "obj/0002", b"newer on the replica")
    replication.put(replication.source, "obj/0003", b"changed on the source")
    run = replication.run(object_tier__copy_only=True)
    assert_ok(run)
    assert copied(run) == (1, 0)
    held = set(keys_of(replication.replica, replication.bucket))
    assert {"obj/0000", "obj/0001", "obj/new"} <= held and set(objects) <= held
    read = replication.replica.get_object
    assert read(Bucket=replication.bucket, Key="obj/0002")["Body"].read() == b"newer on the replica"
    assert read(Bucket=replication.bucket, Key="obj/0003")["Body"].read() == objects["obj/0003"]
