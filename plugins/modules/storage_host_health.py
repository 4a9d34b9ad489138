#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_host_health
short_description: Record a storage host's capacity check in the control plane and gate it
description:
  - Records used and total bytes, the capacity state, its reasons and the check time of one
    storage host in C(storage_hosts).
  - A full C(active) host is marked C(unavailable), so placement stops choosing it. It is made
    C(active) again only when its state is back to C(normal) or C(warning); a host that went
    from full to critical stays unavailable, so the role does not flap around the threshold.
  - A host an operator set to C(unavailable), C(maintenance) or C(decommissioning) is never
    changed by this module.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  hostname:
    description: Registered storage host.
    type: str
    required: true
  capacity_state:
    description: State returned by M(chom.storage.storage_capacity).
    type: str
    required: true
    choices: [normal, warning, critical, full]
  reasons:
    description: Reasons returned with the state.
    type: list
    elements: str
    default: []
  used_bytes:
    description: Bytes used on the storage volume.
    type: int
    required: true
  total_bytes:
    description: Size of the storage volume.
    type: int
    required: true
attributes:
  check_mode:
    support: full
    details: Nothing is written; the role and state the host would get are returned.
  diff_mode:
    support: full
notes:
  - C(changed) reports a change of role, state or reasons. The measurements and the check time are
    recorded on every run, as a monitoring record.
"""

EXAMPLES = r"""
- name: Record the capacity check
  chom.storage.storage_host_health:
    hostname: "{{ inventory_hostname }}"
    capacity_state: "{{ capacity.capacity_state }}"
    reasons: "{{ capacity.reasons }}"
    used_bytes: "{{ capacity.measures.used_bytes }}"
    total_bytes: "{{ capacity.measures.total_bytes }}"
    db_password: "{{ vault_control_plane_password }}"
  delegate_to: localhost
"""

RETURN = r"""
transition:
  description: C(marked unavailable (full)), C(back to active (...)) or null.
  returned: always
  type: str
storage_host:
  description: Role, capacity state, reasons and health status after the run.
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane import record_capacity
from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        hostname=dict(type="str", required=True),
        capacity_state=dict(type="str", required=True, choices=["normal", "warning", "critical", "full"]),
        reasons=dict(type="list", elements="str", default=[]),
        used_bytes=dict(type="int", required=True),
        total_bytes=dict(type="int", required=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if p["used_bytes"] < 0 or p["total_bytes"] < 0:
        module.fail_json(msg="used_bytes and total_bytes must not be negative")

    conn = connect(module)
    try:
        outcome = record_capacity(conn, p["hostname"], {"used_bytes": p["used_bytes"], "total_bytes": p["total_bytes"]},
                                  p["capacity_state"], p["reasons"], check_mode=module.check_mode)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # noqa: BLE001 - database errors are reported with their traceback
        module.fail_json(msg=f"Recording the capacity of {p['hostname']} failed: {exc}",
                         exception=traceback.format_exc())
    finally:
        conn.close()

    result = dict(changed=outcome["changed"], transition=outcome["transition"], storage_host=outcome["after"])
    if outcome["changed"]:
        result["diff"] = dict(before=outcome["before"], after=outcome["after"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
