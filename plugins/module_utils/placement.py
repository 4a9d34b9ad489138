# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Consistent-hash placement of sites onto storage hosts.

The ring
    Each host owns ``points(host) = max(1, round(vnodes * weight))`` positions on a 64-bit
    ring, at ``xxh3_64("<hostname>#<i>")`` for i in 0..points-1. A site belongs to the owner
    of the first position at or after ``xxh3_64(site_id)``, wrapping around. xxh3 is
    unsalted and specified bit for bit, so every machine and process computes the same ring.

Weights
    A host's point count depends on its own weight only, never on the other hosts, so adding
    or removing a host moves only keys to or from that host. The weight is ``weight`` when
    given; otherwise ``capacity_bytes / capacity_unit_bytes`` (one weight unit per TiB by
    default); otherwise 1. A positive weight too small for one point still gets one point.

Collisions
    Two positions that collide are ordered by hostname: the smaller name owns it, whatever
    the order in which hosts were given, and removing either host leaves the other intact.

Eligibility
    Hosts that may not take new sites (see ``capacity.is_eligible``) are left out of the ring,
    which is the same as walking past their positions: only their own keys move, to the next
    eligible position.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ansible_collections.chom.storage.plugins.module_utils.capacity import ineligibility

try:
    from xxhash import xxh3_64_intdigest

    HAS_XXHASH = True
except ImportError:  # pragma: no cover - depends on the controller
    HAS_XXHASH = False

DEFAULT_VNODES = 150
# Upper bound of one host's points: a weight this large is a mistake (wrong unit), not a host.
MAX_POINTS_PER_HOST = 100_000
CAPACITY_UNIT_BYTES = 1 << 40
RING_SIZE = 1 << 64


class PlacementError(ValueError):
    """Input that cannot make a valid ring; the message says which and why."""


class NoEligibleHost(PlacementError):
    """Every host is excluded from taking new sites."""


@dataclass(frozen=True)
class StorageHost:
    name: str
    weight: float = 1.0
    role: str | None = None
    capacity_state: str | None = None

    @property
    def eligible_reason(self) -> str | None:
        return ineligibility(self.role, self.capacity_state)


def parse_host(raw, capacity_unit_bytes: int = CAPACITY_UNIT_BYTES) -> StorageHost:
    """A host given as a name or as a mapping with name/hostname, weight or capacity_bytes."""
    if isinstance(raw, str):
        name, spec = raw, {}
    elif isinstance(raw, Mapping):
        spec = raw
        name = spec.get("name", spec.get("hostname"))
    else:
        raise PlacementError(f"a host must be a name or a mapping, got {type(raw).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise PlacementError(f"every host needs a non-empty name, got {name!r}")

    if spec.get("weight") is not None:
        weight = spec["weight"]
        source = "weight"
    elif spec.get("capacity_bytes") is not None:
        weight = spec["capacity_bytes"] / capacity_unit_bytes if _is_number(spec["capacity_bytes"]) else None
        source = "capacity_bytes"
    else:
        weight, source = 1.0, "default"
    if not _is_number(weight) or weight <= 0:
        raise PlacementError(f"host {name}: {source} must be a positive number, got {spec.get(source)!r}")
    return StorageHost(name=name, weight=float(weight), role=spec.get("role"),
                       capacity_state=spec.get("capacity_state"))


def _is_number(value) -> bool:
    """A real, finite number (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def points_for(weight: float, vnodes: int) -> int:
    return max(1, round(vnodes * weight))


def merge_points(points_by_host: Mapping[str, Iterable[int]]) -> tuple[list[int], list[str]]:
    """Sorted ring positions and their owners; on a collision the smaller hostname wins."""
    owners_at: dict[int, str] = {}
    for name in sorted(points_by_host):
        for position in points_by_host[name]:
            owners_at.setdefault(position, name)
    positions = sorted(owners_at)
    return positions, [owners_at[p] for p in positions]


def hash_key(text: str) -> int:
    return xxh3_64_intdigest(text.encode("utf-8"))


class Ring:
    """An immutable ring over the eligible hosts; build a new one when hosts change."""

    def __init__(self, hosts: Iterable, vnodes: int = DEFAULT_VNODES, capacity_unit_bytes: int = CAPACITY_UNIT_BYTES):
        if not HAS_XXHASH:
            raise PlacementError("the xxhash Python package is required for placement")
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise PlacementError(f"vnodes must be a positive integer, got {vnodes!r}")
        if isinstance(capacity_unit_bytes, bool) or not isinstance(capacity_unit_bytes, int) or capacity_unit_bytes < 1:
            raise PlacementError(f"capacity_unit_bytes must be a positive integer, got {capacity_unit_bytes!r}")
        parsed = [parse_host(raw, capacity_unit_bytes) for raw in hosts]
        if not parsed:
            raise PlacementError("the host list is empty")
        names = [host.name for host in parsed]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PlacementError(f"duplicate hostnames: {', '.join(duplicates)}")

        oversized = sorted(h.name for h in parsed if vnodes * h.weight > MAX_POINTS_PER_HOST)
        if oversized:
            raise PlacementError(f"hosts {', '.join(oversized)} would get more than {MAX_POINTS_PER_HOST} points; "
                                 "check the weights and capacity_unit_bytes")
        self.vnodes = vnodes
        self.hosts = {host.name: host for host in parsed}
        self.excluded = {host.name: host.eligible_reason for host in parsed if host.eligible_reason}
        eligible = sorted(name for name in self.hosts if name not in self.excluded)
        if not eligible:
            raise NoEligibleHost("no host may take new sites: " +
                                 "; ".join(f"{n}: {r}" for n, r in sorted(self.excluded.items())))

        self._positions, self._owners = merge_points(
            {name: [hash_key(f"{name}#{i}") for i in range(points_for(self.hosts[name].weight, vnodes))]
             for name in eligible}
        )
        self.eligible = eligible

    def points(self) -> dict[str, int]:
        counts = dict.fromkeys(self.eligible, 0)
        for owner in self._owners:
            counts[owner] += 1
        return counts

    def lookup(self, site_id: str) -> str:
        _check_site_id(site_id)
        index = bisect_left(self._positions, hash_key(site_id))
        return self._owners[index if index < len(self._owners) else 0]

    def lookup_many(self, site_ids: Iterable[str]) -> list[str]:
        """Hosts for many sites at once; the fast path for bulk placement."""
        positions, owners, first = self._positions, self._owners, self._owners[0]
        count = len(positions)
        bisect, digest = bisect_left, xxh3_64_intdigest
        result = []
        append = result.append
        for site_id in site_ids:
            if type(site_id) is not str or not site_id or site_id.isspace():
                _check_site_id(site_id)
            index = bisect(positions, digest(site_id.encode()))
            append(owners[index] if index < count else first)
        return result


def _check_site_id(site_id) -> None:
    if not isinstance(site_id, str) or not site_id.strip():
        raise PlacementError(f"a site ID must be a non-empty string, got {site_id!r}")


def place(site_ids: Iterable[str], hosts: Iterable, vnodes: int = DEFAULT_VNODES) -> dict[str, str]:
    """Host of each site on a ring built from ``hosts``."""
    ring = Ring(hosts, vnodes)
    site_ids = list(site_ids)
    return dict(zip(site_ids, ring.lookup_many(site_ids), strict=True))


def propose_moves(current: Mapping[str, str], ring: Ring) -> list[dict]:
    """Moves a ring implies for sites already placed: site, from, to. Nothing is moved here."""
    sites = sorted(current)
    wanted = ring.lookup_many(sites)
    return [
        {"site_id": site, "from": current[site], "to": host}
        for site, host in zip(sites, wanted, strict=True)
        if current[site] != host
    ]
