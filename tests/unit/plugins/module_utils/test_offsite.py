"""Unit tests of the offsite encryption format: round trips and every way a stored copy can be spoiled."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import pytest

from ansible_collections.chom.storage.plugins.module_utils.backup_items import StoredItem
from ansible_collections.chom.storage.plugins.module_utils.offsite import (
    TAG_BYTES,
    IntegrityError,
    OffsiteError,
    WrongKeyError,
    check_key_id,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    parse_header,
    parse_master_key,
    plan_copy,
    plan_prune,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NAME = "chom-backups/site-a/db/20260101T020000Z/dump.sql.gz"
CHUNK = 64


def encrypt(plain: bytes, chunk_size: int = CHUNK, key: bytes = KEY, pieces: int = 7) -> bytes:
    parts = [plain[i:i + pieces] for i in range(0, len(plain), pieces)]
    return b"".join(encrypt_stream(parts, key, "k1", NAME, chunk_size))


def decrypt(blob: bytes, key: bytes = KEY, pieces: int = 13, name: str | None = NAME) -> bytes:
    parts = [blob[i:i + pieces] for i in range(0, len(blob), pieces)]
    return b"".join(decrypt_stream(parts, key, name))


def records(blob: bytes, chunk_size: int = CHUNK) -> tuple[bytes, list[bytes]]:
    header = parse_header(blob)
    body = blob[len(header.raw):]
    size = chunk_size + TAG_BYTES
    return header.raw, [body[i:i + size] for i in range(0, len(body), size)]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5, 1000])
def test_round_trip_and_exact_overhead(length):
    plain = os.urandom(length)
    blob = encrypt(plain)
    assert decrypt(blob) == plain
    assert len(blob) == ciphertext_size(length, "k1", NAME, CHUNK)
    assert len(blob) - length == len(parse_header(blob).raw) + TAG_BYTES * max(1, -(-length // CHUNK))


def test_empty_object_is_one_authenticated_record():
    blob = encrypt(b"")
    header, recs = records(blob)
    assert recs == [blob[len(header):]] and len(recs[0]) == TAG_BYTES
    assert decrypt(blob) == b""
    with pytest.raises(IntegrityError):
        decrypt(blob[:-1])


def test_whole_blob_in_one_piece_and_byte_by_byte():
    plain = os.urandom(5 * CHUNK + 3)
    blob = encrypt(plain)
    assert b"".join(decrypt_stream([blob], KEY, NAME)) == plain
    assert decrypt(blob, pieces=1) == plain


def test_ciphertext_hides_plaintext_and_differs_each_time():
    plain = b"CREATE TABLE wp_users secret-password-hash " * 40
    first, second = encrypt(plain), encrypt(plain)
    assert b"wp_users" not in first and b"secret" not in first
    assert first != second  # fresh salt and nonce prefix per object


def test_default_chunk_size_round_trip():
    plain = os.urandom((1 << 20) * 2 + 17)
    blob = b"".join(encrypt_stream([plain], KEY, "k1", NAME))
    assert len(blob) == ciphertext_size(len(plain), "k1", NAME)
    assert b"".join(decrypt_stream([blob], KEY, NAME)) == plain


# ---------------------------------------------------------------- spoiled copies


def test_tampered_chunk_fails():
    blob = bytearray(encrypt(os.urandom(4 * CHUNK)))
    header, _ = records(bytes(blob))
    blob[len(header) + CHUNK + TAG_BYTES + 3] ^= 0x01  # one bit of the second record
    with pytest.raises(IntegrityError, match="record 1"):
        decrypt(bytes(blob))


def test_tampered_header_fails():
    blob = bytearray(encrypt(os.urandom(2 * CHUNK)))
    blob[len(b"CHOMOFS") + 5] ^= 0x01  # a bit of the salt
    with pytest.raises(IntegrityError):
        decrypt(bytes(blob))


@pytest.mark.parametrize("cut", ["record boundary", "inside a record", "inside the header", "everything"])
def test_truncated_stream_fails(cut):
    blob = encrypt(os.urandom(3 * CHUNK + 10))
    header, recs = records(blob)
    short = {
        "record boundary": header + b"".join(recs[:2]),
        "inside a record": blob[:-5],
        "inside the header": blob[:len(header) - 3],
        "everything": b"",
    }[cut]
    with pytest.raises(IntegrityError):
        decrypt(short)


def test_truncation_to_a_full_multiple_fails():
    blob = encrypt(os.urandom(4 * CHUNK))  # every record full: dropping the last still ends on a boundary
    header, recs = records(blob)
    with pytest.raises(IntegrityError):
        decrypt(header + b"".join(recs[:3]))


def test_reordered_chunks_fail():
    blob = encrypt(os.urandom(4 * CHUNK + 9))
    header, recs = records(blob)
    swapped = header + recs[1] + recs[0] + b"".join(recs[2:])
    with pytest.raises(IntegrityError, match="record 0"):
        decrypt(swapped)


def test_appended_or_duplicated_record_fails():
    blob = encrypt(os.urandom(2 * CHUNK))
    header, recs = records(blob)
    with pytest.raises(IntegrityError):
        decrypt(blob + recs[-1])


def test_records_from_another_object_fail():
    plain = os.urandom(3 * CHUNK)
    one, two = encrypt(plain), encrypt(plain)
    header_one, recs_one = records(one)
    _, recs_two = records(two)
    with pytest.raises(IntegrityError):
        decrypt(header_one + recs_one[0] + recs_two[1] + recs_one[2])


def test_wrong_key_fails_clearly():
    blob = encrypt(b"hello" * 100)
    with pytest.raises(WrongKeyError, match="another key.*'k1'"):
        decrypt(blob, key=OTHER_KEY)


def test_copy_stored_under_another_name_is_refused():
    blob = encrypt(b"hello" * 100)
    with pytest.raises(IntegrityError, match="holds the item"):
        decrypt(blob, name="chom-backups/site-b/db/20260101T020000Z/dump.sql.gz")


def test_not_an_offsite_object():
    with pytest.raises(OffsiteError, match="magic"):
        decrypt(b"\x1f\x8b\x08 plain gzip data, not ours")


# ---------------------------------------------------------------- keys


def test_master_key_must_be_base64_of_32_bytes():
    good = base64.b64encode(KEY).decode()
    assert parse_master_key(good) == KEY
    assert parse_master_key(good + "\n") == KEY
    for bad, words in [("", "empty"), ("not base64!!", "not valid base64"),
                       (base64.b64encode(b"x" * 16).decode(), "decodes to 16 bytes")]:
        with pytest.raises(OffsiteError, match=words) as caught:
            parse_master_key(bad)
        assert good not in str(caught.value)


def test_key_id_is_checked():
    assert check_key_id("offsite-2026.a_1") == "offsite-2026.a_1"
    for bad in ["", "has space", "x" * 65, "é"]:
        with pytest.raises(OffsiteError):
            check_key_id(bad)


# ---------------------------------------------------------------- what is copied and what is pruned

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TIERS = {"a": "starter", "b": "pro", "c": "enterprise"}


def item(site, kind, days_ago, markers=("valid",)):
    created = NOW - timedelta(days=days_ago)
    return StoredItem("chom-backups", site, kind, created, f"{site}/{kind}/{created:%Y%m%dT%H%M%SZ}/",
                      [{"key": "x", "name": "x", "size": 1, "etag": ""}], set(markers))


def prefixes(pairs):
    return sorted(i.prefix for i, _ in pairs)


def test_prune_by_tier_window_keeps_newest():
    items = [item("a", "db", d) for d in (40, 31, 29, 1)] + [item("b", "db", d) for d in (100, 60)] \
        + [item("c", "db", d) for d in (400, 300)]
    delete, _ = plan_prune(items, TIERS, NOW)
    assert prefixes(delete) == sorted([items[0].prefix, items[1].prefix, items[4].prefix, items[6].prefix])


def test_prune_never_deletes_the_newest_even_when_expired():
    items = [item("a", "db", 200), item("a", "db", 100)]
    delete, keep = plan_prune(items, TIERS, NOW)
    assert prefixes(delete) == [items[0].prefix]
    assert keep == [(items[1], "newest good item of its site and kind")]


def test_prune_leaves_sites_without_tier_alone():
    items = [item("x", "db", 200), item("x", "db", 100)]
    delete, keep = plan_prune(items, TIERS, NOW)
    assert delete == [] and {reason for _, reason in keep} == {"site unknown to the control plane"}


def test_prune_keeps_the_chain_a_kept_incremental_needs():
    old_full, full = item("a", "full", 60), item("a", "full", 40)
    inc1, inc2 = item("a", "incremental", 35), item("a", "incremental", 20)
    newest_full = item("a", "full", 10)
    delete, keep = plan_prune([old_full, full, inc1, inc2, newest_full], TIERS, NOW)
    assert prefixes(delete) == [old_full.prefix]
    assert dict((i.prefix, r) for i, r in keep)[full.prefix] == "a kept item depends on it"


def test_copy_only_good_items_offsite_retention_would_keep():
    unvalidated, invalid = item("a", "db", 1, markers=()), item("a", "db", 2, markers=("invalid",))
    expired, newest = item("a", "db", 45), item("a", "db", 3)
    full_invalid = item("a", "full", 1, markers=("invalid",))
    full_unmarked = item("a", "full", 2, markers=())
    copy, skipped = plan_copy([unvalidated, invalid, expired, newest, full_invalid, full_unmarked], TIERS, NOW)
    assert sorted(i.prefix for i in copy) == sorted([newest.prefix, full_unmarked.prefix])
    reasons = {i.prefix: why for i, why in skipped}
    assert reasons[unvalidated.prefix] == "not validated yet (no valid marker)"
    assert reasons[invalid.prefix] == reasons[full_invalid.prefix] == "marked invalid"
    assert reasons[expired.prefix] == "offsite retention: older than its retention window"


def test_copy_keeps_an_old_newest_item_so_it_is_not_copied_and_pruned_in_turn():
    only = item("a", "db", 100)
    copy, _ = plan_copy([only], TIERS, NOW)
    assert copy == [only]
    assert plan_prune([only], TIERS, NOW)[0] == []
