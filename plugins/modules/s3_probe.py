#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_probe
short_description: Prove that an S3 engine is healthy and that a key can do what it should, and no more
description:
  - Retries until the endpoint answers a signed C(ListBuckets) with the given key, then checks
    the key's grants for real. In each bucket of O(writable) it writes a small probe object, reads
    it back byte for byte and deletes it. In each bucket of O(readonly) it lists objects. For each
    bucket of O(denied) and for bucket creation (O(deny_create_bucket)) it expects a refusal.
  - A process that merely started is not healthy; the task fails when the probe does not pass
    within O(retries) attempts.
version_added: 0.1.0
author: CHOM platform team
options:
  endpoint_url:
    description: S3 endpoint.
    type: str
    required: true
  access_key:
    description: Access key to probe with.
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
  retries:
    description: Attempts for the first signed request.
    type: int
    default: 30
  delay:
    description: Seconds between attempts.
    type: float
    default: 1
  writable:
    description: Buckets where the key must write, read back and delete a probe object.
    type: list
    elements: str
    default: []
  readonly:
    description: Buckets the key must be able to list.
    type: list
    elements: str
    default: []
  denied:
    description: Buckets where a write by this key must be refused.
    type: list
    elements: str
    default: []
  deny_create_bucket:
    description: Require that this key cannot create buckets.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: The probe only reads in check mode; write checks are skipped and reported.
  diff_mode:
    support: none
notes:
  - Probe objects are written under the C(.chom-probe/) prefix and deleted at once; replication
    ignores that prefix.
"""

EXAMPLES = r"""
- name: Wait until the engine is healthy
  chom.storage.s3_probe:
    endpoint_url: http://10.0.0.11:8333
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    retries: 30
"""

RETURN = r"""
attempts:
  description: Attempts needed before the endpoint answered.
  returned: always
  type: int
checks:
  description: One line per check that passed.
  returned: always
  type: list
  elements: str
"""

import time
import uuid

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    error_code,
    is_denied,
    make_client,
    s3_argument_spec,
)

PROBE_PREFIX = ".chom-probe/"


def wait_until_answering(module, client):
    last_error = None
    for attempt in range(1, module.params["retries"] + 1):
        try:
            client.list_buckets()
            return attempt
        except Exception as exc:  # noqa: BLE001 - any failure counts as not yet healthy
            last_error = exc
            if is_denied(exc):
                break
            time.sleep(module.params["delay"])
    module.fail_json(msg=f"S3 endpoint {module.params['endpoint_url']} is not healthy: "
                         f"{error_code(last_error)}: {last_error}")


def expect_refusal(module, action, what):
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - classified below
        if is_denied(exc):
            return
        module.fail_json(msg=f"Expected {what} to be refused, got {error_code(exc)}: {exc}")
    module.fail_json(msg=f"Least privilege broken: {what} was allowed")


def main():
    argument_spec = s3_argument_spec()
    argument_spec.update(
        retries=dict(type="int", default=30),
        delay=dict(type="float", default=1),
        writable=dict(type="list", elements="str", default=[]),
        readonly=dict(type="list", elements="str", default=[]),
        denied=dict(type="list", elements="str", default=[]),
        deny_create_bucket=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required on the host running s3_probe", exception=str(BOTO3_IMPORT_ERROR))
    p = module.params
    if p["retries"] < 1:
        module.fail_json(msg="retries must be at least 1")
    client = make_client(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"], attempts=1)

    attempts = wait_until_answering(module, client)
    checks = [f"signed ListBuckets answered after {attempts} attempt(s)"]
    for bucket in p["readonly"]:
        try:
            client.list_objects_v2(Bucket=bucket, MaxKeys=1)
        except Exception as exc:  # noqa: BLE001
            module.fail_json(msg=f"Key cannot list bucket {bucket}: {error_code(exc)}")
        checks.append(f"lists {bucket}")

    if module.check_mode:
        checks.append("write checks skipped in check mode")
        module.exit_json(changed=False, attempts=attempts, checks=checks)

    for bucket in p["writable"]:
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        body = uuid.uuid4().bytes * 4
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body)
            read = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            module.fail_json(msg=f"Key cannot write, read and delete in bucket {bucket}: {error_code(exc)}")
        if read != body:
            module.fail_json(msg=f"Probe object in {bucket} read back with different bytes")
        checks.append(f"writes, reads back and deletes in {bucket}")
    for bucket in p["denied"]:
        expect_refusal(module, lambda b=bucket: client.put_object(Bucket=b, Key=f"{PROBE_PREFIX}denied", Body=b"x"),
                       f"a write to bucket {bucket}")
        checks.append(f"refused a write to {bucket}")
    if p["deny_create_bucket"]:
        name = f"chom-probe-{uuid.uuid4().hex[:12]}"
        expect_refusal(module, lambda: client.create_bucket(Bucket=name), "bucket creation")
        checks.append("refused bucket creation")
    module.exit_json(changed=False, attempts=attempts, checks=checks)


if __name__ == "__main__":
    main()
