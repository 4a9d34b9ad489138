# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: placement
short_description: Storage host of each site by consistent hashing
description:
  - Returns, for each site ID, the storage host a consistent-hash ring over O(hosts) chooses.
  - The same ring as the module M(chom.storage.site_placement) and every other user of
    the placement core, so all of them agree on every site.
  - Only hosts that may take new sites are on the ring (role C(active), or no role given, and a
    capacity state other than C(critical) or C(full)).
version_added: 0.1.0
author: CHOM platform team
options:
  _terms:
    description: Site IDs (non-empty strings), or lists of them.
    required: true
  hosts:
    description:
      - Storage hosts, as names or as dicts with C(name) (or C(hostname)) and optionally
        C(weight), C(capacity_bytes), C(role) and C(capacity_state). Order does not matter.
      - The weight is C(weight) when given, else C(capacity_bytes) divided by
        O(capacity_unit_bytes), else 1. A host gets C(max(1, round(vnodes * weight))) points.
    type: list
    elements: raw
    required: true
  vnodes:
    description: Virtual nodes per unit of weight.
    type: int
    default: 150
  capacity_unit_bytes:
    description: Capacity that counts as weight 1 when a host gives C(capacity_bytes).
    type: int
    default: 1099511627776
notes:
  - Requires the xxhash Python package on the controller.
seealso:
  - module: chom.storage.site_placement
"""

EXAMPLES = r"""
- name: Show where two sites go
  ansible.builtin.debug:
    msg: "{{ query('chom.storage.placement', 'site-1', 'site-2', hosts=['storage-1', 'storage-2']) }}"

- name: Weighted by capacity, with a full host left out
  ansible.builtin.debug:
    msg: >-
      {{ lookup('chom.storage.placement', 'site-42', hosts=[
           {'name': 'storage-1', 'capacity_bytes': 4398046511104},
           {'name': 'storage-2', 'capacity_bytes': 2199023255552, 'capacity_state': 'full'}]) }}
"""

RETURN = r"""
_raw:
  description: One hostname per site ID, in the order given.
  type: list
  elements: str
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.chom.storage.plugins.module_utils.placement import PlacementError, Ring


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        site_ids = []
        for term in terms:  # a list of site IDs may be given as one term
            site_ids.extend(term if isinstance(term, list) else [term])
        if not site_ids:
            raise AnsibleLookupError("placement: give at least one site ID")
        try:
            ring = Ring(self.get_option("hosts"), self.get_option("vnodes"), self.get_option("capacity_unit_bytes"))
            return ring.lookup_many(site_ids)
        except PlacementError as exc:
            raise AnsibleLookupError(f"placement: {exc}") from exc
