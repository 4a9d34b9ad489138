#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_hosts_info
short_description: Read the storage hosts recorded in the control plane
description:
  - Returns every row of C(storage_hosts) with its role, capacity, capacity state, fencing and the
    number of sites recorded on it. Changes nothing.
  - Runbooks call it first, so that an unreachable control plane stops them before any host changes.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - psycopg >= 3
"""

EXAMPLES = r"""
- name: Read the storage hosts
  chom.storage.storage_hosts_info:
    db_host: db.internal
    db_password: "{{ vault_control_plane_db_password }}"
  register: storage
"""

RETURN = r"""
hosts:
  description: One entry per storage host, by hostname.
  returned: always
  type: list
  elements: dict
  sample: [{"hostname": "storage-1", "ip_address": "10.0.0.11", "role": "active", "total_capacity_bytes": 1099511627776,
            "used_capacity_bytes": 0, "capacity_percent": 0.0, "capacity_state": "normal", "fenced": false,
            "fenced_reason": null, "sites": 12}]
by_name:
  description: The same entries keyed by hostname.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane import hosts_info
from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)


def main():
    module = AnsibleModule(argument_spec=connection_argument_spec(), supports_check_mode=True)
    conn = connect(module)
    try:
        hosts = hosts_info(conn)
    except Exception as exc:  # noqa: BLE001 - a missing schema is the usual cause
        module.fail_json(msg=f"Cannot read storage_hosts (is the control-plane schema applied?): {exc}")
    finally:
        conn.close()
    module.exit_json(changed=False, hosts=hosts, by_name={h["hostname"]: h for h in hosts})


if __name__ == "__main__":
    main()
