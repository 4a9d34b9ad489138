#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: site_placement
short_description: Place sites on storage hosts by consistent hashing, or propose moves
description:
  - With O(mode=assign), records a storage host in C(sites.storage_host_id) for every site that
    has none yet, as the placement ring chooses. A site that already has a host keeps it; the
    database is the truth, and data moves only through migration.
  - With O(mode=propose), changes nothing and returns the moves the ring implies for sites
    already placed (for example after a host was added or became ineligible), as input for
    migration and rebalancing.
  - The ring is the one of the lookup P(chom.storage.placement#lookup); both agree on every site.
  - Hosts come from C(storage_hosts) (name, role, capacity and capacity state); only hosts that
    may take new sites are on the ring. O(hosts) replaces them, for example to see what adding a
    host would move.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  mode:
    description: C(assign) records hosts for unplaced sites; C(propose) only reports moves.
    type: str
    choices: [assign, propose]
    default: assign
  site_ids:
    description: Sites to consider. Default, every site in C(sites).
    type: list
    elements: str
  hosts:
    description:
      - Ring hosts instead of those in C(storage_hosts), as names or dicts (see the lookup), to see
        what a changed ring would move. Only with O(mode=propose); assignment always uses the
        registered hosts with their recorded role and capacity state.
    type: list
    elements: raw
  vnodes:
    description: Virtual nodes per unit of weight.
    type: int
    default: 150
  capacity_unit_bytes:
    description:
      - Capacity that counts as weight 1. A host of twice this size gets twice the points. Keep it
        the same for the whole fleet; changing it moves sites.
    type: int
    default: 1099511627776
attributes:
  check_mode:
    support: full
    details: Nothing is written; the assignments that would be recorded are returned.
  diff_mode:
    support: full
notes:
  - A site placed by someone else between the read and the write keeps that host; it is not
    counted as assigned.
  - Requires psycopg 3 and xxhash on the host running the module (usually the controller).
seealso:
  - plugin: chom.storage.placement
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Place every site that has no storage host yet
  chom.storage.site_placement:
    db_host: db.internal
    db_password: "{{ vault_control_plane_password }}"
  delegate_to: localhost
  run_once: true

- name: Which sites would move if storage-5 joined
  chom.storage.site_placement:
    mode: propose
    hosts: [storage-1, storage-2, storage-3, storage-4, storage-5]
    db_password: "{{ vault_control_plane_password }}"
  delegate_to: localhost
  register: proposal
"""

RETURN = r"""
placements:
  description: Host of every considered site after the run (recorded or, in check mode, planned).
  returned: always
  type: dict
  sample: {"site-1": "storage-1"}
assigned:
  description: Sites that got a host in this run, with that host.
  returned: always
  type: dict
moves:
  description: For placed sites whose ring host differs from the recorded one, C(site_id), C(from), C(to).
  returned: always
  type: list
  elements: dict
excluded_hosts:
  description: Hosts left off the ring, with the reason.
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane import (
    placement_hosts,
    record_site_hosts,
    site_hosts,
)
from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)
from ansible_collections.chom.storage.plugins.module_utils.placement import (
    NoEligibleHost,
    PlacementError,
    Ring,
    propose_moves,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        mode=dict(type="str", choices=["assign", "propose"], default="assign"),
        site_ids=dict(type="list", elements="str"),
        hosts=dict(type="list", elements="raw"),
        vnodes=dict(type="int", default=150),
        capacity_unit_bytes=dict(type="int", default=1 << 40),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if p["site_ids"] is not None:
        blank = [s for s in p["site_ids"] if not s.strip()]
        if blank:
            module.fail_json(msg="site_ids must be non-empty strings")
    if p["capacity_unit_bytes"] < 1:
        module.fail_json(msg="capacity_unit_bytes must be positive")
    if p["hosts"] is not None and p["mode"] == "assign":
        module.fail_json(msg="hosts may only be given with mode=propose: sites are assigned only to registered "
                             "hosts, with the role and capacity state the control plane holds for them")

    conn = connect(module)
    try:
        registered = placement_hosts(conn)
        current = site_hosts(conn, p["site_ids"])
        unknown = sorted(set(p["site_ids"] or []) - set(current))
        if unknown:
            module.fail_json(msg=f"Sites not in the sites table: {', '.join(unknown[:10])}"
                                 + (" …" if len(unknown) > 10 else ""))
        placed = {site: host for site, host in current.items() if host is not None}
        unplaced = sorted(site for site, host in current.items() if host is None)
        ring_hosts = p["hosts"] if p["hosts"] is not None else registered
        try:
            ring = Ring(ring_hosts, p["vnodes"], p["capacity_unit_bytes"])
        except NoEligibleHost as exc:
            if p["mode"] == "assign" and unplaced:
                raise
            # Nothing to place, and no host to move anything to: report, do not fail.
            module.warn(str(exc))
            excluded = {h["name"]: str(exc) for h in ring_hosts if isinstance(h, dict)}
            module.exit_json(changed=False, placements=placed, assigned={}, moves=[], excluded_hosts=excluded)
        planned = dict(zip(unplaced, ring.lookup_many(unplaced), strict=True))
        moves = propose_moves(placed, ring)

        assigned = {}
        if p["mode"] == "assign" and planned:
            host_ids = {host["name"]: host["id"] for host in registered}
            if module.check_mode:
                assigned = planned
            else:
                recorded = record_site_hosts(conn, planned, host_ids)
                assigned = {site: planned[site] for site in recorded}
                placed.update(site_hosts(conn, [s for s in planned if s not in assigned]))
    except PlacementError as exc:
        module.fail_json(msg=f"Placement input refused: {exc}")
    except Exception as exc:  # noqa: BLE001 - database errors are reported with their traceback
        module.fail_json(msg=f"Placement failed: {exc}", exception=traceback.format_exc())
    finally:
        conn.close()

    placements = dict(placed)
    placements.update(assigned if p["mode"] == "assign" else planned)
    result = dict(
        changed=bool(assigned),
        placements=placements,
        assigned=assigned,
        moves=moves,
        excluded_hosts=ring.excluded,
    )
    if assigned:
        result["diff"] = dict(before="", after="".join(f"{s}: {h}\n" for s, h in sorted(assigned.items())))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
