# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Validation of database dumps (``<site>/db/<stamp>/*.sql.gz``) and their markers.

A dump is valid when:

- its compressed size is at least a floor (default 1 KiB: the smallest real WordPress dump,
  gzip-compressed, is several KiB; an empty or aborted dump is a few hundred bytes);
- it is gzip data that decompresses completely: every member ends with its trailer and its
  CRC-32 and length check out (a truncated upload fails here);
- the SQL contains at least one ``CREATE TABLE``;
- it ends like a finished dump: the last line of a mysqldump / mariadb-dump is
  ``-- Dump completed ...``; a PostgreSQL plain dump ends with
  ``-- PostgreSQL database dump complete`` (followed only by comment, blank or ``\\unrestrict``
  lines).

Objects are read as a stream; only a bounded window of decompressed text is kept. Decompression
is bounded too, so a gzip bomb fails quickly instead of running for hours: once more than
``RATIO_GRACE`` (16 MiB) is decompressed, the output may not exceed ``max_ratio`` (default 1000)
times the compressed bytes consumed (SQL compresses about 5-20 to 1; deflate tops out near 1030 to 1
on a run of one byte), and never ``max_plain_bytes`` (default 64 GiB) in all.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import timedelta

from ansible_collections.chom.storage.plugins.module_utils.naming import marker_key, parse_stamp

DEFAULT_MIN_BYTES = 1024
DUMP_SUFFIX = ".sql.gz"
READ_CHUNK = 1 << 20
INFLATE_LIMIT = 1 << 20  # most decompressed bytes produced per step (bounds memory on gzip bombs)
TAIL_BYTES = 4096
CREATE_TABLE = b"CREATE TABLE"
MYSQL_TRAILER = "-- Dump completed"
POSTGRES_TRAILER = "-- PostgreSQL database dump complete"
GZIP_WBITS = 16 + zlib.MAX_WBITS
DEFAULT_MAX_RATIO = 1000
RATIO_GRACE = 16 << 20
DEFAULT_MAX_PLAIN_BYTES = 64 << 30


class DumpCheck:
    """Feed a compressed dump piece by piece, then ask :meth:`finish` for the reason it is invalid."""

    def __init__(self, max_ratio: int = DEFAULT_MAX_RATIO, max_plain_bytes: int = DEFAULT_MAX_PLAIN_BYTES):
        self._inflater = zlib.decompressobj(GZIP_WBITS)
        self._member_open = False  # bytes of a gzip member were fed and its end was not seen yet
        self._members = 0
        self._compressed = 0
        self._consumed = 0  # compressed bytes the inflater has taken in
        self._plain = 0
        self._max_ratio = max_ratio  # 0: no ratio limit
        self._max_plain = max_plain_bytes  # 0: no size limit
        self._has_create = False
        self._tail = b""
        self.error = None

    @property
    def compressed_bytes(self) -> int:
        return self._compressed

    def feed(self, data: bytes) -> None:
        if self.error or not data:
            return
        self._compressed += len(data)
        try:
            self._inflate(data)
        except zlib.error as exc:
            self.error = f"gzip data is corrupt after {self._plain} decompressed bytes: {exc}"

    def _inflate(self, data: bytes) -> None:
        while data and not self.error:
            self._member_open = True
            out = self._inflater.decompress(data, INFLATE_LIMIT)
            self._text(out)
            if self._inflater.eof:
                self._members += 1
                self._member_open = False
                rest = self._inflater.unused_data
                self._inflater = zlib.decompressobj(GZIP_WBITS)
            else:
                rest = self._inflater.unconsumed_tail
            self._consumed += len(data) - len(rest)
            data = rest
            self._check_limits()

    def _check_limits(self) -> None:
        if self._max_plain and self._plain > self._max_plain:
            self.error = (f"decompressed size exceeds the limit of {self._max_plain} B "
                          f"(after {self._consumed} compressed bytes)")
        elif self._max_ratio and self._plain > RATIO_GRACE and self._plain > self._max_ratio * self._consumed:
            self.error = (f"suspicious compression ratio: {self._consumed} compressed bytes decompress to more "
                          f"than {self._plain} B (over {self._max_ratio}:1), likely a gzip bomb")

    def _text(self, out: bytes) -> None:
        if not out:
            return
        self._plain += len(out)
        window = self._tail[-(len(CREATE_TABLE) - 1):] + out
        if not self._has_create and CREATE_TABLE in window:
            self._has_create = True
        self._tail = (self._tail + out)[-TAIL_BYTES:]

    def finish(self) -> str | None:
        """None for a valid dump, else the reason it is not."""
        if self.error:
            return self.error
        if self._compressed == 0:
            return "the object is empty"
        if self._member_open:
            return (f"gzip stream is truncated: it ends inside a gzip member after {self._plain} "
                    "decompressed bytes")
        if self._members == 0:
            return "not gzip data"
        if not self._has_create:
            return "the dump contains no CREATE TABLE statement"
        return trailer_problem(self._tail)


def trailer_problem(tail: bytes) -> str | None:
    lines = [line.strip() for line in tail.decode("latin-1").splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[-1].startswith(MYSQL_TRAILER):
        return None
    if POSTGRES_TRAILER in lines:
        after = lines[lines.index(POSTGRES_TRAILER) + 1:]
        if all(line == "--" or line.startswith("\\unrestrict ") for line in after):
            return None
    last = lines[-1][:80] if lines else ""
    return (f"the dump does not end with '{MYSQL_TRAILER}' (mysqldump, mariadb-dump) or "
            f"'{POSTGRES_TRAILER}' (pg_dump); its last line is {last!r}")


def check_dump(chunks, size: int | None = None, min_bytes: int = DEFAULT_MIN_BYTES,
               max_ratio: int = DEFAULT_MAX_RATIO, max_plain_bytes: int = DEFAULT_MAX_PLAIN_BYTES) -> str | None:
    """None for a valid dump read from ``chunks`` (an iterable of bytes), else the reason."""
    if size is not None and size < min_bytes:
        return f"compressed size {size} B is below the floor of {min_bytes} B"
    check = DumpCheck(max_ratio, max_plain_bytes)
    for chunk in chunks:
        check.feed(chunk)
        if check.error:
            break
    reason = check.finish()
    if reason is None and size is None and check.compressed_bytes < min_bytes:
        return f"compressed size {check.compressed_bytes} B is below the floor of {min_bytes} B"
    return reason


# ------------------------------------------------------------------------------------ items


@dataclass
class ItemResult:
    bucket: str
    item: str
    site: str
    stamp: str
    status: str  # valid, invalid, error
    marker: str | None = None  # marker key written (or that would be)
    reason: str | None = None
    already_marked: bool = False
    dumps: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(bucket=self.bucket, item=self.item, site=self.site, stamp=self.stamp, status=self.status,
                    marker=self.marker, reason=self.reason, already_marked=self.already_marked, dumps=self.dumps)


def check_item(client, item, min_bytes: int, max_ratio: int = DEFAULT_MAX_RATIO,
               max_plain_bytes: int = DEFAULT_MAX_PLAIN_BYTES) -> str | None:
    """None when every dump of the item is valid, else the first reason (prefixed by the object name)."""
    dumps = [obj for obj in item.objects if obj["name"].endswith(DUMP_SUFFIX)]
    if not dumps:
        return f"the item holds no *{DUMP_SUFFIX} object"
    for obj in dumps:
        if obj["size"] < min_bytes:
            return f"{obj['name']}: compressed size {obj['size']} B is below the floor of {min_bytes} B"
        body = client.get_object(Bucket=item.bucket, Key=obj["key"])["Body"]
        try:
            reason = check_dump(body.iter_chunks(READ_CHUNK), obj["size"], min_bytes, max_ratio, max_plain_bytes)
        finally:
            body.close()
        if reason:
            return f"{obj['name']}: {reason}"
    return None


def validate_items(client, items, min_bytes: int = DEFAULT_MIN_BYTES, check_mode: bool = False,
                   max_ratio: int = DEFAULT_MAX_RATIO,
                   max_plain_bytes: int = DEFAULT_MAX_PLAIN_BYTES) -> list[ItemResult]:
    """Check each unmarked db item and write its ``valid`` or ``invalid`` marker (not in check mode).

    Items that already carry a ``valid`` or ``invalid`` marker are reported from it and not read.
    An S3 error while reading an item is reported as status ``error`` and no marker is written.
    """
    results = []
    for item in items:
        dumps = [obj["name"] for obj in item.objects if obj["name"].endswith(DUMP_SUFFIX)]
        result = ItemResult(item.bucket, item.prefix, item.site, item.stamp, "", dumps=dumps)
        existing = [m for m in ("invalid", "valid") if m in item.markers]
        if existing:
            result.status, result.already_marked = existing[0], True
            result.marker = marker_key(item.prefix, existing[0])
            results.append(result)
            continue
        try:
            reason = check_item(client, item, min_bytes, max_ratio, max_plain_bytes)
        except Exception as exc:  # noqa: BLE001 - an unreadable item is reported, not marked
            result.status, result.reason = "error", f"cannot read the item: {exc}"
            results.append(result)
            continue
        result.status = "invalid" if reason else "valid"
        result.reason = reason
        result.marker = marker_key(item.prefix, result.status)
        if not check_mode:
            client.put_object(Bucket=item.bucket, Key=result.marker, Body=(reason or "").encode(),
                              ContentType="text/plain; charset=utf-8")
        results.append(result)
    return results


def count_recent(results, now, window_hours: float) -> dict:
    """Succeeded (valid) and failed (invalid) items whose stamp lies in ``(now - window, now]``."""
    start = now - timedelta(hours=window_hours)
    counts = {"succeeded": 0, "failed": 0}
    for result in results:
        created = parse_stamp(result.stamp)
        if not start < created <= now:
            continue
        if result.status == "valid":
            counts["succeeded"] += 1
        elif result.status == "invalid":
            counts["failed"] += 1
    return counts


def write_results_file(path: str, counts: dict, check_mode: bool = False) -> bool:
    """Write ``counts`` as JSON to ``path`` atomically; True when the content changed."""
    content = json.dumps({"succeeded": counts["succeeded"], "failed": counts["failed"]}, sort_keys=True) + "\n"
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == content:
                return False
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".backup-results.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return True
