"""chom.storage.offsite_copy and offsite_restore between two real SeaweedFS engines, through the ansible CLI.

One engine plays the storage host (bucket chom-backups), the other the archive target (bucket
chom-offsite) with its own credentials.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random

import pytest

from ansible_collections.chom.storage.plugins.module_utils.offsite import ciphertext_size

SOURCE = "chom-backups"
OFFSITE = "chom-offsite"
PREFIX = "storage-01/"
NOW = "20260121T000000Z"
TIERS = {"alpha": "starter", "beta": "pro"}  # gamma has no tier
MIB = 1 << 20


def body(tag: str, size: int) -> bytes:
    """Recognisable plaintext: a tagged text line repeated, then random bytes up to ``size``."""
    text = (f"CREATE TABLE `wp_{tag}` secret-row-of-{tag};\n" * 64).encode()
    return (text + random.Random(tag).randbytes(max(0, size - len(text))))[:size]


# key -> (plaintext, markers)
ITEMS = {
    "alpha/db/20260101T020000Z/dump.sql.gz": (body("a1", 3000), ["valid"]),
    "alpha/db/20260110T020000Z/dump.sql.gz": (body("a2", 5000), ["valid"]),
    "alpha/db/20260120T020000Z/dump.sql.gz": (body("a3", 7000), ["valid"]),
    "alpha/db/20260120T120000Z/dump.sql.gz": (body("a4", 4000), []),  # not validated yet
    "alpha/db/20260119T020000Z/dump.sql.gz": (body("a5", 100), ["invalid"]),
    "beta/full/20260115T010000Z/files.tar.gz": (body("b1", 12 * MIB + 12345), []),  # multipart
    "beta/full/20260115T010000Z/manifest.json": (b"", []),  # empty object
    "gamma/db/20250601T020000Z/dump.sql.gz": (body("g1", 2048), ["valid"]),
}
COPIED = [k for k in ITEMS if not k.startswith(("alpha/db/20260120T12", "alpha/db/20260119"))]


@pytest.fixture(scope="module")
def engines(seaweedfs_factory):
    storage, archive = seaweedfs_factory(), seaweedfs_factory()
    storage.client().create_bucket(Bucket=SOURCE)
    archive.client().create_bucket(Bucket=OFFSITE)
    for key, (plain, markers) in ITEMS.items():
        storage.client().put_object(Bucket=SOURCE, Key=key, Body=plain)
        for marker in markers:
            storage.client().put_object(Bucket=SOURCE, Key=key.rsplit("/", 1)[0] + f"/.chom/{marker}", Body=b"")
    return storage, archive


class Secret(str):
    """A throwaway key that pytest's failure reports do not show."""

    def __repr__(self) -> str:
        return "'<key>'"


def new_key() -> Secret:
    return Secret(base64.b64encode(os.urandom(32)).decode())


@pytest.fixture(scope="module")
def encryption_key() -> Secret:
    return new_key()


def copy_args(engines, key, **extra) -> dict:
    storage, archive = engines
    args = dict(storage.module_args(), offsite_endpoint_url=archive.endpoint,
                offsite_access_key=archive.admin.access_key, offsite_secret_key=archive.admin.secret_key,
                offsite_bucket=OFFSITE, offsite_prefix=PREFIX, encryption_key=key, encryption_key_id="it-1",
                site_tiers=TIERS, multipart_threshold_mib=5, part_size_mib=5, now=NOW)
    args.update(extra)
    return args


def restore_args(engines, key, name, **extra) -> dict:
    _, archive = engines
    args = dict(offsite_endpoint_url=archive.endpoint, offsite_access_key=archive.admin.access_key,
                offsite_secret_key=archive.admin.secret_key, offsite_bucket=OFFSITE, offsite_prefix=PREFIX,
                name=name, encryption_key=key, encryption_key_id="it-1", multipart_threshold_mib=5, part_size_mib=5)
    args.update(extra)
    return args


def offsite_keys(archive) -> list[str]:
    pages = archive.client().get_paginator("list_objects_v2").paginate(Bucket=OFFSITE)
    return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


def offsite_bytes(archive, key) -> bytes:
    return archive.client().get_object(Bucket=OFFSITE, Key=PREFIX + SOURCE + "/" + key)["Body"].read()


def test_1_check_mode_lists_copies_and_writes_nothing(run_module, engines, encryption_key):
    _, archive = engines
    run = run_module("offsite_copy", copy_args(engines, encryption_key), check=True, diff=True)
    assert not run.failed and run.changed, run.result
    assert sorted(c["key"] for c in run.result["copied"]) == sorted(f"{SOURCE}/{k}" for k in COPIED)
    assert run.result["deleted"] == []
    skipped = {s["item"]: s["reason"] for s in run.result["not_copied"]}
    assert skipped == {f"{SOURCE}/alpha/db/20260120T120000Z/": "not validated yet (no valid marker)",
                       f"{SOURCE}/alpha/db/20260119T020000Z/": "marked invalid"}
    assert offsite_keys(archive) == []
    assert encryption_key not in run.raw


def test_2_copies_are_ciphertext_of_the_right_size(run_module, engines, encryption_key):
    _, archive = engines
    run = run_module("offsite_copy", copy_args(engines, encryption_key), diff=True)
    assert not run.failed and run.changed, run.result
    copied = {c["key"]: c for c in run.result["copied"]}
    assert sorted(copied) == sorted(f"{SOURCE}/{k}" for k in COPIED)
    assert run.result["untiered_sites"] == ["gamma"]
    assert offsite_keys(archive) == sorted(PREFIX + SOURCE + "/" + k for k in COPIED)
    assert copied[f"{SOURCE}/beta/full/20260115T010000Z/files.tar.gz"]["upload"] == "multipart"
    assert copied[f"{SOURCE}/alpha/db/20260101T020000Z/dump.sql.gz"]["upload"] == "put"
    assert encryption_key not in run.raw
    for key in COPIED:
        plain, stored = ITEMS[key][0], offsite_bytes(archive, key)
        name = f"{SOURCE}/{key}"
        assert copied[name]["sha256"] == hashlib.sha256(plain).hexdigest()
        assert stored != plain
        assert len(stored) == ciphertext_size(len(plain), "it-1", name)
        assert len(stored) - len(plain) >= 16 + len(name)
        assert b"CREATE TABLE" not in stored and b"secret-row-of" not in stored
        for start in range(0, max(1, len(plain) - 32), max(1, len(plain) // 7)):
            if plain[start:start + 32]:
                assert plain[start:start + 32] not in stored
        head = archive.client().head_object(Bucket=OFFSITE, Key=PREFIX + name)
        assert head["Metadata"]["chom-sha256"] == hashlib.sha256(plain).hexdigest()
        assert head["Metadata"]["chom-size"] == str(len(plain))
        assert head["Metadata"]["chom-key-id"] == "it-1"


def test_3_rerun_changes_nothing(run_module, engines, encryption_key):
    _, archive = engines
    before = {key: archive.client().head_object(Bucket=OFFSITE, Key=key)["ETag"] for key in offsite_keys(archive)}
    run = run_module("offsite_copy", copy_args(engines, encryption_key))
    assert not run.failed and not run.changed, run.result
    assert run.result["copied"] == [] and run.result["present"] == len(COPIED)
    after = {key: archive.client().head_object(Bucket=OFFSITE, Key=key)["ETag"] for key in offsite_keys(archive)}
    assert after == before


def test_3b_a_truncated_copy_is_uploaded_again_and_reported(run_module, engines, encryption_key, tmp_path):
    _, archive = engines
    name = f"{SOURCE}/alpha/db/20260120T020000Z/dump.sql.gz"
    key = PREFIX + name
    client = archive.client()
    stored = client.get_object(Bucket=OFFSITE, Key=key)
    blob, meta = stored["Body"].read(), stored["Metadata"]
    client.put_object(Bucket=OFFSITE, Key=key, Body=blob[: len(blob) // 2], Metadata=meta)  # cut, metadata kept

    check = run_module("offsite_copy", copy_args(engines, encryption_key), check=True)
    assert not check.failed and [c["key"] for c in check.result["copied"]] == [name], check.result
    assert "truncated" in check.result["copied"][0]["replaced"]

    run = run_module("offsite_copy", copy_args(engines, encryption_key))
    assert not run.failed and run.changed, run.msg
    assert [c["key"] for c in run.result["copied"]] == [name]
    assert f"{len(blob) // 2} B long, {len(blob)} B expected" in run.result["copied"][0]["replaced"]
    assert any("wrong length" in w for w in run.result.get("warnings", []))
    assert client.head_object(Bucket=OFFSITE, Key=key)["ContentLength"] == len(blob)
    restore = run_module("offsite_restore", restore_args(engines, encryption_key, name,
                                                         dest=str(tmp_path / "dump.sql.gz")))
    assert not restore.failed, restore.msg
    again = run_module("offsite_copy", copy_args(engines, encryption_key))
    assert not again.failed and not again.changed and again.result["copied"] == []


def test_4_restore_to_a_file_and_to_a_bucket_is_byte_identical(run_module, engines, encryption_key, tmp_path):
    storage, _ = engines
    dest = tmp_path / "dump.sql.gz"
    name = f"{SOURCE}/alpha/db/20260110T020000Z/dump.sql.gz"
    run = run_module("offsite_restore", restore_args(engines, encryption_key, name, dest=str(dest)))
    assert not run.failed and run.changed, run.result
    assert dest.read_bytes() == ITEMS["alpha/db/20260110T020000Z/dump.sql.gz"][0]
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    again = run_module("offsite_restore", restore_args(engines, encryption_key, name, dest=str(dest)))
    assert not again.failed and not again.changed, again.result

    big = "beta/full/20260115T010000Z/files.tar.gz"
    to_bucket = dict(dest_endpoint_url=storage.endpoint, dest_access_key=storage.admin.access_key,
                     dest_secret_key=storage.admin.secret_key, dest_bucket=SOURCE, dest_key=f"restored/{big}")
    run = run_module("offsite_restore", restore_args(engines, encryption_key, f"{SOURCE}/{big}", **to_bucket))
    assert not run.failed and run.changed, run.result
    restored = storage.client().get_object(Bucket=SOURCE, Key=f"restored/{big}")["Body"].read()
    assert restored == ITEMS[big][0]
    again = run_module("offsite_restore", restore_args(engines, encryption_key, f"{SOURCE}/{big}", **to_bucket))
    assert not again.failed and not again.changed, again.result

    empty = f"{SOURCE}/beta/full/20260115T010000Z/manifest.json"
    run = run_module("offsite_restore", restore_args(engines, encryption_key, empty, dest=str(tmp_path / "m.json")))
    assert not run.failed and (tmp_path / "m.json").read_bytes() == b""


def test_5_wrong_key_and_tampered_copy_are_refused(run_module, engines, encryption_key, tmp_path):
    _, archive = engines
    name = f"{SOURCE}/alpha/db/20260120T020000Z/dump.sql.gz"
    dest = tmp_path / "x.sql.gz"
    other_key = new_key()
    run = run_module("offsite_restore", restore_args(engines, other_key, name, dest=str(dest)))
    assert run.failed and "another key" in run.msg and not dest.exists(), run.result
    assert other_key not in run.raw

    # Flip one byte of the stored copy, keeping its metadata: authentication fails, nothing is written.
    client = archive.client()
    head = client.head_object(Bucket=OFFSITE, Key=PREFIX + name)
    stored = bytearray(client.get_object(Bucket=OFFSITE, Key=PREFIX + name)["Body"].read())
    stored[len(stored) // 2] ^= 0x40
    client.put_object(Bucket=OFFSITE, Key=PREFIX + name, Body=bytes(stored), Metadata=head["Metadata"])
    run = run_module("offsite_restore", restore_args(engines, encryption_key, name, dest=str(dest)))
    assert run.failed and "fails authentication" in run.msg and not dest.exists(), run.result
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    # The next copy run sees the same source ETag recorded and leaves the copy; restore the original bytes.
    stored[len(stored) // 2] ^= 0x40
    client.put_object(Bucket=OFFSITE, Key=PREFIX + name, Body=bytes(stored), Metadata=head["Metadata"])


def test_6_bad_key_is_refused_without_echoing_it(run_module, engines):
    short = base64.b64encode(b"k" * 16).decode()
    run = run_module("offsite_copy", copy_args(engines, short))
    assert run.failed and "decodes to 16 bytes" in run.msg and short not in run.raw
    run = run_module("offsite_copy", copy_args(engines, "not base64 at all!"))
    assert run.failed and "not valid base64" in run.msg
    run = run_module("offsite_copy", copy_args(engines, new_key(),
                                               site_tiers={"alpha": "gold"}))
    assert run.failed and "unknown tiers: alpha=gold" in run.msg


def test_7_offsite_retention_deletes_only_expired_copies_never_the_newest(run_module, engines, encryption_key):
    _, archive = engines
    # 2026-02-15: alpha (starter, 30 days) loses its copies of 01-01 and 01-10; 01-20 is within the window.
    later = copy_args(engines, encryption_key, now="20260215T000000Z")
    dry = run_module("offsite_copy", later, check=True)
    assert not dry.failed and dry.changed, dry.result
    expected = [f"{SOURCE}/alpha/db/20260101T020000Z/", f"{SOURCE}/alpha/db/20260110T020000Z/"]
    assert [d["item"] for d in dry.result["deleted"]] == expected
    assert all(d["reason"] == "older than its retention window" for d in dry.result["deleted"])
    assert dry.result["copied"] == []  # expired source items are not copied again
    assert len(offsite_keys(archive)) == len(COPIED)

    run = run_module("offsite_copy", later)
    assert not run.failed and run.changed, run.result
    assert [d["item"] for d in run.result["deleted"]] == expected
    remaining = offsite_keys(archive)
    assert remaining == sorted(PREFIX + SOURCE + "/" + k for k in COPIED
                               if not k.startswith(("alpha/db/20260101", "alpha/db/20260110")))

    # Much later: alpha's last copy is expired too but is the newest of its site and kind; beta (pro,
    # 90 days) is within its window; gamma has no tier. Nothing goes.
    much_later = run_module("offsite_copy", copy_args(engines, encryption_key, now="20260401T000000Z"))
    assert not much_later.failed and not much_later.changed, much_later.result
    assert offsite_keys(archive) == remaining


def test_8_storage_class_is_passed_to_the_target(run_module, engines, encryption_key):
    storage, archive = engines
    key = "delta/db/20260120T020000Z/dump.sql.gz"
    storage.client().put_object(Bucket=SOURCE, Key=key, Body=body("d1", 1500))
    storage.client().put_object(Bucket=SOURCE, Key="delta/db/20260120T020000Z/.chom/valid", Body=b"")
    run = run_module("offsite_copy", copy_args(engines, encryption_key, sites=["delta"], storage_class="GLACIER",
                                               site_tiers={"delta": "enterprise"}))
    assert not run.failed and [c["key"] for c in run.result["copied"]] == [f"{SOURCE}/{key}"], run.result
    head = archive.client().head_object(Bucket=OFFSITE, Key=f"{PREFIX}{SOURCE}/{key}")
    assert head["StorageClass"] == "GLACIER"
