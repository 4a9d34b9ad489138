#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: control_plane_schema
short_description: Apply the versioned chom-storage schema to the control-plane database
description:
  - Creates or upgrades the tables C(storage_hosts), C(storage_migrations) and the
    C(sites.storage_host_id) column, one numbered schema version at a time, each recorded with
    the checksum of its SQL in C(chom_storage_schema_versions).
  - All pending versions are applied in one transaction under an advisory lock, so concurrent
    runs cannot apply a version twice and a failure leaves the schema as it was.
  - A version recorded with a different checksum, or an unknown newer version, stops the run.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
attributes:
  check_mode:
    support: full
    details: Only reads run; the versions that would be applied are returned.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Apply the control-plane schema
  chom.storage.control_plane_schema:
    db_host: db.internal
    db_password: "{{ vault_control_plane_password }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
applied:
  description: Versions applied by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{"version": 1, "name": "storage hosts, sites column, storage migrations"}]
version:
  description: Highest schema version the database holds after the run.
  returned: always
  type: int
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane import (
    MIGRATIONS,
    SchemaError,
    apply_schema,
)
from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)


def main():
    module = AnsibleModule(argument_spec=connection_argument_spec(), supports_check_mode=True)
    conn = connect(module)
    try:
        applied = apply_schema(conn, check_mode=module.check_mode)
    except SchemaError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # noqa: BLE001 - database errors are reported with their traceback
        module.fail_json(msg=f"Applying the schema failed: {exc}", exception=traceback.format_exc())
    finally:
        conn.close()
    module.exit_json(
        changed=bool(applied),
        applied=[dict(version=m.version, name=m.name) for m in applied],
        version=max(m.version for m in MIGRATIONS),
    )


if __name__ == "__main__":
    main()
