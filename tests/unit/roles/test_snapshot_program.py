"""Pure parts of the snapshot program: kind and base, stamps, rsync outcomes, link check."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
from datetime import UTC, datetime

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PATH = os.path.join(REPO, "roles/snapshot/files/chom-snapshot")
loader = importlib.machinery.SourceFileLoader("chom_snapshot", PATH)
spec = importlib.util.spec_from_loader("chom_snapshot", loader)
snapshot = importlib.util.module_from_spec(spec)
loader.exec_module(snapshot)

SUNDAY = datetime(2026, 1, 4, 3, 0, tzinfo=UTC)
MONDAY = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def test_sunday_is_full_even_with_a_previous_snapshot():
    assert snapshot.choose_kind(SUNDAY, "20260103T030000Z") == ("full", None)


def test_other_days_are_incremental_on_the_previous_snapshot():
    assert snapshot.choose_kind(MONDAY, "20260104T030000Z") == ("incremental", "20260104T030000Z")


def test_first_snapshot_is_full_on_any_day():
    assert snapshot.choose_kind(MONDAY, None) == ("full", None)


def test_weekday_is_taken_in_utc():
    # Sunday 23:30 in New York is Monday 04:30 UTC: incremental.
    when = snapshot.parse_now("2026-01-04T23:30:00-05:00")
    assert when.weekday() == 0
    assert snapshot.choose_kind(when, "20260104T030000Z")[0] == "incremental"
    assert snapshot.stamp(when) == "20260105T043000Z"


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="no time zone"):
        snapshot.parse_now("2026-01-04T03:00:00")


@pytest.mark.parametrize("code,outcome", [(0, "ok"), (24, "warning"), (23, "failed"), (12, "failed"),
                                          (255, "failed"), (5, "failed")])
def test_rsync_outcome(code, outcome):
    assert snapshot.rsync_outcome(code) == outcome


def test_rsync_command_pulls_relative_to_the_restricted_root():
    site = {"site": "s", "host": "10.0.0.5", "user": "root", "ssh_key": "/k/s", "document_root": "/var/www/s"}
    cfg = {"known_hosts": "/k/known_hosts", "xattrs": True}
    args = snapshot.rsync_command(site, cfg, "/v/snapshots/s/X.partial", "/v/snapshots/s/W", 0)
    assert args[-2:] == ["root@10.0.0.5:./", "/v/snapshots/s/X.partial/"]
    assert {"--archive", "--hard-links", "--numeric-ids", "--acls", "--xattrs"} <= set(args)
    assert "--link-dest=/v/snapshots/s/W" in args
    full = snapshot.rsync_command(site, dict(cfg, xattrs=False), "/d", None, 500)
    assert not [a for a in full if a.startswith("--link-dest")]
    assert "--bwlimit=500" in full and "--xattrs" not in full


def write(path, text, mtime=1_700_000_000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


def test_tally_counts_links_and_finds_copies(tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    for name in ("a.txt", "b.txt", "sub/c d.txt"):
        write(str(base / name), name)
    os.makedirs(new / "sub")
    os.link(base / "a.txt", new / "a.txt")          # linked, as --link-dest does
    write(str(new / "b.txt"), "b.txt")              # unchanged but copied: a missing link
    write(str(new / "sub/c d.txt"), "changed!!!", mtime=1_700_000_100)  # changed: not expected
    write(str(new / "new.txt"), "new")              # new: not expected
    counts = snapshot.tally(str(new), str(base))
    assert counts["files"] == 4
    assert counts["bytes"] == len("a.txt") + len("b.txt") + len("changed!!!") + len("new")
    assert counts["linked_files"] == 1
    assert counts["expected_links"] == 2
    assert counts["unlinked"] == ["b.txt"]
    with pytest.raises(snapshot.SiteFailed, match=r"only 1 of 2 unchanged file\(s\) are hard links"):
        snapshot.check_links(counts, str(base))


def test_tally_of_a_full_snapshot_expects_no_links(tmp_path):
    write(str(tmp_path / "x"), "x")
    os.symlink("x", tmp_path / "link")
    counts = snapshot.tally(str(tmp_path), None)
    assert (counts["files"], counts["linked_files"], counts["expected_links"]) == (1, 0, 0)


def test_complete_snapshots_need_a_complete_sidecar(tmp_path):
    for name, status in (("20260104T030000Z", "complete"), ("20260105T030000Z", None),
                         ("20260106T030000Z", "failed")):
        os.makedirs(tmp_path / name)
        if status:
            (tmp_path / f"{name}.json").write_text(json.dumps({"kind": "full", "status": status}))
    os.makedirs(tmp_path / "20260107T030000Z.partial")
    (tmp_path / "20260108T030000Z.json").write_text(json.dumps({"status": "complete"}))  # no directory
    assert snapshot.complete_snapshots(str(tmp_path)) == ["20260104T030000Z"]


def test_remove_partials_removes_only_partial_stamps(tmp_path):
    for name in ("20260107T030000Z.partial", "20260104T030000Z", "notes.partial"):
        os.makedirs(tmp_path / name)
    snapshot.remove_partials(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["20260104T030000Z", "notes.partial"]


def test_results_are_counted_for_the_capacity_check(tmp_path):
    path = str(tmp_path / "backup-results.json")
    snapshot.count_results(path, 2, 0)
    snapshot.count_results(path, 1, 1)
    assert json.loads(open(path, encoding="utf-8").read()) == {"succeeded": 3, "failed": 1}


def test_a_paused_site_is_skipped_without_touching_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "check_volume", lambda volume, path: None)
    cfg = {"volume_path": str(tmp_path), "snapshots_path": str(tmp_path / "snapshots"), "results_file": "",
           "sites": [{"site": "paused-site", "host": "h", "document_root": "/var/www/p", "ssh_key": "k",
                      "paused": True, "paused_reason": "migration"}]}
    code, results = snapshot.run(cfg, MONDAY, None, 0)
    assert code == 0
    assert results == [{"site": "paused-site", "status": "skipped", "reason": "backups paused: migration"}]
    assert os.listdir(tmp_path / "snapshots") == []


def test_a_local_pull_gives_a_full_then_an_incremental_snapshot(tmp_path, monkeypatch):
    """The whole per-site flow with rsync reading a local directory instead of the VPS."""
    source = tmp_path / "www"
    write(str(source / "index.php"), "<?php")
    write(str(source / "up/a b.txt"), "a b")
    os.link(source / "up/a b.txt", source / "same.txt")
    real = snapshot.rsync_command

    def local(site, cfg, dest, link_dest, bwlimit):
        args = real(site, cfg, dest, link_dest, bwlimit)
        shell = args.index("-e")
        return args[:shell] + args[shell + 2:-2] + [str(source) + "/", args[-1]]

    monkeypatch.setattr(snapshot, "rsync_command", local)
    cfg = {"snapshots_path": str(tmp_path / "snapshots"), "known_hosts": "/dev/null", "xattrs": False}
    site = {"site": "s", "host": "local", "document_root": str(source), "ssh_key": "k"}
    os.makedirs(cfg["snapshots_path"])
    first = snapshot.snapshot_site(site, cfg, SUNDAY, 0)
    assert (first["status"], first["kind"], first["files"]) == ("complete", "full", 3)
    write(str(source / "index.php"), "<?php // changed", mtime=1_700_000_500)
    second = snapshot.snapshot_site(site, cfg, MONDAY, 0)
    assert (second["kind"], second["base"], second["files"], second["linked_files"]) == (
        "incremental", "20260104T030000Z", 3, 2)
    assert sorted(os.listdir(cfg["snapshots_path"] + "/s")) == [
        "20260104T030000Z", "20260104T030000Z.json", "20260105T030000Z", "20260105T030000Z.json"]
    with pytest.raises(snapshot.SiteFailed, match="not older"):
        snapshot.snapshot_site(site, cfg, SUNDAY, 0)
