"""Retention benchmark: plan 1,000,000 items, and list 100,000 keys from a local SeaweedFS, in one run.

Planning runs in a child process of its own, so its peak RSS (resource.getrusage) is that of the
planner and its input, not of boto3 or the engine. The engine is a `weed mini` this script starts
on 127.0.0.1 with free ports and stops by its PID at the end.

Prints one line per measurement, then a last line:
retention: items=1000000 plan_s=P list_100k_s=L ratio=R peak_rss_mb=M
where ratio = plan_s / (list_100k_s * 10): planning a million items against listing as many keys.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "collections"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

# Helpers of the integration fixtures (plain functions; pytest is only imported, not run).
from conftest import (  # noqa: E402
    LOOPBACK,
    WEED_PORT_FLAGS,
    default_identities,
    free_ports,
    new_key,
    socket_files,
    stop_pids,
    wait_for,
    weed_binary,
)

from ansible_collections.chom.storage.plugins.module_utils.retention import (  # noqa: E402
    DAY,
    DEPLOYED,
    INVALID,
    VALID,
    Item,
    Site,
    plan,
)
from ansible_collections.chom.storage.plugins.module_utils.s3 import make_client  # noqa: E402

ITEMS = 1_000_000
SITES = 20_000
LIST_KEYS = 100_000
UPLOAD_THREADS = 64
UPLOAD_BUDGET_S = 600
NOW = 1_781_524_800  # 2026-06-15T12:00:00Z
KINDS = ("full", "incremental", "incremental", "incremental", "db", "db", "config", "logs", "dr", "artifact",
         "media")
TIERS = ("starter", "pro", "enterprise")


def synthetic_items():
    per_site = ITEMS // SITES
    items = []
    for s in range(SITES):
        site = f"site-{s:05d}"
        for n in range(per_site):
            kind = KINDS[(s + n) % len(KINDS)]
            created = NOW - (n * 7 + s % 5) * 3 * 3600
            flags = (VALID, VALID, VALID, 0, INVALID)[n % 5] | (DEPLOYED if n % 3 == 0 else 0)
            items.append(Item(site, kind, created, 1000 + n, f"{site}/{kind}/{created}/", flags, created + DAY))
    return items


def plan_child(queue):
    items = synthetic_items()
    sites = {f"site-{s:05d}": Site(TIERS[s % 3], NOW - 30 * DAY if s % 97 == 0 else None) for s in range(SITES)}
    started = time.perf_counter()
    result = plan(items, sites, NOW)
    plan_s = time.perf_counter() - started
    totals = result.totals()
    started = time.perf_counter()
    emergency = plan(items, sites, NOW, emergency=True, bytes_to_free=10**12)
    emergency_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    queue.put((len(items), plan_s, emergency_s, totals["items_deleted"], emergency.totals()["items_deleted"],
               peak_mb))


def measure_plan():
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=plan_child, args=(queue,))
    child.start()
    result = queue.get(timeout=600)
    child.join(60)
    return result


def start_weed():
    ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS), pair_offset=10000), strict=True))
    base = Path(tempfile.mkdtemp(prefix="chom-bench-weed-"))
    (base / "data").mkdir()
    admin = new_key("CHOMADMIN")
    config = base / "identities.json"
    config.write_text(json.dumps(default_identities(admin, new_key("CHOMAPP"), ())))
    config.chmod(0o600)
    cmd = [str(weed_binary()), "mini", f"-dir={base / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
           *(f"-{flag}={port}" for flag, port in ports.items()),
           "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.autoCreateBucket=false",
           f"-s3.config={config}", f"-s3.localSocket={base / 's3.sock'}", f"-filer.localSocket={base / 'filer.sock'}",
           "-volume.preStopSeconds=0"]
    with open(base / "weed.log", "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base)
    endpoint = f"http://{LOOPBACK}:{ports['s3.port']}"
    return process, base, endpoint, admin, ports


def measure_listing(endpoint, admin):
    client = make_client(endpoint, admin.access_key, admin.secret_key, attempts=5, timeout=30)
    wait_for(lambda: client.list_buckets() is not None, 60, "SeaweedFS S3 API")
    client.create_bucket(Bucket="chom-backups")
    keys = [f"site-{n % 1000:04d}/db/2026{(n // 1000) % 12 + 1:02d}01T{n % 24:02d}0000Z/dump-{n:06d}.sql.gz"
            for n in range(LIST_KEYS)]
    uploader = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=admin.access_key,
                            aws_secret_access_key=admin.secret_key, region_name="us-east-1",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                          max_pool_connections=UPLOAD_THREADS, retries={"max_attempts": 5}))
    deadline = time.monotonic() + UPLOAD_BUDGET_S
    started = time.perf_counter()

    def put(key):
        if time.monotonic() < deadline:
            uploader.put_object(Bucket="chom-backups", Key=key, Body=b"")

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(put, keys))
    print(f"upload: {LIST_KEYS:,} zero-byte keys in {time.perf_counter() - started:.1f} s "
          f"with {UPLOAD_THREADS} threads")
    best, listed = float("inf"), 0
    for _ in range(2):
        started = time.perf_counter()
        listed = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="chom-backups"):
            listed += len(page.get("Contents", []))
        best = min(best, time.perf_counter() - started)
    if listed != LIST_KEYS:
        raise SystemExit(f"listed {listed} keys, expected {LIST_KEYS} (upload budget exceeded?)")
    print(f"list: {listed:,} keys in {best:.2f} s (best of 2), {listed / best:,.0f} keys/s")
    return best


def main() -> int:
    count, plan_s, emergency_s, deleted, emergency_deleted, peak_mb = measure_plan()
    print(f"plan: {count:,} items in {plan_s:.2f} s ({count / plan_s:,.0f} items/s), {deleted:,} to delete; "
          f"emergency plan {emergency_s:.2f} s, {emergency_deleted:,} to delete; planner peak RSS {peak_mb:.0f} MB")
    process, base, endpoint, admin, ports = start_weed()
    preexisting = set(socket_files(ports.values()))
    try:
        list_s = measure_listing(endpoint, admin)
    finally:
        stop_pids([process])
        shutil.rmtree(base, ignore_errors=True)
        for path in set(socket_files(ports.values())) - preexisting:
            os.unlink(path)
    ratio = plan_s / (list_s * 10)
    print(f"retention: items={count} plan_s={plan_s:.2f} list_100k_s={list_s:.2f} ratio={ratio:.3f} "
          f"peak_rss_mb={peak_mb:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
