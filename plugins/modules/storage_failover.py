#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_failover
short_description: Record in the control plane that one storage host takes over from another
description:
  - In one transaction, O(new_active) becomes C(active), O(old_active) gets O(old_role) (and, with
    O(fence), is marked fenced with O(reason)), and every site recorded on O(old_active) is
    recorded on O(new_active).
  - The control-plane half of the failover and failback runbooks; the hosts themselves are changed
    by the runbooks' other tasks.
  - A fenced host is refused as O(new_active) unless O(unfence); C(site.yml) refuses to configure a
    fenced host as the primary.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  old_active:
    description: The host that was active (the failed or former primary).
    type: str
    required: true
  new_active:
    description: The host that becomes active.
    type: str
    required: true
  old_role:
    description: Role given to O(old_active).
    type: str
    choices: [unavailable, replica, maintenance]
    default: unavailable
  fence:
    description: Mark O(old_active) fenced, so that nothing makes it a primary again until a failback.
    type: bool
    default: true
  unfence:
    description: Allow a fenced O(new_active) (failback) and clear its fence.
    type: bool
    default: false
  reason:
    description: Why, recorded with the fence.
    type: str
    default: failover
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
requirements:
  - psycopg >= 3
"""

EXAMPLES = r"""
- name: Storage-2 takes over from storage-1
  chom.storage.storage_failover:
    old_active: storage-1
    new_active: storage-2
    reason: "primary down since 03:10"
    db_password: "{{ vault_control_plane_db_password }}"
"""

RETURN = r"""
sites_moved:
  description: Sites recorded on O(old_active) that are now recorded on O(new_active).
  returned: always
  type: int
before:
  description: Role and fencing of both hosts before.
  returned: always
  type: dict
after:
  description: Role and fencing of both hosts after.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane import TopologyError, promote
from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        old_active=dict(type="str", required=True),
        new_active=dict(type="str", required=True),
        old_role=dict(type="str", choices=["unavailable", "replica", "maintenance"], default="unavailable"),
        fence=dict(type="bool", default=True),
        unfence=dict(type="bool", default=False),
        reason=dict(type="str", default="failover"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if p["old_active"] == p["new_active"]:
        module.fail_json(msg="old_active and new_active are the same host")
    conn = connect(module)
    try:
        result = promote(conn, p["old_active"], p["new_active"], p["reason"], old_role=p["old_role"],
                         fence_old=p["fence"], unfence_new=p["unfence"], check_mode=module.check_mode)
    except TopologyError as exc:
        module.fail_json(msg=str(exc))
    finally:
        conn.close()
    if result["changed"]:
        result["diff"] = dict(before=result["before"], after=result["after"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
