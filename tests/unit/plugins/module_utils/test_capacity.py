from __future__ import annotations

import pytest

from ansible_collections.chom.storage.plugins.module_utils.capacity import (
    DEFAULT_LIMITS,
    assess,
    capacity_state,
    check_limits,
    cpu_times,
    interface_bytes,
    io_wait_percent,
    is_eligible,
    network_percent,
    prune,
    sustained,
)


@pytest.mark.parametrize(
    "percent,state",
    [(0, "normal"), (69.99, "normal"), (70, "warning"), (79.99, "warning"), (80, "critical"),
     (89.99, "critical"), (90, "full"), (100, "full")],
)
def test_disk_share_gives_the_state_at_each_boundary(percent, state):
    assert capacity_state(percent) == state


@pytest.mark.parametrize(
    "thresholds,limits,link,message",
    [
        ((80, 70, 90), {}, 1000, "thresholds must rise"),
        ((70, 80, 80), {}, 1000, "thresholds must rise"),
        ((-1, 80, 90), {}, 1000, "warning threshold must be within 0-100"),
        ((70, 80, 101), {}, 1000, "full threshold must be within 0-100"),
        ((70, 80, 90), {"inode_full_percent": 120}, 1000, "inode_full_percent must be within 0-100"),
        ((70, 80, 90), {}, 0, "link speed must be positive"),
        ((70, 80, 90), {"io_wait_minutes": 0}, 1000, "io_wait_minutes must be positive"),
    ],
)
def test_bad_settings_are_refused(thresholds, limits, link, message):
    with pytest.raises(ValueError, match=message):
        check_limits(thresholds, dict(DEFAULT_LIMITS, **limits), link)


def measures(**overrides):
    return dict(dict(disk_percent=10.0, inode_percent=10.0, network_percent=0.0, backup_success_rate_percent=None),
                **overrides)


@pytest.mark.parametrize(
    "overrides,state,reason",
    [
        ({}, "normal", None),
        ({"disk_percent": 75}, "warning", "disk 75.0 % used (warning from 70 %)"),
        ({"disk_percent": 85}, "critical", "disk 85.0 % used (critical from 80 %)"),
        ({"disk_percent": 95}, "full", "disk 95.0 % used (full from 90 %)"),
        ({"inode_percent": 85.0}, "normal", None),
        ({"inode_percent": 85.1}, "full", "inodes 85.1 % used (> 85.0 %)"),
        ({"network_percent": 80.5}, "full", "network 80.5 % of the link (> 80.0 %)"),
        ({"backup_success_rate_percent": 94.9}, "full", "backup success rate 94.9 % (< 95.0 %)"),
        ({"backup_success_rate_percent": 95.0}, "normal", None),
    ],
)
def test_assess_names_its_reasons(overrides, state, reason):
    got_state, reasons = assess(measures(**overrides))
    assert got_state == state
    assert reasons == ([reason] if reason else [])


def test_sustained_io_wait_makes_the_host_full():
    state, reasons = assess(measures(), io_wait_sustained=True)
    assert state == "full" and reasons == ["I/O wait above 10.0 % for 10 minutes"]


def test_io_wait_must_stay_above_the_limit_for_the_whole_window():
    now = 10_000.0
    every_2_min = [[now - 60 * m, 15.0] for m in (12, 10, 8, 6, 4, 2, 0)]
    assert sustained(every_2_min, now, 10, 10)
    dip = [list(s) for s in every_2_min]
    dip[3][1] = 9.0
    assert not sustained(dip, now, 10, 10)
    too_recent = [s for s in every_2_min if s[0] > now - 600]
    assert not sustained(too_recent, now, 10, 10)
    assert prune(every_2_min, now, 10) == every_2_min[1:]


def test_proc_parsers():
    stat = "cpu  100 0 50 800 40 0 10 0 0 0\ncpu0 1 2 3\n"
    assert cpu_times(stat) == (40, 1000)
    assert io_wait_percent((40, 1000), (90, 1500)) == pytest.approx(10.0)
    netdev = ("Inter-|   Receive\n face |bytes\n"
              "  eth0: 1000 10 0 0 0 0 0 0 5000 20 0 0 0 0 0 0\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n")
    assert interface_bytes(netdev, "eth0") == (1000, 5000)
    with pytest.raises(ValueError, match="interface wlan9 not found"):
        interface_bytes(netdev, "wlan9")
    # 100 MB sent in 1 s on a 1 Gbit/s link: 80 %.
    assert network_percent((0, 0), (0, 100_000_000), 1.0, 1000) == pytest.approx(80.0)


@pytest.mark.parametrize(
    "role,state,eligible",
    [("active", "normal", True), ("active", "warning", True), ("active", "critical", False),
     ("active", "full", False), ("replica", "normal", False), ("unavailable", "normal", False),
     ("maintenance", "normal", False), ("decommissioning", "normal", False), (None, None, True)],
)
def test_one_eligibility_rule(role, state, eligible):
    assert is_eligible(role, state) is eligible
