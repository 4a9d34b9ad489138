# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Capacity states of a storage host and the one rule deciding who may take new sites."""

from __future__ import annotations

CAPACITY_STATES = ("normal", "warning", "critical", "full")
# Lower bounds, in percent of disk used, of warning, critical and full.
DEFAULT_THRESHOLDS = (70.0, 80.0, 90.0)
# Roles that keep their data but take no new sites. Only active hosts take new sites: a
# replica receives copies, never direct writes.
WRITABLE_ROLES = ("active",)
CLOSED_CAPACITY_STATES = ("critical", "full")


def capacity_state(used_percent: float, thresholds=DEFAULT_THRESHOLDS) -> str:
    """normal < 70 % <= warning < 80 % <= critical < 90 % <= full (by default)."""
    warning, critical, full = thresholds
    if not 0 <= warning < critical < full <= 100:
        raise ValueError(f"thresholds must rise strictly within 0-100, got {list(thresholds)}")
    if used_percent >= full:
        return "full"
    if used_percent >= critical:
        return "critical"
    if used_percent >= warning:
        return "warning"
    return "normal"


def ineligibility(role: str | None, state: str | None) -> str | None:
    """Why a host may not take new sites, or None when it may."""
    if role is not None and role not in WRITABLE_ROLES:
        return f"role is {role}"
    if state in CLOSED_CAPACITY_STATES:
        return f"capacity state is {state}"
    return None


def is_eligible(role: str | None, state: str | None) -> bool:
    """The single eligibility rule shared by placement and capacity gating."""
    return ineligibility(role, state) is None
