#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: replication_state
short_description: How fresh a replica is, read from the replica itself
description:
  - After every successful run, replication writes a marker object on the replica
    (C(_platform/replication/last-success.json) in the first replicated bucket) saying that the
    replica holds everything the primary held when the run started. This module reads it from the
    replica's S3 endpoint, so it works when the primary is gone.
  - The lag is the time since the start of the last successful run.
  - With O(state=absent) it removes the marker instead, from a host that is a primary again
    (failback leaves one there from its reverse copy); the result then describes the marker removed.
version_added: 0.1.0
author: CHOM platform team
options:
  endpoint_url:
    description: S3 endpoint of the replica.
    type: str
    required: true
  access_key:
    description: Access key with Read on O(bucket).
    type: str
    required: true
  secret_key:
    description: Secret key.
    type: str
    required: true
  region:
    description: Signing region.
    type: str
    default: us-east-1
  bucket:
    description: Bucket holding the marker (the first bucket replication copies).
    type: str
    default: chom-backups
  state:
    description: C(present) reads the marker; C(absent) deletes it (changed when there was one).
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - boto3
"""

EXAMPLES = r"""
- name: How far behind is the replica
  chom.storage.replication_state:
    endpoint_url: http://10.0.0.12:8333
    access_key: "{{ vault_s3_admin_access_key }}"
    secret_key: "{{ vault_s3_admin_secret_key }}"
  register: replica

- name: Remove the marker a failback's reverse copy left on the primary
  chom.storage.replication_state:
    endpoint_url: http://10.0.0.11:8333
    access_key: "{{ vault_s3_admin_access_key }}"
    secret_key: "{{ vault_s3_admin_secret_key }}"
    state: absent
"""

RETURN = r"""
replicated:
  description: The replica holds a marker (at least one replication succeeded).
  returned: always
  type: bool
primary:
  description: The primary the last successful run came from.
  returned: when replicated
  type: str
last_success_start:
  description: Start of the last successful run (epoch seconds).
  returned: when replicated
  type: float
lag_seconds:
  description: Seconds since that start; writes made after it may be missing on the replica.
  returned: when replicated
  type: float
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    BotoCoreError,
    ClientError,
    error_code,
    make_client,
    s3_argument_spec,
)

MARKER_KEY = "_platform/replication/last-success.json"


def main():
    argument_spec = s3_argument_spec()
    argument_spec.update(bucket=dict(type="str", default="chom-backups"),
                         state=dict(type="str", choices=["present", "absent"], default="present"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(BOTO3_IMPORT_ERROR))
    client = make_client(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"], attempts=2)
    try:
        body = client.get_object(Bucket=p["bucket"], Key=MARKER_KEY)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            module.exit_json(changed=False, replicated=False)
        module.fail_json(msg=f"Cannot read the replication marker from {p['endpoint_url']}: {error_code(exc)}")
    except BotoCoreError as exc:
        module.fail_json(msg=f"Cannot reach the replica's S3 endpoint {p['endpoint_url']}: {exc}")
    try:
        marker = json.loads(body)
        start = float(marker["last_success_start"])
    except (ValueError, KeyError, TypeError):
        module.fail_json(msg=f"The replication marker on {p['endpoint_url']} is not readable")
    result = dict(replicated=True, primary=marker.get("primary", ""), last_success_start=start,
                  lag_seconds=round(time.time() - start, 1))
    if p["state"] == "absent":
        if not module.check_mode:
            try:
                client.delete_object(Bucket=p["bucket"], Key=MARKER_KEY)
            except (ClientError, BotoCoreError) as exc:
                module.fail_json(msg=f"Cannot remove the replication marker on {p['endpoint_url']}: {exc}")
        module.exit_json(changed=True, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
