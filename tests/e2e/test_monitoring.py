"""Prometheus in the lab scrapes node_exporter and the engine on both hosts and loads the rules."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request

PROMETHEUS = f"http://127.0.0.1:{os.environ.get('CHOM_LAB_PROMETHEUS_PORT', '59090')}"


def query(expr: str) -> list[dict]:
    url = f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)["data"]["result"]


def wait_for(expr: str, count: int, seconds: float = 60) -> list[dict]:
    deadline = time.monotonic() + seconds
    result = []
    while time.monotonic() < deadline:
        result = query(expr)
        if len(result) >= count:
            return result
        time.sleep(1)
    raise AssertionError(f"{expr}: {len(result)} series after {seconds} s, wanted {count}: {result}")


def test_both_hosts_are_scraped(lab):
    hosts = {lab.primary, lab.replica}
    for job in ("node", "chom-storage-engine"):
        series = wait_for(f'up{{job="{job}"}} == 1', 2)
        assert {s["metric"]["storage_host"] for s in series} == hosts, job


def test_capacity_and_replication_metrics_reach_prometheus(lab):
    lab.ssh(lab.primary, "systemctl start chom-replication.service", check=False)
    disk = wait_for('chom_storage_disk_usage_percent{mountpoint="/mnt/chom-storage"}', 2)
    assert {s["metric"]["storage_host"] for s in disk} == {lab.primary, lab.replica}
    assert all(0 < float(s["value"][1]) < 100 for s in disk)
    wait_for("chom_storage_inode_usage_percent", 2)
    wait_for("chom_storage_io_wait_percent", 2)
    lag = wait_for("chom_storage_replication_lag_seconds", 1)
    assert lag[0]["metric"]["replica"] == lab.replica


def test_alert_rules_are_loaded(lab):
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/rules", timeout=5) as answer:
        groups = json.load(answer)["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"ChomStorageDiskCritical", "ChomStorageInodesCritical", "ChomStorageIOWaitHigh",
            "ChomStorageReplicationLagCritical", "ChomStorageReplicationFailing", "ChomStorageEngineDown"} <= names
