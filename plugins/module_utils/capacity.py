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


# ---------------------------------------------------------------- measuring a host

DEFAULT_LIMITS = {
    "inode_full_percent": 85.0,
    "io_wait_percent": 10.0,
    "io_wait_minutes": 10.0,
    "network_percent": 80.0,
    "backup_success_min_percent": 95.0,
}


def check_limits(thresholds, limits: dict, link_speed_mbps: float) -> None:
    """Raise ValueError with one clear sentence for settings that cannot be right."""
    warning, critical, full = thresholds
    for name, value in (("warning", warning), ("critical", critical), ("full", full)):
        if not 0 <= value <= 100:
            raise ValueError(f"{name} threshold must be within 0-100, got {value}")
    if not warning < critical < full:
        raise ValueError(f"thresholds must rise: warning {warning} < critical {critical} < full {full}")
    for name in ("inode_full_percent", "io_wait_percent", "network_percent", "backup_success_min_percent"):
        if not 0 <= limits[name] <= 100:
            raise ValueError(f"{name} must be within 0-100, got {limits[name]}")
    if limits["io_wait_minutes"] <= 0:
        raise ValueError(f"io_wait_minutes must be positive, got {limits['io_wait_minutes']}")
    if link_speed_mbps <= 0:
        raise ValueError(f"link speed must be positive, got {link_speed_mbps} Mbit/s")


def cpu_times(stat_text: str) -> tuple[int, int]:
    """(iowait, total) jiffies from the first line of /proc/stat."""
    fields = [int(v) for v in stat_text.splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
    return fields[4], sum(fields[:8])


def io_wait_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 0.0 if total <= 0 else max(0.0, (after[0] - before[0]) * 100.0 / total)


def interface_bytes(netdev_text: str, interface: str) -> tuple[int, int]:
    """(received, transmitted) bytes of ``interface`` from /proc/net/dev."""
    for line in netdev_text.splitlines()[2:]:
        name, _, data = line.partition(":")
        if name.strip() == interface:
            values = data.split()
            return int(values[0]), int(values[8])
    raise ValueError(f"network interface {interface} not found")


def network_percent(before: tuple[int, int], after: tuple[int, int], seconds: float, link_speed_mbps: float) -> float:
    """Busiest direction's throughput as a share of the link speed (full duplex)."""
    if seconds <= 0:
        return 0.0
    busiest = max(after[0] - before[0], after[1] - before[1])
    return max(0.0, busiest * 8 / seconds / (link_speed_mbps * 1_000_000) * 100.0)


def _anchor(history: list[list[float]], window_start: float) -> int | None:
    """Index of the newest sample taken at or before ``window_start``, if any."""
    anchors = [index for index, (stamp, _) in enumerate(history) if stamp <= window_start]
    return anchors[-1] if anchors else None


def sustained(history: list[list[float]], now: float, minutes: float, limit: float) -> bool:
    """True when every sample since ``minutes`` ago is above ``limit`` and the samples reach back that far.

    ``history`` is a list of [timestamp, value], oldest first, kept on the host between runs. The
    newest sample taken at or before the window's start anchors it: without one the window is not
    covered yet, and the rule cannot hold.
    """
    anchor = _anchor(history, now - minutes * 60)
    return anchor is not None and all(value > limit for _, value in history[anchor:])


def prune(history: list[list[float]], now: float, minutes: float) -> list[list[float]]:
    """Keep the samples a later ``sustained`` call can need: the window plus its anchor."""
    anchor = _anchor(history, now - minutes * 60)
    return history if anchor is None else history[anchor:]


def assess(measures: dict, thresholds=DEFAULT_THRESHOLDS, limits=None, io_wait_sustained: bool = False):
    """Capacity state and the reasons for it.

    The disk share gives normal, warning, critical or full by ``thresholds``. Independently,
    a host counts as full when inodes pass ``inode_full_percent``, I/O wait stayed above its
    limit for ``io_wait_minutes``, the network passes ``network_percent`` of the link, or the
    backup success rate falls below ``backup_success_min_percent``.
    """
    limits = dict(DEFAULT_LIMITS, **(limits or {}))
    state = capacity_state(measures["disk_percent"], thresholds)
    reasons = []
    if state != "normal":
        bound = dict(zip(("warning", "critical", "full"), thresholds, strict=True))[state]
        reasons.append(f"disk {measures['disk_percent']:.1f} % used ({state} from {bound:g} %)")
    full_reasons = []
    if measures["inode_percent"] > limits["inode_full_percent"]:
        full_reasons.append(f"inodes {measures['inode_percent']:.1f} % used (> {limits['inode_full_percent']} %)")
    if io_wait_sustained:
        full_reasons.append(f"I/O wait above {limits['io_wait_percent']} % for {limits['io_wait_minutes']:g} minutes")
    if measures.get("network_percent", 0.0) > limits["network_percent"]:
        share = measures["network_percent"]
        full_reasons.append(f"network {share:.1f} % of the link (> {limits['network_percent']} %)")
    rate = measures.get("backup_success_rate_percent")
    if rate is not None and rate < limits["backup_success_min_percent"]:
        full_reasons.append(f"backup success rate {rate:.1f} % (< {limits['backup_success_min_percent']} %)")
    if full_reasons:
        state = "full"
        reasons.extend(full_reasons)
    return state, reasons
