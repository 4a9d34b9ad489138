"""Unit tests of the database dump check: gzip integrity, size floor and dump structure, read as a stream."""

from __future__ import annotations

import gzip
import json
import os
import random
import time
import zlib
from datetime import UTC, datetime

import pytest

from ansible_collections.chom.storage.plugins.module_utils.backup_items import parse_now
from ansible_collections.chom.storage.plugins.module_utils.dump_check import (
    DumpCheck,
    ItemResult,
    check_dump,
    count_recent,
    write_results_file,
)
from ansible_collections.chom.storage.plugins.module_utils.naming import NamingError


def mysql_dump(rows: int = 300, trailer: bool = True) -> bytes:
    rng = random.Random(7)
    lines = ["-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)", "--", "-- Host: localhost    Database: wp",
             "-- ------------------------------------------------------", "",
             "DROP TABLE IF EXISTS `wp_posts`;",
             "CREATE TABLE `wp_posts` (", "  `ID` bigint unsigned NOT NULL AUTO_INCREMENT,",
             "  `post_title` text NOT NULL,", "  PRIMARY KEY (`ID`)", ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;", "",
             "LOCK TABLES `wp_posts` WRITE;"]
    lines += [f"INSERT INTO `wp_posts` VALUES ({i},'{rng.getrandbits(128):032x}');" for i in range(rows)]
    lines += ["UNLOCK TABLES;", ""]
    if trailer:
        lines += ["-- Dump completed on 2026-01-01  2:00:01", ""]
    return "\n".join(lines).encode()


def postgres_dump(unrestrict: bool = True) -> bytes:
    text = ["--", "-- PostgreSQL database dump", "--", "", "CREATE TABLE public.wp_options (", "    option_id bigint,",
            "    option_value text", ");", ""]
    text += [f"INSERT INTO public.wp_options VALUES ({i}, 'v{i * 7919 % 10007}');" for i in range(400)]
    text += ["", "--", "-- PostgreSQL database dump complete", "--", ""]
    if unrestrict:
        text += ["\\unrestrict abcDEF123", ""]
    return "\n".join(text).encode()


def pieces(blob: bytes, size: int = 100):
    return [blob[i:i + size] for i in range(0, len(blob), size)]


def test_good_mysql_dump_in_small_pieces():
    blob = gzip.compress(mysql_dump())
    assert len(blob) > 1024
    assert check_dump(pieces(blob), len(blob)) is None
    assert check_dump([blob]) is None


def test_good_postgres_dump_with_and_without_unrestrict():
    for unrestrict in (True, False):
        blob = gzip.compress(postgres_dump(unrestrict))
        assert check_dump(pieces(blob, 333), len(blob), min_bytes=100) is None


def test_concatenated_gzip_members_are_one_dump():
    text = mysql_dump()
    middle = len(text) // 2
    blob = gzip.compress(text[:middle]) + gzip.compress(text[middle:])
    assert check_dump(pieces(blob, 50), len(blob)) is None


def test_too_small():
    blob = gzip.compress(mysql_dump(rows=1))
    assert len(blob) < 1024
    assert "below the floor of 1024 B" in check_dump([blob], len(blob))
    assert "below the floor" in check_dump([blob])  # size unknown up front: counted while reading


@pytest.mark.parametrize("cut", [10, 200, -9, -1])
def test_truncated_gzip(cut):
    blob = gzip.compress(mysql_dump())
    reason = check_dump(pieces(blob[:cut]), min_bytes=0)
    assert reason and ("truncated" in reason or "corrupt" in reason), reason


def test_corrupt_gzip_crc():
    blob = bytearray(gzip.compress(mysql_dump()))
    blob[-6] ^= 0xFF  # inside the CRC-32 of the trailer
    assert "corrupt" in check_dump([bytes(blob)], len(blob))


def test_not_gzip_and_empty():
    assert "corrupt" in check_dump([mysql_dump()], min_bytes=0)
    assert check_dump([], min_bytes=0) == "the object is empty"


def test_missing_trailer():
    blob = gzip.compress(mysql_dump(trailer=False))
    assert "does not end with '-- Dump completed'" in check_dump([blob], len(blob))


def test_trailer_in_the_middle_is_not_enough():
    text = mysql_dump() + b"INSERT INTO `wp_posts` VALUES (999999,'x');\n"
    assert "does not end with" in check_dump([gzip.compress(text)], min_bytes=0)


def test_no_create_table():
    text = b"-- MySQL dump\n" + os.urandom(4000).hex().encode() + b"\n-- Dump completed on 2026-01-01\n"
    assert check_dump([gzip.compress(text)], min_bytes=0) == "the dump contains no CREATE TABLE statement"


def test_create_table_split_across_pieces_is_found():
    check = DumpCheck()
    text = b"x" * 1000 + b"CREATE TABLE t (a int);\n-- Dump completed\n"
    blob = gzip.compress(text, compresslevel=0)  # stored blocks: pieces map to plaintext ranges
    for piece in pieces(blob, 7):
        check.feed(piece)
    assert check.finish() is None


def test_gzip_bomb_is_read_in_bounded_steps():
    blob = gzip.compress(b"CREATE TABLE x;\n" + b"\0" * (64 << 20) + b"\n-- Dump completed\n")
    check = DumpCheck(max_ratio=0)
    check.feed(blob)
    assert check.finish() is None
    assert len(check._tail) <= 4096


def zero_bomb(mib: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    return packer.compress(b"CREATE TABLE x;\n") + b"".join(packer.compress(chunk) for _ in range(mib)) + \
        packer.flush()


def test_gzip_bomb_fails_fast_on_its_compression_ratio():
    blob = zero_bomb(512)  # 500 KiB of gzip that decompress to 512 MiB
    start = time.monotonic()
    reason = check_dump(pieces(blob, 1 << 20))
    assert time.monotonic() - start < 2
    assert reason.startswith("suspicious compression ratio"), reason
    assert "after" not in reason and "likely a gzip bomb" in reason


def test_a_real_dump_is_far_below_the_ratio_limit():
    rows = b"".join(b"INSERT INTO wp_options VALUES (%d,'siteurl','https://example.test','yes');\n" % n
                    for n in range(400_000))
    blob = gzip.compress(b"CREATE TABLE wp_options (a int);\n" + rows + b"-- Dump completed\n")
    assert len(rows) > 16 << 20
    assert check_dump(pieces(blob, 1 << 20)) is None


def test_decompressed_size_has_an_absolute_limit():
    text = b"CREATE TABLE x;\n" + random.Random(1).randbytes(3 << 20) + b"\n-- Dump completed\n"
    blob = gzip.compress(text)
    assert check_dump([blob]) is None
    reason = check_dump([blob], max_plain_bytes=2 << 20)
    assert reason.startswith("decompressed size exceeds the limit of 2097152 B"), reason
    assert "does not end with" in check_dump([zero_bomb(64)], max_ratio=0, max_plain_bytes=0)


# ---------------------------------------------------------------- counts and the results file


def result(stamp, status):
    return ItemResult("chom-backups", f"s/db/{stamp}/", "s", stamp, status)


def test_count_recent_uses_the_window_by_stamp():
    now = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    results = [result("20260102T020000Z", "valid"), result("20260101T040000Z", "invalid"),
               result("20260101T030000Z", "valid"),  # exactly 24 h old: outside
               result("20260102T040000Z", "valid"),  # in the future: outside
               result("20260102T010000Z", "error")]
    assert count_recent(results, now, 24) == {"succeeded": 1, "failed": 1}


def test_results_file_written_atomically_and_only_on_change(tmp_path):
    path = tmp_path / "sub" / "backup-results.json"
    assert write_results_file(str(path), {"succeeded": 3, "failed": 1}, check_mode=True)
    assert not path.exists()
    assert write_results_file(str(path), {"succeeded": 3, "failed": 1})
    assert json.loads(path.read_text()) == {"succeeded": 3, "failed": 1}
    assert not write_results_file(str(path), {"succeeded": 3, "failed": 1})
    assert write_results_file(str(path), {"succeeded": 4, "failed": 1})
    assert sorted(p.name for p in path.parent.iterdir()) == ["backup-results.json"]


def test_now_is_the_clock_a_stamp_or_iso_with_a_zone():
    assert parse_now("20260102T030405Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_now("2026-01-02T04:04:05+01:00") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_now(None).tzinfo is not None
    for bad in ("2026-01-02T03:04:05", "yesterday", "20260231T000000Z"):
        with pytest.raises(NamingError):
            parse_now(bad)
