"""Pure parts of the migration engine: checksums, the memory budget, settings, object headers."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import pytest

from ansible_collections.chom.storage.plugins.module_utils.migration import (
    SHA256_METADATA,
    ByteBudget,
    MigrationRefused,
    Settings,
    composite_checksum,
    content_args,
)

MiB = 1024 * 1024


def test_composite_checksum_is_the_s3_composite_of_part_digests():
    parts = [b"a" * 10, b"b" * 7]
    digests = [hashlib.sha256(p).digest() for p in parts]
    expected = base64.b64encode(hashlib.sha256(digests[0] + digests[1]).digest()).decode() + "-2"
    assert composite_checksum(digests) == expected
    assert composite_checksum(digests) != composite_checksum(digests[::-1])


def test_byte_budget_blocks_until_bytes_are_released():
    budget = ByteBudget(10)
    assert budget.acquire(6) == 6
    got = []
    waiter = threading.Thread(target=lambda: got.append(budget.acquire(6)))
    waiter.start()
    time.sleep(0.2)
    assert got == [] and budget.used == 6
    budget.release(6)
    waiter.join(5)
    assert got == [6] and budget.used == 6


def test_byte_budget_caps_a_request_larger_than_the_limit():
    budget = ByteBudget(10)
    assert budget.acquire(50) == 10
    budget.release(10)
    assert budget.used == 0


@pytest.mark.parametrize("change, message", [
    (dict(strategy="fast"), "strategy"),
    (dict(buckets=()), "bucket"),
    (dict(part_size=4 * MiB), "part_size"),
    (dict(multipart_threshold=5 * MiB, part_size=8 * MiB), "multipart_threshold"),
    (dict(concurrency=0), "concurrency"),
    (dict(memory_budget=MiB), "memory_budget"),
    (dict(retain_hours=-1), "retain_hours"),
    (dict(max_delta_rounds=0), "max_delta_rounds"),
])
def test_settings_refuse_bad_values(change, message):
    with pytest.raises(MigrationRefused, match=message):
        Settings(**change).check()


def test_defaults_are_valid():
    Settings().check()


def test_content_headers_travel_but_our_checksum_metadata_does_not():
    response = {"ContentType": "application/gzip", "CacheControl": "no-cache", "ContentEncoding": "",
                "Metadata": {"owner": "site-1", SHA256_METADATA: "0" * 64}}
    assert content_args(response) == {"ContentType": "application/gzip", "CacheControl": "no-cache",
                                      "Metadata": {"owner": "site-1"}}
