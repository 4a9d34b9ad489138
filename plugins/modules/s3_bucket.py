#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_bucket
short_description: Ensure buckets exist on the storage host's S3 engine, and read them back
description:
  - Creates each missing bucket with the engine's admin credentials, then reads every bucket
    back with C(HeadBucket) and C(ListBuckets). A create call that answered success but left no
    bucket behind (for example an admin call sent to the wrong kind of server) fails the task.
version_added: 0.1.0
author: CHOM platform team
options:
  endpoint_url:
    description: S3 endpoint, for example C(http://10.0.0.11:8333).
    type: str
    required: true
  access_key:
    description: Admin access key.
    type: str
    required: true
  secret_key:
    description: Admin secret key. Never logged.
    type: str
    required: true
  region:
    description: Signing region.
    type: str
    default: us-east-1
  buckets:
    description: Names of the buckets that must exist.
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
requirements:
  - boto3 on the host running the module
notes:
  - Buckets are never deleted by this module.
"""

EXAMPLES = r"""
- name: Create the chom buckets
  chom.storage.s3_bucket:
    endpoint_url: http://127.0.0.1:8333
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    buckets: [chom-backups, chom-media, chom-archives]
"""

RETURN = r"""
created:
  description: Buckets created by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: str
buckets:
  description: All buckets the engine lists after the run.
  returned: always
  type: list
  elements: str
"""

import re
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    is_missing_bucket,
    make_client,
    s3_argument_spec,
)

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def bucket_exists(client, name):
    try:
        client.head_bucket(Bucket=name)
        return True
    except Exception as exc:  # noqa: BLE001 - classified below
        if is_missing_bucket(exc):
            return False
        raise


def main():
    argument_spec = s3_argument_spec()
    argument_spec.update(buckets=dict(type="list", elements="str", required=True))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required on the host running s3_bucket", exception=str(BOTO3_IMPORT_ERROR))

    bad = [name for name in module.params["buckets"] if not BUCKET_NAME.match(name)]
    if bad:
        module.fail_json(msg=f"Invalid bucket names: {', '.join(bad)} (3-63 chars of a-z, 0-9, '.', '-')")

    p = module.params
    client = make_client(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"])
    try:
        missing = [name for name in p["buckets"] if not bucket_exists(client, name)]
        if not module.check_mode:
            for name in missing:
                client.create_bucket(Bucket=name)
            unreadable = [name for name in p["buckets"] if not bucket_exists(client, name)]
            if unreadable:
                module.fail_json(msg=f"Buckets not readable after creation: {', '.join(unreadable)}; "
                                     "is the endpoint a real S3 engine?")
        listed = sorted(b["Name"] for b in client.list_buckets().get("Buckets", []))
    except Exception as exc:  # noqa: BLE001 - S3 errors are reported with their traceback
        module.fail_json(msg=f"S3 bucket check on {p['endpoint_url']} failed: {exc}", exception=traceback.format_exc())

    result = dict(changed=bool(missing), created=missing, buckets=listed)
    if missing:
        result["diff"] = dict(before="".join(f"{n}\n" for n in listed if n not in missing),
                              after="".join(f"{n}\n" for n in sorted(set(listed) | set(missing))))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
