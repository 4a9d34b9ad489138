#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: site_snapshot_plan
short_description: Decide which storage host snapshots which site's files
description:
  - Validates the sites each customer VPS hosts (site IDs by the naming scheme, plain absolute
    document roots, each site on one VPS only), then reads from the control plane each site's
    recorded storage host, C(backups_paused) flag and deletion.
  - Returns, for every given storage host, the sites it snapshots, each with its VPS, document
    root and pause flag, and the sites that are not snapshotted with the reason.
  - Changes nothing.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  vps_sites:
    description:
      - Sites of each customer VPS, keyed by the VPS's inventory name; each site a mapping with
        C(site) and C(document_root).
    type: dict
    required: true
  storage_hosts:
    description: Inventory names of the storage hosts that may snapshot.
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
notes:
  - A paused site stays in its host's list with C(paused=true), so the host reports it as skipped.
  - Requires psycopg 3 on the host running the module (usually the controller).
seealso:
  - module: chom.storage.site_placement
"""

EXAMPLES = r"""
- name: Plan the snapshots of every customer VPS's sites
  chom.storage.site_snapshot_plan:
    vps_sites: "{{ dict(groups['customer_vps'] | zip(groups['customer_vps']
                   | map('extract', hostvars, 'customer_vps_sites'))) }}"
    storage_hosts: "{{ groups['storage_hosts'] }}"
    db_password: "{{ vault_control_plane_password }}"
  delegate_to: localhost
  run_once: true
  register: snapshot_plan
"""

RETURN = r"""
hosts:
  description: Sites each storage host snapshots (C(site), C(vps_host), C(document_root), C(paused), C(paused_reason)).
  returned: always
  type: dict
  sample: {"storage-1": [{"site": "site-001", "vps_host": "vps-1", "document_root": "/var/www/site-001",
           "paused": false, "paused_reason": null}]}
not_snapshotted:
  description: Sites that no host snapshots, with the reason.
  returned: always
  type: dict
paused:
  description: Paused sites with the recorded reason.
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)
from ansible_collections.chom.storage.plugins.module_utils.snapshot_plan import (
    SnapshotPlanError,
    check_vps_sites,
    plan,
    read_site_flags,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        vps_sites=dict(type="dict", required=True),
        storage_hosts=dict(type="list", elements="str", required=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        sites = check_vps_sites(module.params["vps_sites"])
    except SnapshotPlanError as exc:
        module.fail_json(msg=f"Customer VPS sites refused: {exc}")

    conn = connect(module)
    try:
        flags = read_site_flags(conn, [s["site"] for s in sites])
        result = plan(sites, flags, module.params["storage_hosts"])
    except Exception as exc:  # noqa: BLE001 - database errors are reported with their traceback
        module.fail_json(msg=f"Cannot read the sites from the control plane: {exc}", exception=traceback.format_exc())
    finally:
        conn.close()
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
