from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from ansible_collections.chom.storage.plugins.module_utils.placement import (
    PlacementError,
    Ring,
    merge_points,
    place,
    propose_moves,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
GOLDEN = os.path.join(REPO, "tests/golden/placement.json")
SITES = [f"site-{i:05d}" for i in range(20_000)]


def golden():
    with open(GOLDEN, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("count", ["3", "4", "5"])
def test_core_matches_the_golden_file(count):
    data = golden()
    ring = data["rings"][count]
    assert Ring(ring["hosts"], data["vnodes"]).lookup_many(data["site_ids"]) == ring["placements"]


def test_single_and_bulk_lookup_agree():
    ring = Ring(["a", "b", "c"])
    assert [ring.lookup(s) for s in SITES[:2000]] == ring.lookup_many(SITES[:2000])


def test_host_order_and_form_do_not_matter():
    names = ["storage-1", "storage-2", "storage-3", "storage-4"]
    expected = Ring(names).lookup_many(SITES)
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)
    as_dicts = [{"name": n} for n in shuffled]
    mixed = [{"hostname": shuffled[0], "weight": 1}, *shuffled[1:]]
    for hosts in (shuffled, as_dicts, mixed):
        assert Ring(hosts).lookup_many(SITES) == expected


def test_same_result_in_other_processes_with_other_hash_seeds():
    code = ("import sys; sys.path.insert(0, 'collections');"
            "from ansible_collections.chom.storage.plugins.module_utils.placement import Ring;"
            "print(','.join(Ring(['x', 'y', 'z']).lookup_many([f's{i}' for i in range(500)])))")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                       env=dict(os.environ, PYTHONHASHSEED=seed)).stdout
        for seed in ("0", "1", "12345", "random")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip().split(",") == Ring(["x", "y", "z"]).lookup_many([f"s{i}" for i in range(500)])


def test_collisions_go_to_the_smaller_hostname_whatever_the_order():
    one = merge_points({"b": [10, 20], "a": [20, 30]})
    other = merge_points({"a": [30, 20], "b": [20, 10]})
    assert one == other == ([10, 20, 30], ["b", "a", "a"])
    # Removing the winner hands the position to the other host; nothing else changes.
    assert merge_points({"b": [10, 20]}) == ([10, 20], ["b", "b"])


def test_adding_a_host_moves_only_keys_to_it():
    before = place(SITES, ["h1", {"name": "h2", "weight": 2}, "h3", "h4"])
    after = place(SITES, ["h1", {"name": "h2", "weight": 2}, "h3", "h4", "h5"])
    moved = [s for s in SITES if before[s] != after[s]]
    assert moved and all(after[s] == "h5" for s in moved)
    assert 0.12 < len(moved) / len(SITES) < 0.22


def test_removing_or_excluding_a_host_moves_exactly_its_keys():
    hosts = ["h1", {"name": "h2", "weight": 3}, "h3", {"name": "h4", "weight": 0.5}]
    before = place(SITES, hosts)
    removed = place(SITES, [h for h in hosts if h != "h3"])
    for state in ({"capacity_state": "full"}, {"capacity_state": "critical"}, {"role": "maintenance"},
                  {"role": "unavailable"}, {"role": "decommissioning"}, {"role": "replica"}):
        excluded = place(SITES, [dict({"name": "h3"}, **state) if h == "h3" else h for h in hosts])
        assert excluded == removed
    for site in SITES:
        if before[site] == "h3":
            assert removed[site] != "h3"
        else:
            assert removed[site] == before[site]


def test_warning_and_normal_hosts_stay_on_the_ring():
    hosts = [{"name": "h1", "capacity_state": "warning", "role": "active"}, {"name": "h2", "capacity_state": "normal"}]
    assert set(Ring(hosts).lookup_many(SITES)) == {"h1", "h2"}


def test_weight_follows_capacity_and_tiny_hosts_keep_one_point():
    unit = 1 << 40
    ring = Ring([{"name": "big", "capacity_bytes": 4 * unit}, {"name": "small", "capacity_bytes": unit},
                 {"name": "tiny", "capacity_bytes": 1}])
    assert ring.points() == {"big": 600, "small": 150, "tiny": 1}
    counts = Counter(ring.lookup_many(SITES))
    assert 0.74 < counts["big"] / len(SITES) < 0.86


@pytest.mark.parametrize(
    "hosts,vnodes,message",
    [
        ([], 150, "host list is empty"),
        ([{"name": "a", "weight": 0}], 150, "weight must be a positive number"),
        ([{"name": "a", "weight": -1}], 150, "weight must be a positive number"),
        ([{"name": "a", "capacity_bytes": 0}], 150, "capacity_bytes must be a positive number"),
        (["a", "b", "a"], 150, "duplicate hostnames: a"),
        ([{"name": ""}], 150, "non-empty name"),
        (["a"], 0, "vnodes must be a positive integer"),
        ([{"name": "a", "role": "maintenance"}], 150, "no host may take new sites"),
        ([42], 150, "a host must be a name or a mapping"),
        ([{"name": "a", "weight": float("inf")}], 150, "weight must be a positive number"),
        ([{"name": "a", "weight": float("nan")}], 150, "weight must be a positive number"),
        ([{"name": "a", "capacity_bytes": 2**70}], 150, "more than 100000 points"),
    ],
)
def test_bad_ring_input_is_refused(hosts, vnodes, message):
    with pytest.raises(PlacementError, match=message):
        Ring(hosts, vnodes)


@pytest.mark.parametrize("site_id", ["", "  ", None, 7, ["x"]])
def test_bad_site_ids_are_refused(site_id):
    ring = Ring(["a", "b"])
    with pytest.raises(PlacementError, match="site ID must be a non-empty string"):
        ring.lookup_many(["ok", site_id])
    with pytest.raises(PlacementError, match="site ID must be a non-empty string"):
        ring.lookup(site_id)


def test_proposed_moves_follow_the_new_ring_and_leave_settled_sites():
    current = place(SITES[:3000], ["h1", "h2", "h3"])
    ring = Ring(["h1", "h2", "h3", "h4"])
    moves = propose_moves(current, ring)
    assert moves and all(m["to"] == "h4" and m["from"] == current[m["site_id"]] for m in moves)
    assert {m["site_id"] for m in moves} == {s for s in current if ring.lookup(s) != current[s]}


@pytest.mark.parametrize("unit", [0, -1, 1.5, True])
def test_capacity_unit_must_be_a_positive_integer(unit):
    with pytest.raises(PlacementError, match="capacity_unit_bytes must be a positive integer"):
        Ring([{"name": "a", "capacity_bytes": 10}], 150, unit)
