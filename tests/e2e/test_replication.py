"""Replication on the lab: bytes arrive on the replica, and a refused run changes nothing."""

from __future__ import annotations

import hashlib
import os
import uuid

BUCKET = "chom-backups"


def replica_state(lab) -> dict:
    """Every object (all buckets) and every file-tier file on the replica, with content hashes."""
    client = lab.s3(lab.replica, "admin")
    state = {}
    for bucket in ("chom-backups", "chom-media", "chom-archives"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                state[f"s3://{bucket}/{item['Key']}"] = hashlib.sha256(body).hexdigest()
    files = lab.ssh(lab.replica, "cd /mnt/chom-storage/files && find . -type f -exec sha256sum {} + | sort").stdout
    state["files"] = files
    return state


def run_replication(lab):
    return lab.ssh(lab.primary, "systemctl start chom-replication.service", check=False)


def test_object_put_on_primary_is_readable_on_replica(lab):
    key = f"site-e2e/full-{uuid.uuid4().hex}.tar.gz"
    body = os.urandom(300_000)
    lab.s3(lab.primary).put_object(Bucket=BUCKET, Key=key, Body=body)
    file_name = f"e2e-{uuid.uuid4().hex}.bin"
    lab.ssh(lab.primary, f"head -c 50000 /dev/urandom > /mnt/chom-storage/files/{file_name}")

    result = run_replication(lab)
    assert result.returncode == 0, result.stderr

    assert lab.s3(lab.replica).get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    primary_sum = lab.ssh(lab.primary, f"sha256sum /mnt/chom-storage/files/{file_name}").stdout.split()[0]
    replica_sum = lab.ssh(lab.replica, f"sha256sum /mnt/chom-storage/files/{file_name}").stdout.split()[0]
    assert primary_sum == replica_sum
    metrics = lab.ssh(lab.primary, "cat /var/lib/prometheus/node-exporter/chom_storage_replication.prom").stdout
    assert f'chom_storage_replication_last_run_success{{replica="{lab.replica}"}} 1' in metrics
    assert "chom_storage_replication_lag_seconds{" in metrics


def test_run_with_primary_volume_unmounted_leaves_replica_unchanged(lab):
    # Something to delete and something to copy, so a run that went ahead would change the replica.
    lab.s3(lab.primary).put_object(Bucket=BUCKET, Key=f"site-e2e/pending-{uuid.uuid4().hex}", Body=b"new")
    before = replica_state(lab)
    assert before, "the replica should hold data before the refused run"

    # Stopping the mount unit also stops the object store, which requires the mount.
    lab.ssh(lab.primary, "systemctl stop chom-object-store.service 'mnt-chom\\x2dstorage.mount'")
    try:
        assert lab.ssh(lab.primary, "mountpoint -q /mnt/chom-storage", check=False).returncode != 0
        result = run_replication(lab)
        assert result.returncode != 0
        journal = lab.ssh(lab.primary, "journalctl -u chom-replication.service -n 5 --no-pager -o cat").stdout
        assert "refused" in journal and "not mounted" in journal
        metrics = lab.ssh(lab.primary, "cat /var/lib/prometheus/node-exporter/chom_storage_replication.prom").stdout
        assert f'chom_storage_replication_last_run_refused{{replica="{lab.replica}"}} 1' in metrics
        assert replica_state(lab) == before
    finally:
        lab.ssh(lab.primary, "systemctl start 'mnt-chom\\x2dstorage.mount' chom-object-store.service")

    assert lab.ssh(lab.primary, "mountpoint -q /mnt/chom-storage", check=False).returncode == 0
    assert run_replication(lab).returncode == 0
