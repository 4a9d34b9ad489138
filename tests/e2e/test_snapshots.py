"""File-tier snapshots on the lab: a storage host pulls a site from the customer VPS (vps-1).

The tests run in order on one site of the lab: a full snapshot, an incremental one, then the
failures (base on another filesystem, unreadable source), a vanished file, a paused site and the
next Sunday's full snapshot. The run's time is injected (--now), so the weekday is chosen.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time

import psycopg
import pytest

SITE = "site-001"
ROOT = f"/var/www/{SITE}"
PROGRAM = "/usr/local/libexec/chom-storage/chom-snapshot --config /etc/chom-storage/snapshot/snapshot.json"
SNAPSHOTS = f"/mnt/chom-storage/snapshots/{SITE}"
SUNDAY, MONDAY, TUESDAY = "2026-01-04T03:00:00Z", "2026-01-05T03:00:00Z", "2026-01-06T03:00:00Z"
WEDNESDAY, THURSDAY, NEXT_SUNDAY = "2026-01-07T03:00:00Z", "2026-01-08T03:00:00Z", "2026-01-11T03:00:00Z"
RESULTS = "/var/lib/chom-storage/backup-results.json"
SIDECAR_KEYS = {"kind", "status", "base", "files", "bytes", "linked_files", "started", "finished"}

# Printed by both sides: every entry below a root with type, mode, owner, size, content hash, link
# target, extended attributes, its hard-link group inside the tree, and its inode.
LISTING = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
entries, groups = {}, {}
for directory, dirs, files in os.walk(root):
    for name in sorted(dirs + files):
        path = os.path.join(directory, name)
        info = os.lstat(path)
        rel = os.path.relpath(path, root)
        item = {"mode": oct(info.st_mode), "uid": info.st_uid, "gid": info.st_gid,
                "xattrs": {k: os.getxattr(path, k, follow_symlinks=False).hex()
                           for k in sorted(os.listxattr(path, follow_symlinks=False))}}
        if stat.S_ISREG(info.st_mode):
            item.update(size=info.st_size, mtime=info.st_mtime_ns,
                        sha256=hashlib.sha256(open(path, "rb").read()).hexdigest(),
                        group=groups.setdefault((info.st_dev, info.st_ino), rel), inode=[info.st_dev, info.st_ino])
        elif stat.S_ISLNK(info.st_mode):
            item["target"] = os.readlink(path)
        entries[rel] = item
print(json.dumps(entries))
"""


def listing(lab, host: str, root: str) -> dict:
    script = base64.b64encode(LISTING.encode()).decode()
    out = lab.ssh(host, f"echo {script} | base64 -d > /tmp/chom-listing.py && python3 /tmp/chom-listing.py '{root}'")
    return json.loads(out.stdout)


def comparable(entries: dict) -> dict:
    """What must be identical between the VPS and a snapshot (inodes differ by nature)."""
    return {path: {k: v for k, v in item.items() if k != "inode"} for path, item in entries.items()}


def db(lab):
    return psycopg.connect(host="127.0.0.1", port=int(lab.hostvars[lab.primary]["control_plane_db_port"]),
                           dbname="chom", user="chom_storage", password=lab.secrets["lab_db_password"],
                           autocommit=True)


def set_paused(lab, site: str, paused: bool, reason: str | None = None) -> None:
    with db(lab) as conn:
        conn.execute("UPDATE sites SET backups_paused = %s, backups_paused_reason = %s WHERE id = %s",
                     (paused, reason, site))


def recap_changes(output: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", output, re.M)}


@pytest.fixture(scope="module")
def snap(lab):
    """The site's storage host, with the role applied and no snapshot of the site yet."""
    vps = "vps-1"
    assert vps in lab.hostvars, "the lab has no customer VPS (run `make lab-up`)"
    with db(lab) as conn:
        conn.execute("INSERT INTO sites (id, tier) VALUES ('site-001', 'pro'), ('site-002', 'pro')"
                     " ON CONFLICT (id) DO NOTHING")
    placed = lab.playbook("playbooks/place_sites.yml")
    assert placed.returncode == 0, placed.stdout[-3000:]
    set_paused(lab, SITE, False)
    set_paused(lab, "site-002", False)
    with db(lab) as conn:
        host = conn.execute("SELECT h.hostname FROM sites s JOIN storage_hosts h ON h.id = s.storage_host_id"
                            " WHERE s.id = %s", (SITE,)).fetchone()[0]

    first = lab.playbook("playbooks/snapshot_sites.yml", "-e", "snapshot_run_now=false")
    assert first.returncode == 0, first.stdout[-4000:]
    second = lab.playbook("playbooks/snapshot_sites.yml", "-e", "snapshot_run_now=false")
    assert second.returncode == 0, second.stdout[-4000:]
    assert set(recap_changes(second.stdout).values()) == {0}, second.stdout[-3000:]

    lab.ssh(vps, f"rm -rf /root/{SITE}.orig && cp -a {ROOT} /root/{SITE}.orig")
    lab.ssh(host, f"rm -rf {SNAPSHOTS}")
    # The failures these tests provoke must not count in the host's backup success rate, which the
    # capacity check turns into a full host below 95 %.
    lab.ssh(host, f"if [ -f {RESULTS} ]; then cp -p {RESULTS} {RESULTS}.e2e-saved; else rm -f {RESULTS}.e2e-saved; fi")
    yield {"host": host, "vps": vps}
    lab.ssh(host, f"if [ -f {RESULTS}.e2e-saved ]; then mv {RESULTS}.e2e-saved {RESULTS}; else rm -f {RESULTS}; fi")
    lab.ssh(vps, f"rm -rf {ROOT} {ROOT}.away && cp -a /root/{SITE}.orig {ROOT} && rm -rf /root/{SITE}.orig")
    set_paused(lab, SITE, False)


def run(lab, snap, now: str, extra: str = "", check: bool = False) -> tuple[int, dict, str]:
    result = lab.ssh(snap["host"], f"{PROGRAM} --site {SITE} --now {now} --json {extra}", check=False)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["locked"] is False
    return result.returncode, report["results"][0], result.stdout


def snapshot_dir_names(lab, snap) -> list[str]:
    return sorted(lab.ssh(snap["host"], f"ls -A {SNAPSHOTS}").stdout.split())


def sidecar(lab, snap, stamp: str) -> dict:
    return json.loads(lab.ssh(snap["host"], f"cat {SNAPSHOTS}/{stamp}.json").stdout)


def test_first_snapshot_is_full_and_identical_to_the_site(lab, snap):
    code, result, out = run(lab, snap, SUNDAY)
    assert code == 0, out
    assert (result["kind"], result["base"], result["stamp"]) == ("full", None, "20260104T030000Z")
    written = sidecar(lab, snap, "20260104T030000Z")
    assert set(written) == SIDECAR_KEYS
    assert (written["kind"], written["status"], written["base"], written["linked_files"]) == (
        "full", "complete", None, 0)

    source = listing(lab, snap["vps"], ROOT)
    copy = listing(lab, snap["host"], f"{SNAPSHOTS}/20260104T030000Z")
    assert comparable(copy) == comparable(source)
    # The seeded content really has what must survive: 0600 secrets, odd names, a hard-linked pair.
    assert copy["wp-config.php"]["mode"] == "0o100600"
    assert "wp-content/uploads/2024/05/café menu – été.txt" in copy
    assert copy["wp-content/cache/same-as-original.bin"]["inode"] == copy["wp-content/uploads/2024/05/original.bin"][
        "inode"]
    assert written["files"] == sum(1 for item in copy.values() if "sha256" in item)
    assert lab.ssh(snap["host"], f"stat -c %a {os.path.dirname(SNAPSHOTS)}").stdout.strip() == "700"


def test_next_day_is_incremental_with_unchanged_files_linked(lab, snap):
    lab.ssh(snap["vps"], f"echo '// edited' >> {ROOT}/index.php && "
                         f"printf 'new\\n' > '{ROOT}/wp-content/uploads/2024/05/new upload é.txt' && "
                         f"chown 33:33 '{ROOT}/wp-content/uploads/2024/05/new upload é.txt'")
    code, result, out = run(lab, snap, MONDAY)
    assert code == 0, out
    assert (result["kind"], result["base"]) == ("incremental", "20260104T030000Z")

    source = listing(lab, snap["vps"], ROOT)
    base = listing(lab, snap["host"], f"{SNAPSHOTS}/20260104T030000Z")
    copy = listing(lab, snap["host"], f"{SNAPSHOTS}/20260105T030000Z")
    assert comparable(copy) == comparable(source)
    changed = {"index.php", "wp-content/uploads/2024/05/new upload é.txt"}
    files = [path for path, item in copy.items() if "sha256" in item]
    for path in files:
        if path in changed:
            assert copy[path]["inode"] != base.get(path, {}).get("inode"), path
        else:
            assert copy[path]["inode"] == base[path]["inode"], f"{path} is not a hard link to the base"
    written = sidecar(lab, snap, "20260105T030000Z")
    assert written["kind"] == "incremental" and written["status"] == "complete"
    assert written["files"] == len(files)
    assert written["linked_files"] == len(files) - len(changed)


def test_base_on_another_filesystem_fails_and_publishes_nothing(lab, snap):
    # The newest snapshot moved to the root disk and linked back: --link-dest cannot hard-link across.
    # rsync itself fails here (exit 23: it cannot hard-link the site's symbolic link); the link
    # check behind it is covered by the unit tests.
    monday = f"{SNAPSHOTS}/20260105T030000Z"
    lab.ssh(snap["host"], f"rm -rf /root/moved && mv {monday} /root/moved && ln -s /root/moved {monday}")
    try:
        before = snapshot_dir_names(lab, snap)
        code, result, out = run(lab, snap, TUESDAY)
        assert code == 1, out
        assert result["status"] == "failed"
        assert "hard links" in result["error"] or "cross-device" in result["error"], result["error"]
        assert snapshot_dir_names(lab, snap) == before
    finally:
        lab.ssh(snap["host"], f"rm {monday} && mv /root/moved {monday}")


def test_unreadable_source_fails_loudly_and_publishes_nothing(lab, snap):
    lab.ssh(snap["vps"], f"mv {ROOT} {ROOT}.away")
    try:
        before = snapshot_dir_names(lab, snap)
        code, result, out = run(lab, snap, WEDNESDAY)
        assert code == 1, out
        assert result["status"] == "failed" and re.search(r"failed \(exit (?!24\))\d+\)", result["error"]), result
        assert "Restricted directory does not exist" in result["error"], result
        assert "snapshot failed, nothing published" in out
        assert snapshot_dir_names(lab, snap) == before
    finally:
        lab.ssh(snap["vps"], f"mv {ROOT}.away {ROOT}")


def test_file_vanishing_during_the_transfer_is_a_warning(lab, snap):
    # A 3 MB file sent first at 1 MB/s leaves time to delete a file rsync has listed but not sent.
    lab.ssh(snap["vps"], f"head -c 3000000 /dev/urandom > {ROOT}/aaa-large.bin && echo bye > {ROOT}/zzz-vanishing.txt")
    state = os.environ.get("CHOM_LAB_STATE", "/var/lib/chom-lab")
    command = f"{PROGRAM} --site {SITE} --now {THURSDAY} --json --bwlimit 1000"
    proc = subprocess.Popen(
        ["ssh", "-i", f"{state}/ssh/id_ed25519", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={state}/known_hosts",
         f"root@{lab.ip(snap['host'])}", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            if lab.ssh(snap["host"], f"find {SNAPSHOTS}/20260108T030000Z.partial -maxdepth 1 -name '.aaa-large*'",
                       check=False).stdout.strip():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the transfer of the large file never started")
        lab.ssh(snap["vps"], f"rm {ROOT}/zzz-vanishing.txt")
        out, err = proc.communicate(timeout=60)
    finally:
        lab.ssh(snap["vps"], f"rm -f {ROOT}/aaa-large.bin {ROOT}/zzz-vanishing.txt")
    assert proc.returncode == 0, out + err
    result = json.loads(out.strip().splitlines()[-1])["results"][0]
    assert result["status"] == "complete" and result["kind"] == "incremental"
    assert result["warnings"] == ["some files vanished on the VPS during the transfer"]
    assert "warning: some files vanished" in out
    assert sidecar(lab, snap, "20260108T030000Z")["status"] == "complete"


def test_paused_site_is_skipped_and_reported(lab, snap):
    set_paused(lab, SITE, True, "migration to storage-9")
    try:
        before = snapshot_dir_names(lab, snap)
        result = lab.playbook("playbooks/snapshot_sites.yml")
        assert result.returncode == 0, result.stdout[-4000:]
        assert "site-001: backups paused (migration to storage-9)" in result.stdout
        assert "site-001: skipped: backups paused: migration to storage-9" in result.stdout
        assert snapshot_dir_names(lab, snap) == before
    finally:
        set_paused(lab, SITE, False)
        restored = lab.playbook("playbooks/snapshot_sites.yml", "-e", "snapshot_run_now=false")
        assert restored.returncode == 0, restored.stdout[-3000:]


def test_next_sunday_is_a_self_contained_full_snapshot(lab, snap):
    code, result, out = run(lab, snap, NEXT_SUNDAY)
    assert code == 0, out
    assert (result["kind"], result["base"], result["linked_files"]) == ("full", None, 0)
    previous = listing(lab, snap["host"], f"{SNAPSHOTS}/20260108T030000Z")
    copy = listing(lab, snap["host"], f"{SNAPSHOTS}/20260111T030000Z")
    assert comparable(copy) == comparable(listing(lab, snap["vps"], ROOT))
    shared = {tuple(item["inode"]) for item in copy.values() if "inode" in item} & {
        tuple(item["inode"]) for item in previous.values() if "inode" in item}
    assert not shared


def test_bad_site_list_is_refused_before_any_host_changes(lab, snap):
    config = "/etc/chom-storage/snapshot/snapshot.json"
    before = lab.ssh(snap["host"], f"sha256sum {config}").stdout
    bad = json.dumps({"customer_vps_sites": [{"site": "Bad Site", "document_root": "/var/www/ok"},
                                             {"site": "ok-site", "document_root": "var/www/relative"}]})
    result = lab.playbook("playbooks/snapshot_sites.yml", "-e", bad)
    assert result.returncode != 0
    assert "Customer VPS sites refused" in result.stdout
    assert "'Bad Site'" in result.stdout and "'var/www/relative'" in result.stdout
    assert "Install the snapshot program" not in result.stdout
    assert lab.ssh(snap["host"], f"sha256sum {config}").stdout == before
