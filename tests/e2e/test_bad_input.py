"""Bad settings: each run of site.yml fails with a clear message and changes nothing on a host."""

from __future__ import annotations

import json

import pytest

# Configuration, units, binaries and the volume layout; engine data and replicated files change on
# their own (timer runs) and are left out.
FINGERPRINT = (
    "find /etc/chom-storage /etc/systemd/system /usr/local/bin /usr/local/libexec /mnt/chom-storage "
    "-maxdepth 2 -not -path '/mnt/chom-storage/objects*' -not -path '/mnt/chom-storage/files*' "
    "-printf '%p %s %m %u %T@\\n' 2>/dev/null | sort | sha256sum; "
    "findmnt -n -o SOURCE,UUID /mnt/chom-storage; systemctl is-active chom-object-store.service"
)

BAD_SETTINGS = [
    ({"replication_replica_path": ""}, "replication_replica_path"),
    ({"replication_replica_path": "   "}, "replication_replica_path"),
    ({"replication_replica_path": "/"}, "replication_replica_path"),
    ({"xfs_volume_label": "other-fs"}, "a mounted device is never formatted"),
    ({"object_store_volume_path": "/srv", "object_store_data_path": "/srv/objects"}, "mountpoint"),
    ({"object_store_admin_secret_key": "abcde"}, "8-128 printable"),
    ({"object_store_admin_secret_key": "long enough ${HOME} secret"}, "without '${'"),
    ({"object_store_engine": "ceph"}, "must be 'seaweedfs' or 'minio'"),
    ({"object_store_engine": "minio"}, "There is no default MinIO download"),
]


@pytest.mark.parametrize("settings,message", BAD_SETTINGS, ids=[json.dumps(s) for s, _ in BAD_SETTINGS])
def test_bad_setting_is_refused_before_any_change(lab, settings, message):
    hosts = (lab.primary, lab.replica)
    before = {host: lab.ssh(host, FINGERPRINT).stdout for host in hosts}

    result = lab.playbook("playbooks/site.yml", "-e", json.dumps(settings))

    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-4000:]
    recap = result.stdout[result.stdout.index("PLAY RECAP"):]
    for host in hosts:
        line = next(line for line in recap.splitlines() if line.startswith(host))
        assert "changed=0" in line, line
        assert lab.ssh(host, FINGERPRINT).stdout == before[host]
    for secret in ("lab_admin_secret_key", "lab_app_secret_key", "lab_replication_secret_key", "lab_db_password"):
        assert lab.secrets[secret] not in result.stdout + result.stderr
