# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: s3_endpoint_url
short_description: The S3 endpoint URL of a storage host, from its host variables
description:
  - Builds C(http://<address>:<port>) from a storage host's variables, as the object_store role
    serves it - C(object_store_listen_address) (else C(ansible_host)) and C(object_store_s3_port)
    (else the port given).
version_added: 0.1.0
author: CHOM platform team
positional: default_port
options:
  _input:
    description: The host's variables, for example C(hostvars['storage-1']).
    type: dict
    required: true
  default_port:
    description: Port used when the host has no C(object_store_s3_port).
    type: int
    default: 8333
"""

EXAMPLES = r"""
- name: Endpoint of storage-1
  ansible.builtin.debug:
    msg: "{{ hostvars['storage-1'] | chom.storage.s3_endpoint_url }}"
"""

RETURN = r"""
_value:
  description: The endpoint URL; IPv6 addresses are bracketed.
  type: str
"""

from ansible.errors import AnsibleFilterError


def s3_endpoint_url(host_vars, default_port=8333):
    if not hasattr(host_vars, "get"):
        raise AnsibleFilterError("s3_endpoint_url expects a host's variables (hostvars[name])")
    address = host_vars.get("object_store_listen_address") or host_vars.get("ansible_host") \
        or host_vars.get("inventory_hostname")
    if not address:
        raise AnsibleFilterError("the host has neither object_store_listen_address nor ansible_host")
    port = int(host_vars.get("object_store_s3_port") or default_port)
    address = str(address)
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"http://{address}:{port}"


class FilterModule:
    def filters(self):
        return {"s3_endpoint_url": s3_endpoint_url}
