#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_validate
short_description: Validate database dumps on a storage host and mark each one valid or invalid
description:
  - Lists the database items (C(<site>/db/<stamp>/)) of a bucket and checks every C(*.sql.gz)
    object of each item that carries no marker yet. A dump is valid when its compressed size is
    at least O(min_bytes), its gzip data decompresses completely (every member ends with a correct
    CRC-32 and length), it contains at least one C(CREATE TABLE), and it ends like a finished dump
    (C(-- Dump completed) from mysqldump or mariadb-dump, or C(-- PostgreSQL database dump complete)
    from a plain pg_dump).
  - Objects are streamed; neither the compressed nor the decompressed dump is held in memory.
  - Writes the marker object C(<item>.chom/valid), or C(<item>.chom/invalid) whose body is the
    reason. Items that already carry either marker are not read again, so a second run changes
    nothing.
  - Counts the items whose stamp lies in the last O(results_window_hours) (valid ones succeeded,
    invalid ones failed) and, with O(results_file), writes the counts as JSON with keys
    C(succeeded) and C(failed), which M(chom.storage.storage_capacity) turns into
    C(chom_storage_backup_success_rate).
version_added: 0.1.0
author: CHOM platform team
options:
  endpoint_url:
    description: S3 endpoint of the storage host, for example C(http://127.0.0.1:8333).
    type: str
    required: true
  access_key:
    description: Access key allowed to read the bucket and write markers.
    type: str
    required: true
  secret_key:
    description: Secret key. Never logged.
    type: str
    required: true
  region:
    description: Signing region.
    type: str
    default: us-east-1
  bucket:
    description: Bucket holding the database items.
    type: str
    default: chom-backups
  sites:
    description: Only these sites. Default, every site the bucket holds.
    type: list
    elements: str
  min_bytes:
    description:
      - Size floor of a compressed dump, in bytes. The default, 1 KiB, lets any real WordPress
        dump through (a fresh install compresses to several KiB) and catches empty or aborted dumps.
    type: int
    default: 1024
  max_compression_ratio:
    description:
      - Once more than 16 MiB is decompressed, a dump whose decompressed size exceeds this many
        times the compressed bytes read so far is invalid ("suspicious compression ratio"). SQL
        compresses about 5-20 to 1; the default, 1000, only stops gzip bombs, which would
        otherwise take hours to read. C(0) turns the check off.
    type: int
    default: 1000
  max_decompressed_gib:
    description:
      - A dump that decompresses to more than this many GiB is invalid; bounds the time one dump
        can take. C(0) turns the limit off.
    type: int
    default: 64
  results_file:
    description:
      - JSON file to write the recent counts to, for example
        C(/var/lib/chom-storage/backup-results.json), the default of
        M(chom.storage.storage_capacity)'s C(backup_results_file). Not written when omitted.
      - Written atomically, and only when the counts change.
    type: path
  results_window_hours:
    description: Items whose stamp is at most this many hours old are counted.
    type: float
    default: 24
  now:
    description:
      - The time of the run, as a stamp C(YYYYMMDDTHHMMSSZ) or ISO 8601 with a time zone.
        Default, the clock. For tests and for replaying a past day.
    type: str
attributes:
  check_mode:
    support: full
    details: Reads and checks the dumps, and reports the markers it would write; writes nothing.
  diff_mode:
    support: none
requirements:
  - boto3 on the host running the module
notes:
  - Run it on the storage host (the results file is read there by
    M(chom.storage.storage_capacity)), or on the controller without O(results_file).
  - An item that cannot be read (an S3 error) is reported with status C(error), gets no marker
    and fails the task after every other item is done; the next run tries it again.
  - Only the dump's structure is checked, not that it restores. A dump that is still being
    uploaded is not listed by S3 until its upload completes.
seealso:
  - module: chom.storage.offsite_copy
  - module: chom.storage.storage_capacity
"""

EXAMPLES = r"""
- name: Validate new database dumps and count the last day's results
  chom.storage.backup_validate:
    endpoint_url: http://127.0.0.1:8333
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    results_file: /var/lib/chom-storage/backup-results.json

- name: Show which dumps of one site would be marked
  chom.storage.backup_validate:
    endpoint_url: http://127.0.0.1:8333
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    sites: [site-1042]
  check_mode: true
"""

RETURN = r"""
items:
  description: One entry per database item, in site and time order.
  returned: always
  type: list
  elements: dict
  contains:
    item:
      description: The item's prefix, C(<site>/db/<stamp>/).
      type: str
    site:
      description: Site ID.
      type: str
    stamp:
      description: Creation stamp of the item.
      type: str
    status:
      description: C(valid), C(invalid) or C(error).
      type: str
    marker:
      description: Key of the marker written (or that would be, or that was already there).
      type: str
    reason:
      description: Why the item is invalid, or the read error; null when valid.
      type: str
    already_marked:
      description: True when the marker existed before this run and the item was not read.
      type: bool
    dumps:
      description: Names of the item's C(*.sql.gz) objects.
      type: list
      elements: str
marked:
  description: Markers written by this run (or that would be, in check mode), by status.
  returned: always
  type: dict
  sample: {"valid": 3, "invalid": 1}
counts:
  description: Items of the recent window by result, as written to O(results_file).
  returned: always
  type: dict
  sample: {"succeeded": 41, "failed": 1}
results_file_changed:
  description: Whether O(results_file) was (or would be) rewritten.
  returned: always
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.backup_items import list_items, parse_now
from ansible_collections.chom.storage.plugins.module_utils.dump_check import (
    count_recent,
    validate_items,
    write_results_file,
)
from ansible_collections.chom.storage.plugins.module_utils.naming import NamingError, check_site
from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    make_client,
    s3_argument_spec,
)


def main():
    argument_spec = s3_argument_spec()
    argument_spec.update(
        bucket=dict(type="str", default="chom-backups"),
        sites=dict(type="list", elements="str"),
        min_bytes=dict(type="int", default=1024),
        max_compression_ratio=dict(type="int", default=1000),
        max_decompressed_gib=dict(type="int", default=64),
        results_file=dict(type="path"),
        results_window_hours=dict(type="float", default=24),
        now=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required on the host running backup_validate",
                         exception=str(BOTO3_IMPORT_ERROR))
    p = module.params
    if p["min_bytes"] < 0 or p["results_window_hours"] <= 0:
        module.fail_json(msg="min_bytes must be 0 or more and results_window_hours more than 0")
    if p["max_compression_ratio"] < 0 or p["max_decompressed_gib"] < 0:
        module.fail_json(msg="max_compression_ratio and max_decompressed_gib must be 0 (no limit) or more")
    try:
        now = parse_now(p["now"])
        sites = [check_site(site) for site in p["sites"]] if p["sites"] is not None else None
    except NamingError as exc:
        module.fail_json(msg=str(exc))

    client = make_client(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"])
    try:
        items = list_items(client, p["bucket"], ("db",), sites)
        results = validate_items(client, items, p["min_bytes"], module.check_mode, p["max_compression_ratio"],
                                 p["max_decompressed_gib"] << 30)
    except Exception as exc:  # noqa: BLE001 - S3 errors are reported with their traceback
        module.fail_json(msg=f"Validating database dumps in {p['bucket']} on {p['endpoint_url']} failed: {exc}",
                         exception=traceback.format_exc())

    counts = count_recent(results, now, p["results_window_hours"])
    file_changed = False
    if p["results_file"]:
        try:
            file_changed = write_results_file(p["results_file"], counts, module.check_mode)
        except OSError as exc:
            module.fail_json(msg=f"Cannot write {p['results_file']}: {exc}", exception=traceback.format_exc())

    fresh = [r for r in results if not r.already_marked and r.status in ("valid", "invalid")]
    marked = {"valid": sum(r.status == "valid" for r in fresh), "invalid": sum(r.status == "invalid" for r in fresh)}
    errors = [r for r in results if r.status == "error"]
    result = dict(changed=bool(fresh) or file_changed, items=[r.as_dict() for r in results], marked=marked,
                  counts=counts, results_file_changed=file_changed)
    if errors:
        module.fail_json(msg=f"{len(errors)} database item(s) could not be read and were not marked: "
                             + ", ".join(r.item for r in errors[:5]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
