"""Migration benchmark: verified migration against a plain boto3 copy, between two local engines.

Two `weed mini` engines and a throwaway PostgreSQL are started by this script on 127.0.0.1 with
free ports and stopped by their PIDs at the end. Datasets:
  (a) 2,000 objects of 256 KiB        (b) 2 objects of 512 MiB
Each is copied from the source to the destination twice, alternately:
  plain     boto3, 8 threads, get then put (multipart through boto3's transfer manager for (b)),
            no checksum and no verification, into a bucket of its own;
  migration the site_migration engine with its defaults: SHA-256 of every byte read, checksum
            headers on every upload, manifest and progress in PostgreSQL, verification of every
            object on the destination, the switch transaction.
The best of two runs of each counts. The migration runs in a child process of its own, whose
peak RSS (VmHWM) is reported.

Last line: migration: small_ratio=R large_ratio=R peak_rss_mb=M
where a ratio is the migration's throughput divided by the plain copy's (>= 0.8 is the target).
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "collections"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from boto3.s3.transfer import TransferConfig  # noqa: E402
from conftest import free_ports, pg_bindir, socket_files, stop_pids, wait_for  # noqa: E402
from retention import start_weed  # noqa: E402

from ansible_collections.chom.storage.plugins.module_utils.control_plane import apply_schema  # noqa: E402
from ansible_collections.chom.storage.plugins.module_utils.s3 import make_client  # noqa: E402

MiB = 1024 * 1024
SMALL = (2000, 256 * 1024)
LARGE = (2, 512 * MiB)
THREADS = 8
BUCKET = "chom-backups"
PLAIN_BUCKET = "bench-plain"
RUNS = 2
# CHOM_BENCH_ONLY=small|large measures one dataset (for development; the target needs both).
ONLY = os.environ.get("CHOM_BENCH_ONLY", "")


class PseudoRandom:
    """A readable stream of ``size`` incompressible bytes without holding them in memory."""

    def __init__(self, size: int, seed: bytes):
        self.left = size
        self.block = os.urandom(MiB)
        self.seed = seed
        self.counter = 0

    def read(self, amount: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        amount = self.left if amount is None or amount < 0 else min(amount, self.left)
        out = bytearray()
        while len(out) < amount:
            self.counter += 1
            tag = hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            out += tag + self.block[: min(MiB, amount - len(out)) - len(tag)]
        self.left -= amount
        return bytes(out[:amount])


def start_postgres():
    base = Path(tempfile.mkdtemp(prefix="chom-bench-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    port = free_ports(1)[0]
    password = secrets.token_urlsafe(18)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if as_root:
        shutil.chown(pwfile, "postgres", "postgres")
    bindir = pg_bindir()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(base / "data"), "-U", "bench", "--pwfile", str(pwfile),
                    "--auth=scram-sha-256", "--no-sync"], check=True, capture_output=True, timeout=120)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off",
                    "start"], check=True, capture_output=True, timeout=120)
    db = {"host": "127.0.0.1", "port": port, "dbname": "postgres", "user": "bench", "password": password}
    return base, db, prefix, bindir


def stop_postgres(base, prefix, bindir):
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"],
                   check=False, capture_output=True, timeout=60)
    shutil.rmtree(base, ignore_errors=True)


def client(engine, pool=THREADS + 4):
    _, _, endpoint, admin, _ = engine
    return make_client(endpoint, admin.access_key, admin.secret_key, attempts=5, timeout=60, pool=pool)


def fill(engine, site, count, size):
    s3 = client(engine)
    keys = [f"{site}/full/20261201T020000Z/object-{n:05d}.bin" for n in range(count)]
    config = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=4)

    def put(key):
        s3.upload_fileobj(PseudoRandom(size, key.encode()), BUCKET, key, Config=config)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(put, keys))
    return keys


def plain_copy(src_engine, dst_engine, keys, size) -> float:
    """The reference: boto3 get and put with THREADS threads, nothing verified."""
    src, dst = client(src_engine), client(dst_engine)
    config = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=8 * MiB, max_concurrency=THREADS)
    large = size > 16 * MiB

    def copy(key):
        body = src.get_object(Bucket=BUCKET, Key=key)["Body"]
        if large:
            dst.upload_fileobj(body, PLAIN_BUCKET, key, Config=config)
        else:
            dst.put_object(Bucket=PLAIN_BUCKET, Key=key, Body=body.read())

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(copy, keys))
    elapsed = time.perf_counter() - started
    empty(dst_engine, PLAIN_BUCKET, "")
    return elapsed


def empty(engine, bucket, prefix):
    s3 = client(engine)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM). getrusage's ru_maxrss would also count the parent's
    peak, which Linux carries over into a child across fork and exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def migrate_child(db, src, dst, site, queue):
    import psycopg

    from ansible_collections.chom.storage.plugins.module_utils.migration import Migrator, Request, Settings

    conn = psycopg.connect(autocommit=True, **db)
    clients = [make_client(e[0], e[1], e[2], timeout=60, pool=THREADS + 4) for e in (src, dst)]
    started = time.perf_counter()
    result = Migrator(conn, *clients, Request(site, "bench-src", "bench-dst", Settings())).run()
    elapsed = time.perf_counter() - started
    queue.put((elapsed, result["migration"]["status"], result["copied_objects"], peak_rss_mb()))


def migrate(db, src_engine, dst_engine, site) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(autocommit=True, **db) as conn:
        conn.execute("UPDATE sites SET storage_host_id = (SELECT id FROM storage_hosts WHERE hostname = 'bench-src')"
                     " WHERE id = %s", (site,))
        conn.execute("DELETE FROM storage_migrations WHERE site_id = %s", (site,))
    empty(dst_engine, BUCKET, f"{site}/")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    endpoints = [(e[2], e[3].access_key, e[3].secret_key) for e in (src_engine, dst_engine)]
    child = ctx.Process(target=migrate_child, args=(db, *endpoints, site, queue))
    child.start()
    elapsed, status, copied, peak_mb = queue.get(timeout=1800)
    child.join(60)
    if status != "completed":
        raise SystemExit(f"migration of {site} ended {status}")
    return elapsed, peak_mb


def main() -> int:
    engines, pg = [], None
    preexisting = set()
    try:
        for _ in range(2):
            engine = start_weed()
            preexisting |= set(socket_files(engine[4].values()))
            engines.append(engine)
        pg = start_postgres()
        src, dst = engines
        for engine in engines:
            s3 = client(engine)
            wait_for(lambda s3=s3: s3.list_buckets() is not None, 60, "SeaweedFS S3 API")
            for bucket in (BUCKET, PLAIN_BUCKET, "chom-media", "chom-archives"):
                s3.create_bucket(Bucket=bucket)
        db = pg[1]
        import psycopg

        with psycopg.connect(autocommit=True, **db) as conn:
            apply_schema(conn)
            for name in ("bench-src", "bench-dst"):
                conn.execute("INSERT INTO storage_hosts (hostname, ip_address, role) VALUES (%s, '127.0.0.1', "
                             "'active')", (name,))
            for site in ("bench-small", "bench-large"):
                conn.execute("INSERT INTO sites (id) VALUES (%s)", (site,))
        ratios, peak = {}, 0.0
        datasets = [d for d in (("small", "bench-small", SMALL), ("large", "bench-large", LARGE))
                    if ONLY in ("", d[0])]
        for label, site, (count, size) in datasets:
            started = time.perf_counter()
            keys = fill(src, site, count, size)
            total = count * size
            print(f"{label}: {count:,} objects of {size // 1024:,} KiB stored on the source in "
                  f"{time.perf_counter() - started:.1f} s")
            plain_s, migrate_s = [], []
            for _ in range(RUNS):
                plain_s.append(plain_copy(src, dst, keys, size))
                elapsed, peak_mb = migrate(db, src, dst, site)
                migrate_s.append(elapsed)
                peak = max(peak, peak_mb)
                print(f"{label}: plain {total / MiB / plain_s[-1]:.0f} MB/s, verified migration "
                      f"{total / MiB / elapsed:.0f} MB/s, migrating process peak RSS {peak_mb:.0f} MB")
            ratios[label] = min(plain_s) / min(migrate_s)
            empty(src, BUCKET, f"{site}/")
            empty(dst, BUCKET, f"{site}/")
        if ONLY:
            print(f"migration: {ONLY}_ratio={ratios[ONLY]:.2f} peak_rss_mb={peak:.0f} (one dataset only)")
            return 0
        print(f"migration: small_ratio={ratios['small']:.2f} large_ratio={ratios['large']:.2f} peak_rss_mb={peak:.0f}")
        return 0
    finally:
        if pg:
            stop_postgres(pg[0], pg[2], pg[3])
        stop_pids([engine[0] for engine in engines])
        for engine in engines:
            shutil.rmtree(engine[1], ignore_errors=True)
            for path in set(socket_files(engine[4].values())) - preexisting:
                with contextlib.suppress(OSError):
                    os.unlink(path)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
