#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: offsite_copy
short_description: Copy a storage host's backups to an archive S3 target, encrypted, and age them out by tier
description:
  - The daily offsite copy of the 3-2-1 rule. Lists the full, incremental and database items of
    the storage host's O(buckets), encrypts every object of each item on the machine running the
    module (AES-256-GCM, client side) and uploads it to O(offsite_bucket) on a different S3
    endpoint with other credentials, as C(<offsite_prefix><bucket>/<key>).
  - Copied are the good items the offsite retention keeps, using the same planner as local
    retention with the offsite windows of the tier (starter 30 days, pro 90 days, enterprise 365
    days). Good means a C(valid) marker for a database item (run M(chom.storage.backup_validate)
    first) and no C(invalid) marker for any other item. Markers themselves are not copied.
  - An object already offsite is not uploaded again, when the offsite copy records the same
    source ETag and size, or else the same plaintext SHA-256 and size, and its length is the one
    the recorded plaintext size gives. A copy of another length (cut short, or altered) is
    uploaded again; the entry in RV(copied) says why under C(replaced), and the task warns.
  - With O(prune), deletes offsite items older than their site's offsite window. Never deleted
    are the newest item of a site and kind, an item a kept incremental depends on, and items of
    sites missing from O(site_tiers).
  - The encrypted format is streamed both ways with bounded memory (one 1 MiB chunk while
    encrypting, one part while uploading). Each chunk is authenticated with its index and whether
    it is the last, so an altered, truncated or reordered copy fails to decrypt; the plaintext
    SHA-256 and size are kept in the object's metadata and checked by
    M(chom.storage.offsite_restore).
version_added: 0.1.0
author: CHOM platform team
options:
  endpoint_url:
    description: S3 endpoint of the storage host, for example C(http://10.0.0.11:8333).
    type: str
    required: true
  access_key:
    description: Storage host access key that may read O(buckets).
    type: str
    required: true
  secret_key:
    description: Storage host secret key. Never logged.
    type: str
    required: true
  region:
    description: Signing region of the storage host.
    type: str
    default: us-east-1
  buckets:
    description: Storage host buckets whose items are copied.
    type: list
    elements: str
    default: [chom-backups]
  kinds:
    description: Kinds of items copied (and pruned) offsite.
    type: list
    elements: str
    choices: [full, incremental, db]
    default: [full, incremental, db]
  sites:
    description: Only these sites. Default, every site the buckets hold.
    type: list
    elements: str
  site_tiers:
    description:
      - Tier of each site, C(site ID -> starter|pro|enterprise), as the control plane's
        C(sites.tier) holds it. A site missing here is copied but never pruned offsite.
      - Passed in rather than read here, so the module needs no database access on the
        controller; read it with a query task before this one.
    type: dict
    default: {}
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
    description: Bucket on the archive target. It must exist.
    type: str
    required: true
  offsite_prefix:
    description: Prefix of every offsite key, for example C(storage-01/); empty by default.
    type: str
    default: ""
  encryption_key:
    description:
      - The master key, the base64 text of 32 random bytes (C(openssl rand -base64 32)). Never
        logged. Keep it in Ansible Vault, and keep a copy outside the platform as well; without
        it the offsite copies cannot be read.
    type: str
    required: true
  encryption_key_id:
    description:
      - Name of the key, written into every copy's header and metadata (1-64 of C(A-Z a-z 0-9 . _ -)).
        Give a new key a new ID; a restore names the key it needs by this ID.
    type: str
    default: k1
  storage_class:
    description:
      - S3 storage class of the uploaded copies. C(STANDARD) suits the lab; archive targets use
        C(GLACIER) or C(DEEP_ARCHIVE), whose objects must be restored on the target before
        M(chom.storage.offsite_restore) can read them.
    type: str
    default: STANDARD
    choices: [STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER, GLACIER_IR, DEEP_ARCHIVE]
  prune:
    description: Delete offsite items past their site's offsite window.
    type: bool
    default: true
  multipart_threshold_mib:
    description: Copies larger than this many MiB are uploaded in parts.
    type: int
    default: 16
  part_size_mib:
    description: Size of each uploaded part in MiB (at least 5). Bounds the memory used per upload.
    type: int
    default: 16
  now:
    description:
      - The time of the run, as a stamp C(YYYYMMDDTHHMMSSZ) or ISO 8601 with a time zone.
        Default, the clock. For tests and for replaying a past day.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Lists what would be copied and deleted; reads source objects only to compare the
        SHA-256 of one whose source ETag differs from its offsite copy's.
  diff_mode:
    support: full
    details: Offsite items before and after the run.
requirements:
  - boto3 and cryptography on the host running the module (the controller)
notes:
  - "Run it on the controller (C(delegate_to: localhost)); the storage hosts do not need the
    cryptography package. The plaintext passes only through the controller's memory."
  - Each object is read twice from the storage host, once to compute its SHA-256 and once to
    encrypt it; a source object that changes in between is not stored and fails the task.
  - Object metadata (SHA-256, size, key ID, source name) is stored in clear text on the archive
    target; the content is not. The metadata is not authenticated, but the item name is sealed
    in the encrypted header, so a copy moved to another key is refused on restore.
  - When a copy fails, nothing is pruned in that run and the task fails after the other copies.
  - Media are not copied; they have no creation stamp to age them out by.
seealso:
  - module: chom.storage.offsite_restore
  - module: chom.storage.backup_validate
"""

EXAMPLES = r"""
- name: Read the tier of every site
  community.postgresql.postgresql_query:
    query: SELECT id, tier FROM sites WHERE deleted_at IS NULL
  register: chom_sites

- name: Daily encrypted offsite copy
  chom.storage.offsite_copy:
    endpoint_url: "http://{{ inventory_hostname }}:8333"
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    offsite_endpoint_url: https://s3.archive.example.net
    offsite_access_key: "{{ offsite_access_key }}"
    offsite_secret_key: "{{ offsite_secret_key }}"
    offsite_bucket: chom-offsite
    offsite_prefix: "{{ inventory_hostname }}/"
    encryption_key: "{{ vault_offsite_encryption_key }}"
    encryption_key_id: offsite-2026
    storage_class: GLACIER
    site_tiers: "{{ chom_sites.query_result | items2dict(key_name='id', value_name='tier') }}"
  delegate_to: localhost
"""

RETURN = r"""
copied:
  description: Objects uploaded by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: Source name, C(<bucket>/<key>).
      type: str
    offsite_key:
      description: Key of the copy in O(offsite_bucket).
      type: str
    size:
      description: Plaintext size in bytes.
      type: int
    sha256:
      description: Plaintext SHA-256 (not in check mode).
      type: str
    upload:
      description: C(put) or C(multipart) (not in check mode).
      type: str
    replaced:
      description: Why the copy already offsite was not kept (its length is wrong); absent otherwise.
      type: str
present:
  description: Number of objects already offsite and not uploaded again.
  returned: always
  type: int
not_copied:
  description: Items not copied, with the reason (not validated, marked invalid, outside the offsite window).
  returned: always
  type: list
  elements: dict
deleted:
  description: Offsite items deleted by this run (or that would be), with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"item": "chom-backups/site-7/db/20260101T020000Z/", "reason": "older than its retention window",
            "objects": 1}]
untiered_sites:
  description: Sites found without a tier in O(site_tiers); their offsite copies are kept.
  returned: always
  type: list
  elements: str
errors:
  description: Objects whose copy failed, with the error.
  returned: when a copy failed
  type: list
  elements: dict
"""

import re
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.backup_items import list_items, parse_now
from ansible_collections.chom.storage.plugins.module_utils.naming import NamingError, check_site
from ansible_collections.chom.storage.plugins.module_utils.offsite import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    DEFAULT_CHUNK_SIZE,
    HAS_CRYPTOGRAPHY,
    MIN_PART_SIZE,
    CopySettings,
    OffsiteError,
    check_key_id,
    copy_object,
    delete_item,
    list_offsite_items,
    parse_master_key,
    plan_copy,
    plan_prune,
)
from ansible_collections.chom.storage.plugins.module_utils.retention import TIERS
from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    DEFAULT_REGION,
    HAS_BOTO3,
    is_missing_bucket,
    make_client,
    s3_argument_spec,
)

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
STORAGE_CLASSES = ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR",
                   "DEEP_ARCHIVE"]
MIB = 1 << 20


def argument_spec() -> dict:
    spec = s3_argument_spec()
    spec.update(
        buckets=dict(type="list", elements="str", default=["chom-backups"]),
        kinds=dict(type="list", elements="str", choices=["full", "incremental", "db"],
                   default=["full", "incremental", "db"]),
        sites=dict(type="list", elements="str"),
        site_tiers=dict(type="dict", default={}),
        offsite_endpoint_url=dict(type="str", required=True),
        offsite_access_key=dict(type="str", required=True, no_log=True),
        offsite_secret_key=dict(type="str", required=True, no_log=True),
        offsite_region=dict(type="str", default=DEFAULT_REGION),
        offsite_bucket=dict(type="str", required=True),
        offsite_prefix=dict(type="str", default="", no_log=False),
        encryption_key=dict(type="str", required=True, no_log=True),
        encryption_key_id=dict(type="str", default="k1", no_log=False),
        storage_class=dict(type="str", default="STANDARD", choices=STORAGE_CLASSES),
        prune=dict(type="bool", default=True),
        multipart_threshold_mib=dict(type="int", default=16),
        part_size_mib=dict(type="int", default=16),
        now=dict(type="str"),
    )
    return spec


def check_params(module):
    """Settings, time and sites from the options; fails the module with one sentence on bad input."""
    p = module.params
    bad = [name for name in [*p["buckets"], p["offsite_bucket"]] if not BUCKET_NAME.match(name)]
    if bad:
        module.fail_json(msg=f"Invalid bucket names: {', '.join(bad)} (3-63 chars of a-z, 0-9, '.', '-')")
    wrong_tiers = sorted(f"{site}={tier}" for site, tier in p["site_tiers"].items() if tier not in TIERS)
    if wrong_tiers:
        module.fail_json(msg=f"site_tiers names unknown tiers: {', '.join(wrong_tiers)} "
                             f"(one of {', '.join(TIERS)})")
    if p["part_size_mib"] * MIB < MIN_PART_SIZE or p["multipart_threshold_mib"] < 1:
        module.fail_json(msg="part_size_mib must be at least 5 and multipart_threshold_mib at least 1")
    if p["offsite_prefix"] and not p["offsite_prefix"].endswith("/"):
        module.fail_json(msg=f"offsite_prefix {p['offsite_prefix']!r} must end with '/'")
    try:
        key = parse_master_key(p["encryption_key"])
        key_id = check_key_id(p["encryption_key_id"])
        now = parse_now(p["now"])
        sites = [check_site(site) for site in p["sites"]] if p["sites"] is not None else None
        for site in p["site_tiers"]:
            check_site(site)
    except (OffsiteError, NamingError) as exc:
        module.fail_json(msg=str(exc))
    settings = CopySettings(key=key, key_id=key_id, offsite_bucket=p["offsite_bucket"],
                            offsite_prefix=p["offsite_prefix"], storage_class=p["storage_class"],
                            chunk_size=DEFAULT_CHUNK_SIZE, multipart_threshold=p["multipart_threshold_mib"] * MIB,
                            part_size=p["part_size_mib"] * MIB)
    return settings, now, sites


def copy_items(module, source, offsite, settings, now, sites):
    """Copy what the offsite retention keeps; returns (copied, present, skipped, errors, planned items)."""
    p = module.params
    copied, skipped, errors, planned = [], [], [], []
    present = 0
    for bucket in p["buckets"]:
        items = list_items(source, bucket, p["kinds"], sites)
        to_copy, not_copied = plan_copy(items, p["site_tiers"], now)
        skipped += [dict(item=f"{bucket}/{item.prefix}", reason=why) for item, why in not_copied]
        planned += to_copy
        for item in to_copy:
            for obj in item.objects:
                try:
                    outcome = copy_object(source, offsite, bucket, obj, settings, module.check_mode)
                except Exception as exc:  # noqa: BLE001 - one failed object does not stop the others
                    errors.append(dict(key=f"{bucket}/{obj['key']}", error=str(exc)))
                    continue
                if outcome["action"] == "present":
                    present += 1
                else:
                    copied.append({k: v for k, v in outcome.items() if k != "action"})
    return copied, present, skipped, errors, planned


def prune_items(module, offsite, settings, now, sites, planned):
    """Delete offsite items past their window; returns (deleted, untiered sites, offsite items before)."""
    p = module.params
    deleted, untiered, before = [], set(), []
    for bucket in p["buckets"]:
        items = [i for i in list_offsite_items(offsite, settings, bucket, sites) if i.kind in p["kinds"]]
        before += [f"{bucket}/{item.prefix}" for item in items]
        known = {item.prefix for item in items}
        # In check mode the copies are not there yet; plan as if they were, as the real run will.
        items += [item for item in planned if item.bucket == bucket and item.prefix not in known]
        untiered.update(item.site for item in items if item.site not in p["site_tiers"])
        doomed, _ = plan_prune(items, p["site_tiers"], now)
        for item, reason in doomed:
            if not module.check_mode:
                delete_item(offsite, settings, item)
            deleted.append(dict(item=f"{bucket}/{item.prefix}", reason=reason, objects=len(item.objects)))
    return deleted, sorted(untiered), before


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required on the host running offsite_copy", exception=str(BOTO3_IMPORT_ERROR))
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg="The cryptography Python package is required on the host running offsite_copy "
                             "(the controller)", exception=str(CRYPTOGRAPHY_IMPORT_ERROR))
    p = module.params
    settings, now, sites = check_params(module)
    source = make_client(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"])
    offsite = make_client(p["offsite_endpoint_url"], p["offsite_access_key"], p["offsite_secret_key"],
                          p["offsite_region"])
    try:
        offsite.head_bucket(Bucket=p["offsite_bucket"])
    except Exception as exc:  # noqa: BLE001 - classified below
        if is_missing_bucket(exc):
            module.fail_json(msg=f"Offsite bucket {p['offsite_bucket']} does not exist on "
                                 f"{p['offsite_endpoint_url']}; create it first")
        module.fail_json(msg=f"Cannot reach offsite bucket {p['offsite_bucket']} on {p['offsite_endpoint_url']}: "
                             f"{exc}", exception=traceback.format_exc())

    try:
        copied, present, skipped, errors, planned = copy_items(module, source, offsite, settings, now, sites)
        deleted, untiered, before = [], [], []
        if p["prune"] and not errors:
            deleted, untiered, before = prune_items(module, offsite, settings, now, sites, planned)
    except Exception as exc:  # noqa: BLE001 - S3 errors are reported with their traceback
        module.fail_json(msg=f"Offsite copy from {p['endpoint_url']} to {p['offsite_endpoint_url']} failed: {exc}",
                         exception=traceback.format_exc())

    result = dict(changed=bool(copied or deleted), copied=copied, present=present, not_copied=skipped, deleted=deleted,
                  untiered_sites=untiered)
    if module._diff and (copied or deleted):
        new = {"/".join(c["key"].split("/")[:4]) + "/" for c in copied}
        gone = {d["item"] for d in deleted}
        result["diff"] = dict(before="".join(f"{i}\n" for i in sorted(before)),
                              after="".join(f"{i}\n" for i in sorted((set(before) | new) - gone)))
    replaced = [c for c in copied if c.get("replaced")]
    if replaced:
        module.warn(f"{len(replaced)} offsite copies had the wrong length and were uploaded again, for example "
                    f"{replaced[0]['offsite_key']}: {replaced[0]['replaced']}")
    if errors:
        module.fail_json(msg=f"{len(errors)} object(s) could not be copied offsite (nothing was pruned): "
                             + "; ".join(f"{e['key']}: {e['error']}" for e in errors[:3]), errors=errors, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
