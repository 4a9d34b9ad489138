"""The dashboard and the alert rules name only series the collection writes."""

from __future__ import annotations

import json
import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = os.path.join(REPO, "roles/monitoring/files")
WRITERS = [
    "plugins/modules/storage_capacity.py",
    "roles/replication/files/chom-replicate",
]


def written_metrics() -> set[str]:
    names = set()
    for path in WRITERS:
        with open(os.path.join(REPO, path), encoding="utf-8") as handle:
            text = handle.read()
        names |= set(re.findall(r"chom_storage_[a-z_]+", text))
        names |= {f"chom_storage_{n}" for n in re.findall(r'\("([a-z_]+)", (?:mount|"")', text)}
        names |= {f"chom_storage_replication_{n}" for n in re.findall(r'\("([a-z_]+)", "[A-Z]', text)}
    return names


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"chom_storage_[a-z_]+", expr))


def test_every_spec_metric_is_written():
    for name in ("chom_storage_disk_usage_percent", "chom_storage_inode_usage_percent", "chom_storage_io_wait_percent",
                 "chom_storage_replication_lag_seconds", "chom_storage_backup_success_rate"):
        assert name in written_metrics(), name


def test_alert_rules_use_written_metrics():
    with open(os.path.join(FILES, "chom-storage.rules.yml"), encoding="utf-8") as handle:
        rules = yaml.safe_load(handle)
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) == 6
    for expr in exprs:
        assert metrics_in(expr) <= written_metrics(), expr


def test_dashboard_shows_the_five_metrics_and_the_state():
    with open(os.path.join(FILES, "chom-storage-dashboard.json"), encoding="utf-8") as handle:
        dashboard = json.load(handle)
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    shown = set().union(*(metrics_in(e) for e in exprs))
    assert shown <= written_metrics()
    assert {"chom_storage_disk_usage_percent", "chom_storage_inode_usage_percent", "chom_storage_io_wait_percent",
            "chom_storage_replication_lag_seconds", "chom_storage_backup_success_rate",
            "chom_storage_capacity_state"} <= shown
