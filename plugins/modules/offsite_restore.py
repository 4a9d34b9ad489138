#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: offsite_restore
short_description: Decrypt one offsite copy, verify it, and write the plaintext to a file or a bucket
description:
  - Reads one copy written by M(chom.storage.offsite_copy), decrypts it as a stream, checks every
    chunk's authentication, the item name sealed in its header, and the plaintext SHA-256 and size
    recorded in its metadata, then writes the plaintext to O(dest) or to O(dest_bucket).
  - The destination appears only once the whole copy has been verified; a file is written to a
    temporary name beside O(dest) and renamed, an object is completed only after the check.
  - A destination that already holds the same content (same SHA-256) is left alone; one with
    other content is replaced only with O(force).
version_added: 0.1.0
author: CHOM platform team
options:
  offsite_endpoint_url:
    description: S3 endpoint of the archive target.
    type: str
    required: true
  offsite_access_key:
    description: Access key of the archive target.
    type: str
    required: true
  offsite_secret_key:
    description: Secret key of the archive target. Never logged.
    type: str
    required: true
  offsite_region:
    description: Signing region of the archive target.
    type: str
    default: us-east-1
  offsite_bucket:
    description: Bucket on the archive target.
    type: str
    required: true
  offsite_prefix:
    description: The O(chom.storage.offsite_copy#module:offsite_prefix) the copy was made with.
    type: str
    default: ""
  name:
    description:
      - Source name of the copy, C(<bucket>/<key>), for example
        C(chom-backups/site-7/db/20260101T020000Z/dump.sql.gz) (the C(key) that
        M(chom.storage.offsite_copy) returns). The copy is C(<offsite_prefix><name>).
    type: str
    required: true
  encryption_key:
    description: The master key the copy was made with (base64 of 32 bytes). Never logged; keep it in Ansible Vault.
    type: str
    required: true
  encryption_key_id:
    description: ID of O(encryption_key). When given, a copy made with another key ID is refused up front.
    type: str
  dest:
    description: File to write the plaintext to (mode 0600).
    type: path
  dest_endpoint_url:
    description: S3 endpoint to restore to, for example the storage host's.
    type: str
  dest_access_key:
    description: Access key of the destination S3 endpoint.
    type: str
  dest_secret_key:
    description: Secret key of the destination S3 endpoint. Never logged.
    type: str
  dest_region:
    description: Signing region of the destination S3 endpoint.
    type: str
    default: us-east-1
  dest_bucket:
    description: Bucket to restore to.
    type: str
  dest_key:
    description: Key to restore to. Default, the key part of O(name), so the item returns to its place.
    type: str
  force:
    description: Replace a destination that holds other content.
    type: bool
    default: false
  multipart_threshold_mib:
    description: Restored objects larger than this many MiB are uploaded in parts.
    type: int
    default: 16
  part_size_mib:
    description: Size of each uploaded part in MiB (at least 5).
    type: int
    default: 16
attributes:
  check_mode:
    support: full
    details: Checks that the copy exists and names the right key, and reports whether the destination would change.
  diff_mode:
    support: none
requirements:
  - boto3 and cryptography on the host running the module (the controller)
notes:
  - Copies in C(GLACIER) or C(DEEP_ARCHIVE) must first be restored on the archive target itself.
seealso:
  - module: chom.storage.offsite_copy
"""

EXAMPLES = r"""
- name: Restore a database dump to a file on the controller
  chom.storage.offsite_restore:
    offsite_endpoint_url: https://s3.archive.example.net
    offsite_access_key: "{{ offsite_access_key }}"
    offsite_secret_key: "{{ offsite_secret_key }}"
    offsite_bucket: chom-offsite
    offsite_prefix: storage-01/
    name: chom-backups/site-7/db/20260101T020000Z/dump.sql.gz
    encryption_key: "{{ vault_offsite_encryption_key }}"
    encryption_key_id: offsite-2026
    dest: /srv/restore/site-7-dump.sql.gz
  delegate_to: localhost

- name: Put a full backup back on a storage host
  chom.storage.offsite_restore:
    offsite_endpoint_url: https://s3.archive.example.net
    offsite_access_key: "{{ offsite_access_key }}"
    offsite_secret_key: "{{ offsite_secret_key }}"
    offsite_bucket: chom-offsite
    name: chom-backups/site-7/full/20260104T010000Z/files.tar.gz
    encryption_key: "{{ vault_offsite_encryption_key }}"
    dest_endpoint_url: http://10.0.0.12:8333
    dest_access_key: "{{ object_store_admin_access_key }}"
    dest_secret_key: "{{ object_store_admin_secret_key }}"
    dest_bucket: chom-backups
  delegate_to: localhost
"""

RETURN = r"""
sha256:
  description: SHA-256 of the plaintext (as recorded in the copy's metadata in check mode).
  returned: always
  type: str
size:
  description: Size of the plaintext in bytes.
  returned: always
  type: int
destination:
  description: The file, or C(<dest_bucket>/<dest_key>), written (or that would be).
  returned: always
  type: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.offsite import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    META_SHA256,
    META_SIZE,
    MIN_PART_SIZE,
    OffsiteError,
    check_key_id,
    file_sha256,
    head,
    parse_master_key,
    restore_to_bucket,
    restore_to_file,
)
from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    DEFAULT_REGION,
    HAS_BOTO3,
    make_client,
)

MIB = 1 << 20


def argument_spec() -> dict:
    return dict(
        offsite_endpoint_url=dict(type="str", required=True),
        offsite_access_key=dict(type="str", required=True, no_log=True),
        offsite_secret_key=dict(type="str", required=True, no_log=True),
        offsite_region=dict(type="str", default=DEFAULT_REGION),
        offsite_bucket=dict(type="str", required=True),
        offsite_prefix=dict(type="str", default="", no_log=False),
        name=dict(type="str", required=True),
        encryption_key=dict(type="str", required=True, no_log=True),
        encryption_key_id=dict(type="str", no_log=False),
        dest=dict(type="path"),
        dest_endpoint_url=dict(type="str"),
        dest_access_key=dict(type="str", no_log=True),
        dest_secret_key=dict(type="str", no_log=True),
        dest_region=dict(type="str", default=DEFAULT_REGION),
        dest_bucket=dict(type="str"),
        dest_key=dict(type="str", no_log=False),
        force=dict(type="bool", default=False),
        multipart_threshold_mib=dict(type="int", default=16),
        part_size_mib=dict(type="int", default=16),
    )


def existing_sha256(module, dest_client, dest_key):
    """SHA-256 of what the destination holds now: None when empty, "" when unknown (an object without it)."""
    p = module.params
    if p["dest"]:
        return file_sha256(p["dest"])
    answer = head(dest_client, p["dest_bucket"], dest_key)
    if answer is None:
        return None
    return answer.get("Metadata", {}).get(META_SHA256, "")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(), supports_check_mode=True,
        mutually_exclusive=[("dest", "dest_bucket")], required_one_of=[("dest", "dest_bucket")],
        required_by={"dest_bucket": ("dest_endpoint_url", "dest_access_key", "dest_secret_key")},
    )
    for package, present, error in (("boto3", HAS_BOTO3, BOTO3_IMPORT_ERROR),
                                    ("cryptography", HAS_CRYPTOGRAPHY, CRYPTOGRAPHY_IMPORT_ERROR)):
        if not present:
            module.fail_json(msg=f"The {package} Python package is required on the host running offsite_restore",
                             exception=str(error))
    p = module.params
    if p["part_size_mib"] * MIB < MIN_PART_SIZE or p["multipart_threshold_mib"] < 1:
        module.fail_json(msg="part_size_mib must be at least 5 and multipart_threshold_mib at least 1")
    bucket_and_key = p["name"].split("/", 1)
    if len(bucket_and_key) != 2 or not all(bucket_and_key):
        module.fail_json(msg=f"name {p['name']!r} must be <bucket>/<key>")
    try:
        key = parse_master_key(p["encryption_key"])
        key_id = check_key_id(p["encryption_key_id"]) if p["encryption_key_id"] else None
    except OffsiteError as exc:
        module.fail_json(msg=str(exc))
    offsite_key = p["offsite_prefix"] + p["name"]
    dest_key = p["dest_key"] or bucket_and_key[1]
    destination = p["dest"] or f"{p['dest_bucket']}/{dest_key}"

    offsite = make_client(p["offsite_endpoint_url"], p["offsite_access_key"], p["offsite_secret_key"],
                          p["offsite_region"])
    dest_client = None
    if p["dest_bucket"]:
        dest_client = make_client(p["dest_endpoint_url"], p["dest_access_key"], p["dest_secret_key"],
                                  p["dest_region"])
    try:
        copy = head(offsite, p["offsite_bucket"], offsite_key)
        if copy is None:
            module.fail_json(msg=f"No offsite copy {p['offsite_bucket']}/{offsite_key} on {p['offsite_endpoint_url']}")
        meta = copy.get("Metadata", {})
        recorded = meta.get(META_SHA256)
        result = dict(sha256=recorded, size=int(meta.get(META_SIZE) or 0), destination=destination)
        if p["dest"] and os.path.isdir(p["dest"]):
            module.fail_json(msg=f"dest {p['dest']} is a directory; give the file to write", **result)
        current = existing_sha256(module, dest_client, dest_key)
        if current is not None and current == recorded:
            module.exit_json(changed=False, **result)
        if current is not None and not p["force"]:
            module.fail_json(msg=f"{destination} already exists with other content; set force to replace it",
                             **result)
        if module.check_mode:
            module.exit_json(changed=True, **result)
        if p["dest"]:
            done = restore_to_file(offsite, p["offsite_bucket"], offsite_key, key, p["dest"], key_id,
                                   p["offsite_prefix"])
        else:
            done = restore_to_bucket(offsite, p["offsite_bucket"], offsite_key, key, dest_client, p["dest_bucket"],
                                     dest_key, key_id, p["offsite_prefix"], p["multipart_threshold_mib"] * MIB,
                                     p["part_size_mib"] * MIB)
    except OffsiteError as exc:
        module.fail_json(msg=f"Restore of {p['offsite_bucket']}/{offsite_key} refused: {exc}; nothing was written")
    except Exception as exc:  # noqa: BLE001 - S3 and file errors are reported with their traceback
        module.fail_json(msg=f"Restore of {p['offsite_bucket']}/{offsite_key} to {destination} failed: {exc}",
                         exception=traceback.format_exc())
    module.exit_json(changed=True, sha256=done["sha256"], size=done["size"], destination=destination)


if __name__ == "__main__":
    main()
