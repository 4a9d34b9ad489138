# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Stored items of a bucket, found by listing alone, for the backup validation and offsite modules.

An item is every object below ``<site>/<kind>/<stamp>/`` (see ``naming``). Its marker objects
(``<item>.chom/valid`` ...) are reported as markers, not as objects of the item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ansible_collections.chom.storage.plugins.module_utils.naming import (
    KINDS,
    MARKER_DIR,
    MARKERS,
    NamingError,
    check_site,
    parse_key,
    parse_stamp,
)

STAMPED_KINDS = tuple(kind for kind in KINDS if kind != "media")


@dataclass
class StoredItem:
    bucket: str
    site: str
    kind: str
    created: datetime
    prefix: str  # "<site>/<kind>/<stamp>/"
    objects: list = field(default_factory=list)  # dicts with key, name, size, etag
    markers: set = field(default_factory=set)

    @property
    def stamp(self) -> str:
        return self.prefix.split("/")[2]


def parse_now(text: str | None) -> datetime:
    """``now`` for a run: the clock, or a given time (a stamp or ISO 8601 with a zone) for tests and replays."""
    if not text:
        return datetime.now(UTC)
    try:
        return parse_stamp(text)
    except ValueError:  # not a stamp, or not a real date
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise NamingError(f"now={text!r} is neither a stamp YYYYMMDDTHHMMSSZ nor an ISO 8601 time") from exc
    if when.tzinfo is None:
        raise NamingError(f"now={text!r} has no time zone; write it in UTC, e.g. 2026-01-31T02:00:00+00:00")
    return when.astimezone(UTC)


def list_sites(client, bucket: str) -> list[str]:
    """Top-level prefixes of a bucket that are site IDs."""
    sites = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/"):
        for entry in page.get("CommonPrefixes", []):
            name = entry["Prefix"].rstrip("/")
            try:
                sites.append(check_site(name))
            except NamingError:
                continue
    return sorted(sites)


def list_objects(client, bucket: str, prefix: str):
    """Every object below ``prefix``: dicts with key, size and etag (quotes removed)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            yield {"key": entry["Key"], "size": entry["Size"], "etag": entry.get("ETag", "").strip('"')}


def group_items(bucket: str, objects, key_offset: int = 0) -> list[StoredItem]:
    """Objects grouped into items; keys outside the naming scheme and media are left out.

    ``key_offset`` skips a leading part of each key (an offsite copy's ``<prefix><bucket>/``).
    """
    items: dict[str, StoredItem] = {}
    for obj in objects:
        parsed = parse_key(obj["key"][key_offset:])
        if parsed is None or parsed.kind == "media":
            continue
        item = items.get(parsed.item)
        if item is None:
            item = items[parsed.item] = StoredItem(bucket, parsed.site, parsed.kind, parsed.created, parsed.item)
        if parsed.name.startswith(MARKER_DIR):
            marker = parsed.name[len(MARKER_DIR):]
            if marker in MARKERS:
                item.markers.add(marker)
            continue
        item.objects.append(dict(obj, name=parsed.name))
    return sorted(items.values(), key=lambda i: (i.site, i.kind, i.created))


def list_items(client, bucket: str, kinds, sites=None) -> list[StoredItem]:
    """Items of ``kinds`` in ``bucket``, for ``sites`` (default: every site the bucket holds)."""
    found = []
    for site in sites if sites is not None else list_sites(client, bucket):
        for kind in kinds:
            found += group_items(bucket, list_objects(client, bucket, f"{site}/{kind}/"))
    return [item for item in found if item.objects or item.markers]
