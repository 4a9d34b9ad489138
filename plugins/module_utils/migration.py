# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Checksum-verified migration of one site's objects between two storage hosts.

The engine, in the order it runs:

1. **Claim.** One open ``storage_migrations`` row per site (a unique index guarantees it) and a
   session advisory lock per site, so two processes never migrate the same site at once. A
   killed run leaves its row ``in_progress``; the next run with the same site, source and
   destination resumes it.
2. **Snapshot.** The source's listing of ``<site>/`` in every bucket (key, size, ETag) is
   recorded as the migration's manifest before anything is copied; rollback and cleanup work
   from it.
3. **Copy.** Every object is streamed from the source to the destination. Objects up to the
   multipart threshold are read into memory (bounded by the threshold) and sent with their
   SHA-256 in ``x-amz-checksum-sha256``; larger ones go part by part, each part with its own
   SHA-256, so the whole object is never in memory. The engine rejects any upload whose bytes do
   not match the checksum sent with them. The SHA-256 of the whole content is computed from the
   bytes read from the source and stored in the manifest, with the object's source ETag. A
   budget of bytes in flight bounds the memory of the whole run, whatever the object sizes.
4. **Delta.** The source is listed again; objects added or changed since they were copied are
   copied again, objects deleted from the source are deleted from the destination (only keys
   this migration copied there). Rounds repeat until a listing shows no change.
5. **Verify.** Every object on the destination is checked against the manifest: its size, and
   its SHA-256 checksum header (the full-object SHA-256 for single uploads, the composite of the
   part checksums for multipart ones), both computed by the engine from the bytes it stored. An
   object without such a header is read back and hashed. Any mismatch fails the migration
   before the switch.
6. **Switch.** One transaction moves the site to the destination only if it is still on the
   source, clears the dual-write and backup-pause flags, and marks the row ``completed``.

Nothing here deletes from the source; that is :func:`cleanup_source`, which re-lists and
re-verifies first, and only once the retention period after the switch has passed.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ansible_collections.chom.storage.plugins.module_utils.naming import site_prefix

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # pragma: no cover - reported by the module
    BotoCoreError = ClientError = Exception

STRATEGIES = ("maintenance", "live")
DEFAULT_BUCKETS = ("chom-backups", "chom-media", "chom-archives")
MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10000
# Headers that describe the content and travel with it.
CONTENT_HEADERS = (("ContentType", "ContentType"), ("ContentEncoding", "ContentEncoding"),
                   ("ContentDisposition", "ContentDisposition"), ("CacheControl", "CacheControl"),
                   ("ContentLanguage", "ContentLanguage"))
SHA256_METADATA = "chom-sha256"


class MigrationError(Exception):
    """The migration cannot go on; the message is the failure reason recorded on its row."""


class MigrationRefused(MigrationError):
    """Refused before anything was recorded or copied (bad input, wrong host, busy site)."""


class SiteMoved(MigrationError):
    """The site left the expected source host while it was being migrated."""


@dataclass
class Settings:
    buckets: tuple = DEFAULT_BUCKETS
    strategy: str = "maintenance"
    multipart_threshold: int = 16 * MiB
    part_size: int = 8 * MiB
    concurrency: int = 8
    part_concurrency: int = 4
    memory_budget: int = 64 * MiB
    retain_hours: float = 24.0
    max_delta_rounds: int = 5
    verify_content: bool = False
    progress_interval: float = 1.0
    batch_size: int = 200

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise MigrationRefused(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not self.buckets:
            raise MigrationRefused("at least one bucket is needed")
        if self.part_size < MIN_PART_SIZE:
            raise MigrationRefused(f"part_size must be at least {MIN_PART_SIZE} bytes (S3 minimum part size)")
        if self.multipart_threshold < self.part_size:
            raise MigrationRefused("multipart_threshold must be at least part_size")
        if self.concurrency < 1 or self.concurrency > 64:
            raise MigrationRefused("concurrency must be between 1 and 64")
        if self.memory_budget < max(self.multipart_threshold, self.part_size):
            raise MigrationRefused("memory_budget must hold at least one object below the multipart threshold")
        if self.retain_hours < 0:
            raise MigrationRefused("retain_hours cannot be negative")
        if self.max_delta_rounds < 1:
            raise MigrationRefused("max_delta_rounds must be at least 1")


@dataclass
class Entry:
    """One object of the manifest."""

    bucket: str
    key: str
    size: int
    source_etag: str
    in_snapshot: bool
    sha256: str | None = None
    dest_checksum: str | None = None  # the engine's SHA-256 checksum of what it stored, as it returned it
    verified: bool = False
    dest_etag: str | None = None  # the destination's ETag right after the upload: identity, not checksum


@dataclass
class Progress:
    objects_total: int = 0
    objects_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    copied_objects: int = 0
    copied_bytes: int = 0
    skipped_objects: int = 0
    verified_by_reading: int = 0
    late_copied: int = 0
    late_error: str | None = None
    deleted_on_dest: list = field(default_factory=list)
    kept_on_dest: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# --------------------------------------------------------------------------------------------
# Object level
# --------------------------------------------------------------------------------------------


def list_prefix(client, bucket: str, prefix: str):
    """Every object under ``prefix``, all pages: (key, size, etag)."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
        for item in page.get("Contents", ()):
            yield item["Key"], int(item["Size"]), item["ETag"].strip('"')


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_checksum(part_digests: list[bytes]) -> str:
    """The S3 composite SHA-256 of a multipart upload: SHA-256 of the part digests, ``-<parts>``."""
    return f"{b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


def release_large_buffers_promptly() -> None:
    """Ask glibc to give every buffer of 1 MiB or more back to the system as soon as it is freed.

    By default glibc raises its mmap threshold as large blocks are freed, after which object-sized
    buffers are carved from per-thread heaps that are rarely returned: the process keeps the peak of
    every thread's buffers. With a fixed threshold the memory of a run stays what the byte budget
    allows. Without glibc (or ctypes) nothing is changed.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MiB)  # M_MMAP_THRESHOLD; fixing it also turns off the dynamic adjustment
    except (OSError, AttributeError):
        pass


class ByteBudget:
    """Counts bytes held in memory by all workers; a caller waits until its share fits."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()

    def acquire(self, amount: int) -> int:
        amount = min(amount, self.limit)
        with self.cond:
            while self.used + amount > self.limit:
                self.cond.wait()
            self.used += amount
        return amount

    def release(self, amount: int) -> None:
        with self.cond:
            self.used -= amount
            self.cond.notify_all()


def content_args(response: dict) -> dict:
    args = {dest: response[src] for src, dest in CONTENT_HEADERS if response.get(src)}
    metadata = dict(response.get("Metadata") or {})
    metadata.pop(SHA256_METADATA, None)
    if metadata:
        args["Metadata"] = metadata
    return args


@dataclass
class Copied:
    sha256: str  # hex SHA-256 of the bytes read from the source
    size: int
    source_etag: str  # ETag of the source object that was read
    dest_etag: str
    dest_checksum: str | None  # the engine's checksum of what it stored, when it matches what was sent


def copy_object(src, dst, bucket: str, key: str, settings: Settings, budget: ByteBudget) -> Copied:
    """Stream one object from ``src`` to ``dst`` with SHA-256 checksums the engine verifies."""
    response = src.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    size = int(response["ContentLength"])
    etag = response["ETag"].strip('"')
    extra = content_args(response)
    try:
        if size > settings.multipart_threshold:
            sha, expected, result = copy_multipart(body, dst, bucket, key, size, extra, settings, budget)
        else:
            held = budget.acquire(max(size, 1))
            data = b""
            try:
                data = body.read()
                if len(data) != size:
                    raise MigrationError(f"{bucket}/{key}: read {len(data)} bytes, expected {size}")
                digest = hashlib.sha256(data).digest()
                extra.setdefault("Metadata", {})[SHA256_METADATA] = digest.hex()
                sha, expected = digest.hex(), b64(digest)
                result = dst.put_object(Bucket=bucket, Key=key, Body=data, ChecksumSHA256=expected, **extra)
            finally:
                del data
                budget.release(held)
    finally:
        body.close()
    returned = result.get("ChecksumSHA256")
    return Copied(sha, size, etag, result["ETag"].strip('"'), returned if returned == expected else None)


def copy_multipart(body, dst, bucket, key, size, extra, settings: Settings, budget: ByteBudget):
    """Part by part: each part is read, hashed and handed to a small pool of uploaders; the
    budget bounds the parts in memory. Returns (sha256 hex, expected composite, complete response)."""
    part_size = max(settings.part_size, -(-size // MAX_PARTS))
    whole = hashlib.sha256()
    upload_id = dst.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **extra)["UploadId"]
    digests: list[bytes] = []
    futures = []
    holds = {}

    def send(number: int, data: bytes, digest: bytes, held: int) -> dict:
        try:
            result = dst.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                                     ChecksumSHA256=b64(digest))
            return {"PartNumber": number, "ETag": result["ETag"], "ChecksumSHA256": b64(digest)}
        finally:
            budget.release(held)

    uploaders = ThreadPoolExecutor(max_workers=settings.part_concurrency, thread_name_prefix="part")
    try:
        read = 0
        while read < size:
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                raise failed[0].exception()
            held = budget.acquire(part_size)
            data = body.read(min(part_size, size - read))
            if not data:
                budget.release(held)
                raise MigrationError(f"{bucket}/{key}: source ended after {read} of {size} bytes")
            read += len(data)
            whole.update(data)
            digests.append(hashlib.sha256(data).digest())
            futures.append(uploaders.submit(send, len(digests), data, digests[-1], held))
            holds[futures[-1]] = held
            del data
        parts = [future.result() for future in futures]
        result = dst.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
    except BaseException:
        for future in futures:
            if future.cancel():  # never ran: its bytes go back to the budget here
                budget.release(holds[future])
        uploaders.shutdown(wait=True)
        try:
            dst.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            pass
        raise
    finally:
        uploaders.shutdown(wait=True)
    return whole.hexdigest(), composite_checksum(digests), result


def content_sha256(client, bucket: str, key: str, chunk: int = MiB) -> tuple[str, int]:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    try:
        for block in iter(lambda: body.read(chunk), b""):
            digest.update(block)
            size += len(block)
    finally:
        body.close()
    return digest.hexdigest(), size


def verify_object(client, entry: Entry, read_content: bool = False) -> str | None:
    """None when the destination holds exactly the manifest's content, else why not."""
    where = f"{entry.bucket}/{entry.key}"
    try:
        head = client.head_object(Bucket=entry.bucket, Key=entry.key, ChecksumMode="ENABLED")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return f"{where}: missing on the destination"
        raise
    if int(head["ContentLength"]) != entry.size:
        return f"{where}: {head['ContentLength']} bytes on the destination, {entry.size} on the source"
    header = head.get("ChecksumSHA256")
    if header and not read_content:
        if header in (entry.dest_checksum, b64(bytes.fromhex(entry.sha256))):
            return None
        # A composite (multipart) checksum can only be compared with the one computed while copying;
        # an entry recorded by an earlier run has the content SHA-256 only, so read the content.
        if not (entry.dest_checksum is None and "-" in header):
            return f"{where}: SHA-256 checksum differs on the destination"
    sha, size = content_sha256(client, entry.bucket, entry.key)
    if sha != entry.sha256 or size != entry.size:
        return f"{where}: content SHA-256 differs on the destination"
    return None


# --------------------------------------------------------------------------------------------
# Control plane
# --------------------------------------------------------------------------------------------

MIGRATION_COLUMNS = ("id", "site_id", "source", "dest", "status", "strategy", "phase", "objects_total",
                     "objects_done", "data_size_bytes", "bytes_done", "failure_reason", "started_at",
                     "completed_at", "source_retained_until", "source_deleted_at", "rolled_back_at")
MIGRATION_SELECT = (
    "SELECT m.id::text, m.site_id, s.hostname, d.hostname, m.status, m.strategy, m.phase, m.objects_total,"
    " m.objects_done, m.data_size_bytes, m.bytes_done, m.failure_reason, m.started_at, m.completed_at,"
    " m.source_retained_until, m.source_deleted_at, m.rolled_back_at"
    " FROM storage_migrations m JOIN storage_hosts s ON s.id = m.source_host_id"
    " JOIN storage_hosts d ON d.id = m.dest_host_id"
)


def as_record(row) -> dict:
    record = dict(zip(MIGRATION_COLUMNS, row, strict=True))
    for key in ("started_at", "completed_at", "source_retained_until", "source_deleted_at", "rolled_back_at"):
        if record[key] is not None:
            record[key] = record[key].isoformat()
    return record


def get_migration(conn, migration_id: str) -> dict | None:
    with conn.cursor() as cur:
        cur.execute(MIGRATION_SELECT + " WHERE m.id = %s", (migration_id,))
        row = cur.fetchone()
    return as_record(row) if row else None


def open_migration(conn, site_id: str) -> dict | None:
    with conn.cursor() as cur:
        cur.execute(MIGRATION_SELECT + " WHERE m.site_id = %s AND m.status IN ('pending', 'in_progress')",
                    (site_id,))
        row = cur.fetchone()
    return as_record(row) if row else None


def latest_migration(conn, site_id: str, status: str = "completed") -> dict | None:
    with conn.cursor() as cur:
        cur.execute(MIGRATION_SELECT + " WHERE m.site_id = %s AND m.status = %s"
                    " ORDER BY m.created_at DESC LIMIT 1", (site_id, status))
        row = cur.fetchone()
    return as_record(row) if row else None


def site_state(conn, site_id: str) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT h.hostname, s.backups_paused, d.hostname FROM sites s"
                    " LEFT JOIN storage_hosts h ON h.id = s.storage_host_id"
                    " LEFT JOIN storage_hosts d ON d.id = s.dual_write_host_id WHERE s.id = %s", (site_id,))
        row = cur.fetchone()
    if row is None:
        raise MigrationRefused(f"site {site_id} is not in the sites table")
    return {"host": row[0], "backups_paused": row[1], "dual_write_host": row[2]}


def host_row(conn, hostname: str) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT id::text, role, capacity_state FROM storage_hosts WHERE hostname = %s", (hostname,))
        row = cur.fetchone()
    if row is None:
        raise MigrationRefused(f"storage host {hostname} is not registered in the control plane")
    return {"id": row[0], "role": row[1], "capacity_state": row[2]}


def site_lock_key(site_id: str) -> str:
    return f"chom-storage migration:{site_id}"


def try_lock_site(conn, site_id: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (site_lock_key(site_id),))
        return bool(cur.fetchone()[0])


def unlock_site(conn, site_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (site_lock_key(site_id),))


class Store:
    """The migration's rows: status, progress, manifest, site flags."""

    def __init__(self, conn, migration_id: str):
        self.conn = conn
        self.id = migration_id

    def set(self, **columns) -> None:
        assignments = ", ".join(f"{name} = %s" for name in columns)
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE storage_migrations SET {assignments}, updated_at = now() WHERE id = %s",
                        (*columns.values(), self.id))

    def load_manifest(self) -> dict[tuple[str, str], Entry]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT bucket, key, size_bytes, source_etag, in_snapshot, sha256, dest_checksum,"
                        " verified_at IS NOT NULL, dest_etag FROM storage_migration_objects WHERE migration_id = %s",
                        (self.id,))
            return {(row[0], row[1]): Entry(*row) for row in cur.fetchall()}

    def record_snapshot(self, entries: list[Entry]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO storage_migration_objects (migration_id, bucket, key, size_bytes, source_etag,"
                " in_snapshot) VALUES (%s, %s, %s, %s, %s, true) ON CONFLICT DO NOTHING",
                [(self.id, e.bucket, e.key, e.size, e.source_etag) for e in entries])

    def record_copied(self, entries: list[Entry]) -> None:
        if not entries:
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO storage_migration_objects (migration_id, bucket, key, size_bytes, source_etag,"
                " in_snapshot, sha256, dest_etag, dest_checksum, verified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
                " ON CONFLICT (migration_id, bucket, key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,"
                " source_etag = EXCLUDED.source_etag, sha256 = EXCLUDED.sha256, dest_etag = EXCLUDED.dest_etag,"
                " dest_checksum = EXCLUDED.dest_checksum, verified_at = now()",
                [(self.id, e.bucket, e.key, e.size, e.source_etag, e.in_snapshot, e.sha256, e.dest_etag,
                  e.dest_checksum) for e in entries])

    def forget(self, entries: list[Entry]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany("DELETE FROM storage_migration_objects WHERE migration_id = %s AND bucket = %s"
                            " AND key = %s AND NOT in_snapshot", [(self.id, e.bucket, e.key) for e in entries])
            cur.executemany("UPDATE storage_migration_objects SET verified_at = NULL, sha256 = NULL"
                            " WHERE migration_id = %s AND bucket = %s AND key = %s",
                            [(self.id, e.bucket, e.key) for e in entries])


# --------------------------------------------------------------------------------------------
# The migration
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    site_id: str
    source_host: str
    dest_host: str
    settings: Settings
    force_ineligible_dest: bool = False
    # Objects of the site already on the destination that the source lacks: "refuse" the migration,
    # "delete" them (bounded by max_dest_extra_percent), or "keep" them (a rollback: nothing on the
    # old source is deleted, so an object the current host lost is never lost twice).
    dest_extras: str = "refuse"
    max_dest_extra_percent: float = 25.0
    # Objects copied then deleted on the source during the migration are deleted on the destination
    # too, up to this share of the copied objects (or delete_allowance, whichever is more).
    max_vanished_percent: float = 25.0
    delete_allowance: int = 3


class Migrator:
    """Runs one migration from claim to switch. ``hooks`` (tests, progress) get ``(phase, migrator)``."""

    def __init__(self, conn, src, dst, request: Request, hooks=None, log=None):
        self.conn = conn
        self.src = src
        self.dst = dst
        self.request = request
        self.settings = request.settings
        self.hooks = hooks or {}
        self.log = log or (lambda message: None)
        self.progress = Progress()
        self.store: Store | None = None
        self.manifest: dict[tuple[str, str], Entry] = {}
        self.budget = ByteBudget(self.settings.memory_budget)
        self.pending_rows: list[Entry] = []
        self.last_flush = time.monotonic()
        self.flush_lock = threading.Lock()
        self.resumed = False

    # -- helpers -------------------------------------------------------------------------

    def hook(self, phase: str) -> None:
        if self.store is not None:
            self.store.set(phase=phase)
        callback = self.hooks.get(phase)
        if callback:
            callback(self)

    def listing(self, client) -> dict[tuple[str, str], tuple[int, str]]:
        prefix = site_prefix(self.request.site_id)
        return {(bucket, key): (size, etag) for bucket in self.settings.buckets
                for key, size, etag in list_prefix(client, bucket, prefix)}

    def flush(self, force: bool = False) -> None:
        with self.flush_lock:
            due = force or time.monotonic() - self.last_flush >= self.settings.progress_interval \
                or len(self.pending_rows) >= self.settings.batch_size
            if not due or self.store is None:
                return
            rows, self.pending_rows = self.pending_rows, []
            self.last_flush = time.monotonic()
            self.store.record_copied(rows)
            self.store.set(objects_done=self.progress.objects_done, bytes_done=self.progress.bytes_done)

    # -- phases --------------------------------------------------------------------------

    def plan(self) -> dict:
        """What a run would copy now (check mode): nothing is written anywhere."""
        req = self.request
        state = site_state(self.conn, req.site_id)
        self.preflight(state, host_row(self.conn, req.source_host), host_row(self.conn, req.dest_host))
        current = open_migration(self.conn, req.site_id)
        done = {}
        if current and current["source"] == req.source_host and current["dest"] == req.dest_host:
            done = Store(self.conn, current["id"]).load_manifest()
        source = self.listing(self.src)
        to_copy = [(b, k, size) for (b, k), (size, etag) in sorted(source.items())
                   if not (done.get((b, k)) and done[(b, k)].verified and done[(b, k)].source_etag == etag)]
        return dict(site_id=req.site_id, source=req.source_host, dest=req.dest_host, strategy=self.settings.strategy,
                    objects_total=len(source), bytes_total=sum(size for size, _ in source.values()),
                    objects_to_copy=len(to_copy), bytes_to_copy=sum(size for _, _, size in to_copy),
                    would_copy=[f"{b}/{k}" for b, k, _ in to_copy[:1000]],
                    resumes=current["id"] if done else None)

    def preflight(self, state: dict, source: dict, dest: dict) -> None:
        from ansible_collections.chom.storage.plugins.module_utils.capacity import ineligibility

        req = self.request
        if req.source_host == req.dest_host:
            raise MigrationRefused("source and destination are the same host")
        if state["host"] != req.source_host:
            raise MigrationRefused(f"site {req.site_id} is on {state['host'] or 'no host'}, not on {req.source_host}")
        why = ineligibility(dest["role"], dest["capacity_state"])
        if why and not req.force_ineligible_dest:
            raise MigrationRefused(f"destination {req.dest_host} cannot take sites: {why}")

    def claim(self) -> None:
        req = self.request
        source, dest = host_row(self.conn, req.source_host), host_row(self.conn, req.dest_host)
        current = open_migration(self.conn, req.site_id)
        state = site_state(self.conn, req.site_id)
        if current and state["host"] != current["source"]:
            # Left open by a run that died, and the site has moved since: it can never switch.
            stale = Migrator(self.conn, self.src, self.dst, Request(req.site_id, current["source"], current["dest"],
                                                                     self.settings))
            stale.store = Store(self.conn, current["id"])
            stale.fail(f"site {req.site_id} moved to {state['host']} while this migration was interrupted")
            current = None
        if current and (current["source"], current["dest"]) != (req.source_host, req.dest_host):
            raise MigrationRefused(f"site {req.site_id} has an open migration {current['id']} from {current['source']}"
                                   f" to {current['dest']}; finish or fail it first")
        self.preflight(state, source, dest)
        if current:
            self.store = Store(self.conn, current["id"])
            self.manifest = self.store.load_manifest()
            self.resumed = True
            self.log(f"resuming migration {current['id']} ({sum(e.verified for e in self.manifest.values())} "
                     "objects already verified)")
            if current["strategy"] != self.settings.strategy:
                self.store.set(strategy=self.settings.strategy)
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("INSERT INTO storage_migrations (site_id, source_host_id, dest_host_id, status, strategy,"
                        " started_at, phase) VALUES (%s, %s, %s, 'in_progress', %s, now(), 'snapshot')"
                        " RETURNING id::text",
                        (req.site_id, source["id"], dest["id"], self.settings.strategy))
            self.store = Store(self.conn, cur.fetchone()[0])

    def snapshot(self) -> dict[tuple[str, str], tuple[int, str]]:
        source = self.listing(self.src)
        if not any(entry.in_snapshot for entry in self.manifest.values()):
            entries = [Entry(b, k, size, etag, True) for (b, k), (size, etag) in sorted(source.items())]
            self.store.record_snapshot(entries)
            for entry in entries:
                self.manifest.setdefault((entry.bucket, entry.key), entry)
        self.store.set(objects_total=len(source), data_size_bytes=sum(size for size, _ in source.values()))
        return source

    def pause_backups(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("UPDATE sites SET backups_paused = true, backups_paused_reason = %s WHERE id = %s",
                        (f"migration {self.store.id}", self.request.site_id))

    def dual_write(self, on: bool) -> None:
        with self.conn.cursor() as cur:
            if on:
                cur.execute("UPDATE sites SET dual_write_host_id = (SELECT id FROM storage_hosts WHERE hostname = %s)"
                            " WHERE id = %s", (self.request.dest_host, self.request.site_id))
            else:
                cur.execute("UPDATE sites SET dual_write_host_id = NULL WHERE id = %s", (self.request.site_id,))

    def release_site_flags(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("UPDATE sites SET backups_paused = false, backups_paused_reason = NULL"
                        " WHERE id = %s AND backups_paused_reason = %s", (self.request.site_id,
                                                                          f"migration {self.store.id}"))
            cur.execute("UPDATE sites SET dual_write_host_id = NULL WHERE id = %s AND dual_write_host_id ="
                        " (SELECT id FROM storage_hosts WHERE hostname = %s)",
                        (self.request.site_id, self.request.dest_host))

    def copy_pass(self, source: dict[tuple[str, str], tuple[int, str]]) -> int:
        """Copy every source object the manifest does not hold verified at its current ETag."""
        todo = []
        for (bucket, key), (size, etag) in sorted(source.items()):
            entry = self.manifest.get((bucket, key))
            if entry and entry.verified and entry.source_etag == etag and entry.sha256:
                continue
            todo.append((bucket, key, size))
        with self.progress.lock:
            self.progress.objects_total = len(source)
            self.progress.bytes_total = sum(size for size, _ in source.values())
            self.progress.objects_done = len(source) - len(todo)
            self.progress.bytes_done = self.progress.bytes_total - sum(size for _, _, size in todo)
            self.progress.skipped_objects = max(self.progress.skipped_objects, self.progress.objects_done)
        if not todo:
            return 0

        def one(bucket, key, size):
            copied = copy_object(self.src, self.dst, bucket, key, self.settings, self.budget)
            old = self.manifest.get((bucket, key))
            entry = Entry(bucket, key, copied.size, copied.source_etag, bool(old and old.in_snapshot), copied.sha256,
                          copied.dest_checksum, True, copied.dest_etag)
            copied_size = copied.size
            self.manifest[(bucket, key)] = entry
            with self.progress.lock:
                self.progress.objects_done += 1
                self.progress.bytes_done += copied_size
                self.progress.copied_objects += 1
                self.progress.copied_bytes += copied_size
                self.pending_rows.append(entry)
            self.flush()

        with ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="migrate") as pool:
            futures = [pool.submit(one, *item) for item in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                wait(futures)
                self.flush(force=True)
                raise MigrationError(f"copy failed: {failed[0].exception()}") from failed[0].exception()
        self.flush(force=True)
        return len(todo)

    def drop_vanished(self, source: dict) -> None:
        """Delete from the destination what this migration copied and the source no longer has."""
        gone = [e for (b, k), e in self.manifest.items() if (b, k) not in source and e.verified]
        if not gone:
            return
        copied = sum(1 for e in self.manifest.values() if e.verified)
        if not source:
            raise MigrationError(f"the source now lists no object of site {self.request.site_id} while {copied} were "
                                 "copied; its volume or engine may have failed. Nothing is deleted or switched")
        limit = max(self.request.delete_allowance, copied * self.request.max_vanished_percent / 100)
        if len(gone) > limit:
            raise MigrationError(f"{len(gone)} of {copied} copied objects vanished from the source during the "
                                 f"migration (limit {int(limit)}); nothing is deleted or switched")
        by_bucket: dict[str, list[Entry]] = {}
        for entry in gone:
            by_bucket.setdefault(entry.bucket, []).append(entry)
        for bucket, entries in by_bucket.items():
            for start in range(0, len(entries), 1000):
                chunk = entries[start:start + 1000]
                result = self.dst.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": e.key} for e in chunk],
                                                                        "Quiet": True})
                if result.get("Errors"):
                    raise MigrationError(f"could not delete {len(result['Errors'])} vanished objects "
                                         "on the destination")
        self.store.forget(gone)
        for entry in gone:
            del self.manifest[(entry.bucket, entry.key)]
            self.progress.deleted_on_dest.append(f"{entry.bucket}/{entry.key}")

    def drop_dest_extras(self, source: dict) -> None:
        """Objects of the site already on the destination that the source lacks: refuse, or with
        ``dest_extras="delete"`` delete them (bounded), or with ``"keep"`` keep and report them."""
        extras = sorted(set(self.listing(self.dst)) - set(source) - set(self.manifest))
        if not extras:
            return
        if self.request.dest_extras == "keep":
            self.progress.kept_on_dest.extend(f"{b}/{k}" for b, k in extras)
            return
        limit = max(self.request.delete_allowance, len(source) * self.request.max_dest_extra_percent / 100)
        if self.request.dest_extras != "delete":
            raise MigrationError(f"the destination already holds {len(extras)} objects of site "
                                 f"{self.request.site_id} that the source lacks (first: {extras[0][0]}/{extras[0][1]});"
                                 " remove them, or allow deleting them (replace_stale_on_dest)")
        if len(extras) > limit:
            raise MigrationError(f"refusing to delete {len(extras)} destination objects the source lacks "
                                 f"(limit {int(limit)})")
        for bucket in sorted({b for b, _ in extras}):
            keys = [k for b, k in extras if b == bucket]
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[start:start + 1000]]
                self.dst.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        self.progress.deleted_on_dest.extend(f"{b}/{k}" for b, k in extras)

    def delta_rounds(self) -> dict:
        source = None
        for _ in range(self.settings.max_delta_rounds):
            source = self.listing(self.src)
            self.drop_vanished(source)
            if self.copy_pass(source) == 0:
                return source
        source = self.listing(self.src)
        if self.copy_pass(source) == 0:
            return source
        raise MigrationError(f"the source kept changing through {self.settings.max_delta_rounds} delta passes; "
                             "try again in a quieter period or use the maintenance strategy")

    def verify(self, source: dict) -> None:
        """Check every object on the destination before the switch.

        An object is verified when the engine returned, for its upload, the SHA-256 checksum of the
        bytes read from the source, and the destination's listing still shows the size and ETag it
        had right after that upload (the ETag serves only to tell that the object was not replaced
        since; it is never taken for a checksum). Any other object - replaced since, uploaded by an
        earlier run without those records, or all of them with ``verify_content`` - is checked by
        its SHA-256 checksum header, or read back and hashed.
        """
        entries = [self.manifest[key] for key in sorted(source)]
        unverified = [f"{e.bucket}/{e.key}" for e in entries if not e.verified or not e.sha256]
        if unverified:
            raise MigrationError(f"{len(unverified)} objects were never copied (first: {unverified[0]})")
        on_dest = self.listing(self.dst)
        problems, deeper = [], []
        for entry in entries:
            seen = on_dest.get((entry.bucket, entry.key))
            if seen is None:
                problems.append(f"{entry.bucket}/{entry.key}\0{entry.bucket}/{entry.key}: missing on the destination")
            elif self.settings.verify_content or not entry.dest_checksum or seen != (entry.size, entry.dest_etag):
                deeper.append(entry)
        with ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="verify") as pool:
            problems += [problem for problem in pool.map(self.verify_one, deeper) if problem]
        self.progress.verified_by_reading = len(deeper)
        if problems:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany("UPDATE storage_migration_objects SET verified_at = NULL WHERE migration_id = %s"
                                " AND bucket = %s AND key = %s",
                                [(self.store.id, *p.split("\0")[0].split("/", 1)) for p in problems])
            reasons = [p.split("\0")[1] for p in problems]
            raise MigrationError(f"verification failed for {len(problems)} objects: " + "; ".join(reasons[:5]))

    def verify_one(self, entry: Entry) -> str | None:
        problem = verify_object(self.dst, entry, read_content=self.settings.verify_content)
        return f"{entry.bucket}/{entry.key}\0{problem}" if problem else None

    def switch(self) -> None:
        req = self.request
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT h.hostname FROM sites s LEFT JOIN storage_hosts h ON h.id = s.storage_host_id"
                        " WHERE s.id = %s FOR UPDATE OF s", (req.site_id,))
            row = cur.fetchone()
            if row is None or row[0] != req.source_host:
                raise SiteMoved(f"site {req.site_id} moved to {row[0] if row else 'nowhere'} during the migration; "
                                f"not switched (expected it on {req.source_host})")
            cur.execute("SELECT status FROM storage_migrations WHERE id = %s FOR UPDATE", (self.store.id,))
            status = cur.fetchone()[0]
            if status != "in_progress":
                raise MigrationError(f"migration {self.store.id} is {status}, not in_progress; not switched")
            cur.execute("UPDATE sites SET storage_host_id = (SELECT id FROM storage_hosts WHERE hostname = %s),"
                        " dual_write_host_id = NULL, backups_paused = false, backups_paused_reason = NULL"
                        " WHERE id = %s", (req.dest_host, req.site_id))
            cur.execute("UPDATE storage_migrations SET status = 'completed', phase = 'switched', completed_at = now(),"
                        " switched_at = now(), source_retained_until = now() + make_interval(secs => %s),"
                        " objects_done = %s, bytes_done = %s, updated_at = now() WHERE id = %s",
                        (self.settings.retain_hours * 3600, self.progress.objects_done, self.progress.bytes_done,
                         self.store.id))

    def copy_late_writes(self) -> None:
        """After the switch, copy objects written to the source after its last listing (by a writer
        that had not seen the switch yet) and still missing on the destination. An object the
        destination already holds is newer there and is left alone; nothing is deleted."""
        source = self.listing(self.src)
        late = {key: value for key, value in source.items() if key not in self.manifest}
        if not late:
            return
        on_dest = self.listing(self.dst)
        missing = {key: value for key, value in late.items() if key not in on_dest}
        for (bucket, key) in sorted(missing):
            copied = copy_object(self.src, self.dst, bucket, key, self.settings, self.budget)
            entry = Entry(bucket, key, copied.size, copied.source_etag, False, copied.sha256, copied.dest_checksum,
                          True, copied.dest_etag)
            self.manifest[(bucket, key)] = entry
            self.store.record_copied([entry])
            self.progress.late_copied += 1
        if missing:
            self.log(f"copied {len(missing)} object(s) written to the source during the switch")

    def fail(self, reason: str) -> None:
        """Record the failure and give the site its flags back. If the database is gone too, the row
        stays in_progress and the next run resumes it."""
        if self.store is None:
            return
        try:
            self.flush(force=True)
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute("UPDATE storage_migrations SET status = 'failed', failure_reason = %s,"
                            " completed_at = now(), updated_at = now()"
                            " WHERE id = %s AND status IN ('pending', 'in_progress')", (reason[:2000], self.store.id))
            self.release_site_flags()
        except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
            self.log(f"could not record the failure in the control plane: {exc}")

    def run(self) -> dict:
        self.settings.check()
        release_large_buffers_promptly()
        req = self.request
        if not try_lock_site(self.conn, req.site_id):
            raise MigrationRefused(f"another process is migrating site {req.site_id} right now")
        try:
            self.claim()
            try:
                self.execute()
            except SiteMoved as exc:
                self.fail(str(exc))
                raise
            except (MigrationError, BotoCoreError, ClientError, OSError) as exc:
                self.fail(str(exc))
                raise MigrationError(str(exc)) from exc
        finally:
            unlock_site(self.conn, req.site_id)
        return self.result()

    def execute(self) -> None:
        strategy = self.settings.strategy
        self.hook("snapshot")
        source = self.snapshot()
        if strategy == "maintenance":
            self.pause_backups()
        self.drop_dest_extras(source)
        self.hook("copy")
        self.copy_pass(source)
        if strategy == "live":
            self.dual_write(True)
            self.hook("dual_write")
        self.hook("delta")
        source = self.delta_rounds()
        self.hook("verify")
        self.verify(source)
        self.hook("switch")
        self.switch()
        self.hook("switched")
        try:
            self.copy_late_writes()
        except (MigrationError, BotoCoreError, ClientError, OSError) as exc:
            # The site is switched; what could not be copied is still on the source, which is kept.
            self.progress.late_error = f"objects written during the switch were not all copied: {exc}"
            self.log(self.progress.late_error)

    def result(self) -> dict:
        record = get_migration(self.conn, self.store.id)
        p = self.progress
        return dict(migration=record, resumed=self.resumed, copied_objects=p.copied_objects,
                    copied_bytes=p.copied_bytes, skipped_objects=p.skipped_objects,
                    verified_by_header_or_content=p.verified_by_reading,
                    deleted_on_destination=p.deleted_on_dest[:1000], kept_on_destination=p.kept_on_dest[:1000],
                    copied_after_switch=p.late_copied, after_switch_error=p.late_error)


# --------------------------------------------------------------------------------------------
# After the switch: cleanup and rollback
# --------------------------------------------------------------------------------------------


def cleanup_plan(conn, src, dst, migration: dict, buckets, now_ok: bool) -> dict:
    """What of the source copy may be deleted: objects the destination holds with the same content."""
    if migration["status"] != "completed":
        raise MigrationRefused(f"migration {migration['id']} is {migration['status']}; only a completed one is cleaned")
    if migration["rolled_back_at"]:
        raise MigrationRefused(f"migration {migration['id']} was rolled back; its source is the site's home again")
    state = site_state(conn, migration["site_id"])
    if state["host"] != migration["dest"]:
        raise MigrationRefused(f"site {migration['site_id']} is on {state['host']}, not on {migration['dest']}; "
                               "the source copy may be the only one")
    if not now_ok:
        raise MigrationRefused(f"the source copy of migration {migration['id']} is kept until "
                               f"{migration['source_retained_until']}")
    manifest = Store(conn, migration["id"]).load_manifest()
    prefix = site_prefix(migration["site_id"])
    deletable, kept = [], []
    for bucket in buckets:
        for key, size, etag in list_prefix(src, bucket, prefix):
            entry = manifest.get((bucket, key))
            if entry is None or not entry.sha256 or entry.source_etag != etag or entry.size != size:
                kept.append((f"{bucket}/{key}", "not copied by this migration, or changed since"))
                continue
            problem = verify_object(dst, entry, read_content=False)
            if problem:
                kept.append((f"{bucket}/{key}", problem))
            else:
                deletable.append((bucket, key, size))
    return dict(deletable=deletable, kept=kept)


class SiteLock:
    """The per-site session lock every migration, rollback and cleanup of a site takes."""

    def __init__(self, conn, site_id: str):
        self.conn, self.site_id = conn, site_id

    def __enter__(self):
        if not try_lock_site(self.conn, self.site_id):
            raise MigrationRefused(f"another process is migrating, rolling back or cleaning site {self.site_id}")
        if open_migration(self.conn, self.site_id) is not None:
            unlock_site(self.conn, self.site_id)
            raise MigrationRefused(f"site {self.site_id} has a migration in progress; finish it first")
        return self

    def __exit__(self, *exc):
        unlock_site(self.conn, self.site_id)


def retention_passed(conn, migration_id: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT source_retained_until <= now() FROM storage_migrations WHERE id = %s", (migration_id,))
        row = cur.fetchone()
    return bool(row and row[0])


def cleanup_source(conn, src, migration: dict, plan: dict) -> int:
    deleted = 0
    for bucket in sorted({b for b, _, _ in plan["deletable"]}):
        keys = [k for b, k, _ in plan["deletable"] if b == bucket]
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            result = src.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            errors = result.get("Errors") or []
            deleted += len(chunk) - len(errors)
            if errors:
                raise MigrationError(f"{len(errors)} source objects could not be deleted: {errors[0].get('Message')}")
    if not plan["kept"]:
        with conn.cursor() as cur:
            cur.execute("UPDATE storage_migrations SET source_deleted_at = now(), updated_at = now() WHERE id = %s",
                        (migration["id"],))
    return deleted


def mark_rolled_back(conn, migration_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE storage_migrations SET rolled_back_at = now(), updated_at = now() WHERE id = %s",
                    (migration_id,))
