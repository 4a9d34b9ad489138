"""The lab hosts as provisioned by site.yml: volume, engine, credentials, control plane, idempotence."""

from __future__ import annotations

import subprocess
import time

import psycopg


def test_site_yml_second_run_reports_no_change(lab):
    result = lab.playbook("playbooks/site.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    recap = result.stdout[result.stdout.index("PLAY RECAP"):]
    for host in (lab.primary, lab.replica):
        line = next(line for line in recap.splitlines() if line.startswith(host))
        assert "changed=0" in line and "failed=0" in line, line


def test_admin_secret_with_shell_characters_works_on_both_engines(lab):
    secret = lab.secrets["lab_admin_secret_key"]
    assert all(ch in secret for ch in (" ", '"', "'", "$", "!"))
    for host in (lab.primary, lab.replica):
        names = {b["Name"] for b in lab.s3(host, "admin").list_buckets()["Buckets"]}
        assert {"chom-backups", "chom-media", "chom-archives"} <= names


def test_credentials_file_is_private_and_secret_stays_out_of_the_process_list(lab):
    mode = lab.ssh(lab.primary, "stat -c '%a %U' /etc/chom-storage/s3-identities.json").stdout.split()
    assert mode == ["600", "chom-s3"]
    processes = lab.ssh(lab.primary, "ps -eo args").stdout
    assert lab.secrets["lab_admin_secret_key"] not in processes
    assert lab.secrets["lab_replication_secret_key"] not in processes


def test_volume_is_mounted_again_after_the_host_restarts(lab):
    host = lab.replica
    uuid_before = lab.ssh(host, "findmnt -n -o UUID /mnt/chom-storage").stdout.strip()
    # A lab host is a container: restarting it boots systemd again, as a reboot would.
    subprocess.run(["podman", "restart", host], check=True, capture_output=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(1)
        probe = lab.ssh(host, "systemctl is-active chom-object-store.service", check=False)
        if probe.stdout.strip() == "active":
            break
    mounted = lab.ssh(host, "findmnt -n -o UUID,FSTYPE /mnt/chom-storage").stdout.split()
    assert mounted == [uuid_before, "xfs"]
    for _ in range(30):
        try:
            lab.s3(host, "admin").list_buckets()
            break
        except Exception:  # noqa: BLE001 - the engine may still be starting
            time.sleep(1)
    assert {b["Name"] for b in lab.s3(host, "admin").list_buckets()["Buckets"]} >= {"chom-backups"}


def test_storage_hosts_registered_once_each(lab):
    hostvars = lab.hostvars[lab.primary]
    with psycopg.connect(host="127.0.0.1", port=hostvars["control_plane_db_port"], dbname="chom",
                         user="chom_storage", password=lab.secrets["lab_db_password"]) as conn:
        rows = conn.execute("SELECT hostname, host(ip_address), role, total_capacity_bytes FROM storage_hosts"
                            " ORDER BY hostname").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (lab.primary, lab.ip(lab.primary), "active"),
        (lab.replica, lab.ip(lab.replica), "replica"),
    ]
    assert all(r[3] > 1_000_000_000 for r in rows)
