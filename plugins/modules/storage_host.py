#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_host
short_description: Register a storage host in the control-plane database
description:
  - Inserts or updates the C(storage_hosts) row of one host (IP address, role, total capacity
    and region). Reports C(changed) only when a stored value changes.
  - The role of an existing host is operational state (capacity gating, failover and
    decommissioning change it), so by default it is set only when the host is first
    registered. Set O(enforce_role=true) to overwrite it.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  hostname:
    description: Unique name of the storage host.
    type: str
    required: true
  ip_address:
    description: Address consumers and replication use to reach the host.
    type: str
    required: true
  role:
    description: Role of the host.
    type: str
    required: true
    choices: [active, replica, unavailable, maintenance, decommissioning]
  enforce_role:
    description: Overwrite the stored role of an existing host with O(role).
    type: bool
    default: false
  total_capacity_bytes:
    description: Size of the storage volume in bytes.
    type: int
    required: true
  region:
    description: Region or site label of the host.
    type: str
    default: default
attributes:
  check_mode:
    support: full
    details: Nothing is written; the row that would result is returned.
  diff_mode:
    support: full
notes:
  - Used capacity, health status and the last health check time are left to the capacity check.
"""

EXAMPLES = r"""
- name: Register the primary storage host
  chom.storage.storage_host:
    hostname: storage-1
    ip_address: 10.0.0.11
    role: active
    total_capacity_bytes: 2000000000000
    db_host: db.internal
    db_password: "{{ vault_control_plane_password }}"
  delegate_to: localhost
"""

RETURN = r"""
storage_host:
  description: The stored row after the run (or as it would be, in check mode).
  returned: always
  type: dict
  sample: {"id": "3f0c...", "hostname": "storage-1", "ip_address": "10.0.0.11", "role": "active"}
"""

import ipaddress
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane import (
    HOST_ROLES,
    ensure_storage_host,
)
from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        hostname=dict(type="str", required=True),
        ip_address=dict(type="str", required=True),
        role=dict(type="str", required=True, choices=list(HOST_ROLES)),
        enforce_role=dict(type="bool", default=False),
        total_capacity_bytes=dict(type="int", required=True),
        region=dict(type="str", default="default"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    if not params["hostname"].strip():
        module.fail_json(msg="hostname must not be empty")
    try:
        ip_address = str(ipaddress.ip_address(params["ip_address"]))
    except ValueError:
        module.fail_json(msg=f"ip_address {params['ip_address']!r} is not an IP address")
    if params["total_capacity_bytes"] < 0:
        module.fail_json(msg="total_capacity_bytes must not be negative")

    wanted = dict(
        hostname=params["hostname"],
        ip_address=ip_address,
        role=params["role"],
        total_capacity_bytes=params["total_capacity_bytes"],
        region=params["region"],
    )
    conn = connect(module)
    try:
        changed, before, after = ensure_storage_host(
            conn, wanted, enforce_role=params["enforce_role"], check_mode=module.check_mode
        )
    except Exception as exc:  # noqa: BLE001 - database errors are reported with their traceback
        module.fail_json(msg=f"Registering {params['hostname']} failed: {exc}", exception=traceback.format_exc())
    finally:
        conn.close()

    result = dict(changed=changed, storage_host=after)
    if changed:
        result["diff"] = dict(before=before or {}, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
