"""The MinIO engine's rendered environment file and unit, read by systemd itself on a lab host."""

from __future__ import annotations

import json
import shlex

SECRET = 'min io "dq" \'sq\' $dollar !bang \\back'


def test_minio_secret_survives_systemd_and_the_unit_verifies(lab):
    host = lab.replica
    extra = {"target": host, "object_store_engine": "minio", "object_store_admin_secret_key": SECRET,
             "object_store_admin_access_key": "chomminio", "object_store_listen_address": lab.ip(host),
             "object_store_bin_dir": "/tmp/chom-minio-render", "object_store_config_dir": "/tmp/chom-minio-render",
             "__object_store_binary": "/tmp/chom-minio-render/minio"}
    run = lab.playbook("-i", "inventories/lab", "tests/e2e/minio_render.yml", "-e", json.dumps(extra))
    assert run.returncode == 0, run.stdout[-2000:]
    assert SECRET not in run.stdout + run.stderr
    try:
        mode = lab.ssh(host, "stat -c %a /tmp/chom-minio-render/minio.env").stdout.strip()
        assert mode == "600"
        # systemd parses the EnvironmentFile the way the service would get it.
        printed = lab.ssh(host, "systemd-run --quiet --wait --pipe "
                                "-p EnvironmentFile=/tmp/chom-minio-render/minio.env "
                                "/usr/bin/printenv MINIO_ROOT_PASSWORD MINIO_ROOT_USER").stdout
        assert printed.splitlines() == [SECRET, "chomminio"]

        unit = lab.ssh(host, "cat /tmp/chom-minio-render/chom-object-store.service").stdout
        assert "RequiresMountsFor=/mnt/chom-storage/objects" in unit
        assert "ExecStartPre=/usr/local/libexec/chom-storage/check-on-volume /mnt/chom-storage" in unit
        assert "User=chom-s3" in unit and "EnvironmentFile=/tmp/chom-minio-render/minio.env" in unit
        assert f"--address {lab.ip(host)}:8333" in unit
        lab.ssh(host, "printf '#!/bin/sh\\n' > /tmp/chom-minio-render/minio; chmod 755 /tmp/chom-minio-render/minio")
        unit_path = shlex.quote("/tmp/chom-minio-render/chom-object-store.service")
        verify = lab.ssh(host, f"systemd-analyze verify {unit_path}", check=False)
        assert verify.returncode == 0, verify.stderr
    finally:
        lab.ssh(host, "rm -rf /tmp/chom-minio-render", check=False)
