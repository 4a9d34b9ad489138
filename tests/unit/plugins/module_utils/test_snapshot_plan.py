"""Which storage host snapshots which site: validation of the VPS site lists and the plan."""

from __future__ import annotations

import pytest

from ansible_collections.chom.storage.plugins.module_utils.snapshot_plan import (
    SnapshotPlanError,
    check_document_root,
    check_vps_sites,
    plan,
)


def test_valid_sites_are_flattened():
    sites = check_vps_sites({"vps-1": [{"site": "site-a", "document_root": "/var/www/site-a"}],
                             "vps-2": [{"site": "b.example", "document_root": "/srv/sites/b.example"}], "vps-3": None})
    assert sites == [{"site": "site-a", "vps_host": "vps-1", "document_root": "/var/www/site-a"},
                     {"site": "b.example", "vps_host": "vps-2", "document_root": "/srv/sites/b.example"}]


@pytest.mark.parametrize("root", ["var/www", "/", "/var/www/", "/var/../etc", "/var/www/a b", '/var/"x"', "", None,
                                  "/var//www", "/var/www/./a"])
def test_bad_document_roots_are_refused(root):
    with pytest.raises(SnapshotPlanError):
        check_document_root(root)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SnapshotPlanError) as info:
        check_vps_sites({"vps-1": [{"site": "Site_A", "document_root": "/var/www/a"},
                                   {"site": "ok", "document_root": "relative"},
                                   {"site": "_platform", "document_root": "/var/www/p"},
                                   {"site": "../x", "document_root": "/var/www/x"},
                                   {"site": "dup", "document_root": "/var/www/d"},
                                   {"site": "x", "document_root": "/var/www/x", "extra": 1}],
                         "vps-2": [{"site": "dup", "document_root": "/var/www/d"}]})
    message = str(info.value)
    for fragment in ("'Site_A'", "'relative'", "_platform is not a customer site", "'../x'",
                     "site dup is also listed on vps-1", "keys site and document_root only"):
        assert fragment in message


def test_plan_gives_each_site_to_its_recorded_host_and_reports_the_rest():
    sites = [{"site": s, "vps_host": "vps-1", "document_root": f"/var/www/{s}"}
             for s in ("a", "b", "c", "d", "e", "f")]
    flags = {
        "a": {"storage_host": "storage-1", "paused": False, "paused_reason": None, "deleted": False},
        "b": {"storage_host": "storage-1", "paused": True, "paused_reason": "migration", "deleted": False},
        "c": {"storage_host": None, "paused": False, "paused_reason": None, "deleted": False},
        "d": {"storage_host": "storage-9", "paused": False, "paused_reason": None, "deleted": False},
        "e": {"storage_host": "storage-2", "paused": False, "paused_reason": None, "deleted": True},
    }
    result = plan(sites, flags, ["storage-1", "storage-2"])
    assert [s["site"] for s in result["hosts"]["storage-1"]] == ["a", "b"]
    assert result["hosts"]["storage-1"][1]["paused"] is True
    assert result["hosts"]["storage-2"] == []
    assert result["paused"] == {"b": "migration"}
    assert set(result["not_snapshotted"]) == {"c", "d", "e", "f"}
    assert "place_sites" in result["not_snapshotted"]["c"]
    assert "storage-9" in result["not_snapshotted"]["d"]
    assert "not in the control plane" in result["not_snapshotted"]["f"]
