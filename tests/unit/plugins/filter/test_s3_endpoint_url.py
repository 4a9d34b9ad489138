"""The s3_endpoint_url filter builds a storage host's S3 URL from its variables."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.chom.storage.plugins.filter.s3_endpoint_url import s3_endpoint_url


def test_listen_address_and_own_port_win():
    host = {"object_store_listen_address": "10.0.0.5", "ansible_host": "192.0.2.1", "object_store_s3_port": 9000}
    assert s3_endpoint_url(host) == "http://10.0.0.5:9000"


def test_falls_back_to_ansible_host_and_default_port():
    assert s3_endpoint_url({"ansible_host": "192.0.2.1"}, 8443) == "http://192.0.2.1:8443"


def test_ipv6_is_bracketed():
    assert s3_endpoint_url({"ansible_host": "fd00::10"}) == "http://[fd00::10]:8333"


def test_no_address_is_an_error():
    with pytest.raises(AnsibleFilterError, match="neither"):
        s3_endpoint_url({})
