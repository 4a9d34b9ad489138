"""Capacity gating on the lab: the primary's volume filled past 70, 80 and 90 %, then freed."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

FILL = "/mnt/chom-storage/capacity-test-fill"


def fill_to(lab, host: str, percent: int) -> None:
    """Grow or shrink one preallocated file so the volume is ``percent`` used."""
    lab.ssh(host, f"touch {FILL}; "
                  f"have=$(du --block-size=1 {FILL} | cut -f1); "
                  "set -- $(stat -f -c '%b %f %S' /mnt/chom-storage); "
                  f"want=$(( $1 * $3 * {percent} / 100 - ($1 - $2) * $3 + have )); "
                  "[ $want -ge 0 ] || want=0; "
                  f"if [ $want -lt $have ]; then truncate -s $want {FILL}; "
                  f"else fallocate -o $have -l $((want - have + 1)) {FILL}; fi; sync")


def host_row(lab, host: str):
    hostvars = lab.hostvars[lab.primary]
    with psycopg.connect(host="127.0.0.1", port=hostvars["control_plane_db_port"], dbname="chom",
                         user="chom_storage", password=lab.secrets["lab_db_password"]) as conn:
        return conn.execute("SELECT role, capacity_state, health_status, used_capacity_bytes, capacity_reasons"
                            " FROM storage_hosts WHERE hostname = %s", (host,)).fetchone()


def placement_of(lab, name: str):
    """Where placement would put a new site now (a fresh site ID each call, removed afterwards)."""
    site = f"{name}-{uuid.uuid4().hex[:8]}"
    result = lab.playbook("-i", "inventories/lab", "-e", f"probe_site={site}", "tests/e2e/place_probe.yml")
    match = re.search(r"PLACEMENT=(\S+)", result.stdout)
    return match.group(1) if match else result.stdout[-1500:]


@pytest.fixture
def filled(lab):
    yield lambda percent: fill_to(lab, lab.primary, percent)
    lab.ssh(lab.primary, f"rm -f {FILL}")
    lab.playbook("playbooks/capacity.yml")


def test_states_rows_metrics_and_placement_follow_the_fill(lab, filled):
    seen = []
    for percent, state, role in ((71, "warning", "active"), (81, "critical", "active"),
                                 (91, "full", "unavailable"), (85, "critical", "unavailable")):
        filled(percent)
        run = lab.playbook("playbooks/capacity.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        row = host_row(lab, lab.primary)
        seen.append((percent, row[0], row[1]))
        assert (row[0], row[1], row[2]) == (role, state, state), seen
        metrics = lab.ssh(lab.primary, "cat /var/lib/prometheus/node-exporter/chom_storage_capacity.prom").stdout
        used = float(re.search(r'chom_storage_disk_usage_percent\{mountpoint="/mnt/chom-storage"\} (\S+)',
                               metrics).group(1))
        assert abs(used - percent) < 1.5
        assert f'chom_storage_capacity_state{{state="{state}"}} 1' in metrics
        if state in ("critical", "full"):
            assert placement_of(lab, f"site-cap-{percent}").startswith("NONE"), "a full host took a site"
    # Full -> critical keeps it out (hysteresis); only back below critical does it return.
    filled(10)
    assert lab.playbook("playbooks/capacity.yml").returncode == 0
    assert host_row(lab, lab.primary)[:2] == ("active", "normal")
    assert placement_of(lab, "site-cap-back") == lab.primary


def test_replica_is_never_chosen_for_new_sites(lab):
    assert placement_of(lab, "site-cap-replica") == lab.primary


def test_inodes_past_85_percent_make_the_host_full_while_bytes_stay_low(lab):
    many = "/mnt/chom-storage/inode-test"
    out = lab.ssh(lab.primary, "stat -f -c '%c %d' /mnt/chom-storage").stdout.split()
    total, free = int(out[0]), int(out[1])
    wanted = int(total * 0.86) - (total - free) + 1
    assert 0 < wanted < 200_000, f"the lab volume has {total} inodes; is it formatted with maxpct=2?"
    try:
        lab.ssh(lab.primary, f"mkdir -p {many} && cd {many} && seq 1 {wanted} | xargs touch")
        run = lab.playbook("playbooks/capacity.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        role, state, health, _, reasons = host_row(lab, lab.primary)
        assert (role, state) == ("unavailable", "full")
        assert any(r.startswith("inodes ") for r in reasons) and not any(r.startswith("disk ") for r in reasons)
        metrics = lab.ssh(lab.primary, "cat /var/lib/prometheus/node-exporter/chom_storage_capacity.prom").stdout
        inodes = float(re.search(r'chom_storage_inode_usage_percent\{mountpoint="/mnt/chom-storage"\} (\S+)',
                                 metrics).group(1))
        assert inodes > 85
        assert placement_of(lab, "site-inodes").startswith("NONE")
    finally:
        lab.ssh(lab.primary, f"rm -rf {many}")
    assert lab.playbook("playbooks/capacity.yml").returncode == 0
    assert host_row(lab, lab.primary)[:2] == ("active", "normal")
    assert placement_of(lab, "site-inodes-back") == lab.primary
