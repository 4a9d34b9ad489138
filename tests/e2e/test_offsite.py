"""The daily offsite copy on the lab: a primary's validated dump and full backup reach the lab's
archive target (one more SeaweedFS on the controller) as ciphertext, and a restore gives the bytes
back."""

from __future__ import annotations

import gzip
import hashlib
import uuid
from datetime import UTC, datetime

import boto3
import psycopg
from botocore.config import Config

from ansible_collections.chom.storage.plugins.module_utils.offsite import parse_master_key, restore_to_file

OFFSITE = "http://127.0.0.1:48305"


def offsite_client(lab):
    return boto3.client("s3", endpoint_url=OFFSITE, aws_access_key_id=lab.secrets["lab_offsite_access_key"],
                        aws_secret_access_key=lab.secrets["lab_offsite_secret_key"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def test_offsite_copy_is_ciphertext_and_restores(lab, tmp_path):
    site = f"site-off-{uuid.uuid4().hex[:6]}"
    hostvars = lab.hostvars[lab.primary]
    with psycopg.connect(host="127.0.0.1", port=hostvars["control_plane_db_port"], dbname="chom", user="chom_storage",
                         password=lab.secrets["lab_db_password"], autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id, tier, storage_host_id) SELECT %s, 'pro', id FROM storage_hosts"
                     " WHERE hostname = %s", (site, lab.primary))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Above the validation's size floor (1 KiB compressed): rows that do not compress to nothing.
    rows = "".join(f"INSERT INTO wp_posts VALUES ({n}, '{uuid.uuid4().hex}');\n" for n in range(400))
    dump_text = ("-- MySQL dump\nCREATE TABLE wp_posts (id int, title text);\n" + rows
                 + "-- Dump completed on 2026-12-04\n").encode()
    dump = gzip.compress(dump_text)
    dump_key = f"{site}/db/{stamp}/dump.sql.gz"
    client = lab.s3(lab.primary, "admin")
    client.put_object(Bucket="chom-backups", Key=dump_key, Body=dump)

    run = lab.playbook("-i", "inventories/lab", "playbooks/offsite.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    for secret in ("lab_offsite_secret_key", "lab_offsite_encryption_key", "lab_admin_secret_key"):
        assert lab.secrets[secret] not in run.stdout
    # The dump was validated on the storage host before it was copied.
    assert client.get_object(Bucket="chom-backups", Key=f"{site}/db/{stamp}/.chom/valid")

    offsite = offsite_client(lab)
    name = f"chom-backups/{dump_key}"
    stored = offsite.get_object(Bucket="chom-offsite", Key=f"{lab.primary}/{name}")["Body"].read()
    assert stored != dump and dump[:64] not in stored and b"CREATE TABLE" not in stored
    assert len(stored) > len(dump)

    # Restored with the module's own code, in this process (no key on a command line).
    target = tmp_path / "restored.sql.gz"
    key = parse_master_key(lab.secrets["lab_offsite_encryption_key"])
    restored = restore_to_file(offsite, "chom-offsite", f"{lab.primary}/{name}", key, str(target),
                               prefix=f"{lab.primary}/")
    assert restored["sha256"] == hashlib.sha256(dump).hexdigest()
    assert target.read_bytes() == dump

    again = lab.playbook("-i", "inventories/lab", "playbooks/offsite.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-3000:]
