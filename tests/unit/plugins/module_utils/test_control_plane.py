from __future__ import annotations

import pytest

from ansible_collections.chom.storage.plugins.module_utils.control_plane import (
    HOST_ROLES,
    MIGRATIONS,
    host_changes,
)


def test_migration_versions_are_consecutive_and_checksums_stable():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[0].checksum == MIGRATIONS[0].checksum
    assert len({m.checksum for m in MIGRATIONS}) == len(MIGRATIONS)


def test_schema_constrains_roles_to_the_product_vocabulary():
    sql = MIGRATIONS[0].sql
    for role in HOST_ROLES:
        assert f"'{role}'" in sql
    assert "capacity_percent numeric(5, 2) GENERATED ALWAYS AS" in sql
    assert "sites_storage_host_id_idx" in sql


STORED = {"ip_address": "10.0.0.1", "role": "active", "total_capacity_bytes": 100, "region": "default"}


def test_new_host_registers_every_field():
    wanted = dict(STORED)
    assert host_changes(None, wanted, enforce_role=False) == wanted


def test_unchanged_host_needs_no_write():
    assert host_changes(dict(STORED, id="x", used_capacity_bytes=5), dict(STORED), enforce_role=False) == {}


@pytest.mark.parametrize("field,value", [("ip_address", "10.0.0.2"), ("total_capacity_bytes", 200),
                                         ("region", "eu-1")])
def test_changed_field_is_the_only_change(field, value):
    assert host_changes(dict(STORED), dict(STORED, **{field: value}), enforce_role=False) == {field: value}


def test_role_is_operational_state_unless_enforced():
    wanted = dict(STORED, role="replica")
    assert host_changes(dict(STORED, role="unavailable"), wanted, enforce_role=False) == {}
    assert host_changes(dict(STORED, role="unavailable"), wanted, enforce_role=True) == {"role": "replica"}
