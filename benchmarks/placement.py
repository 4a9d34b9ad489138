"""Placement benchmark: speed against uhashring, balance, weighting and movement, in one run.

Prints one line per measurement, then a last line:
placement: ratio_4=R ratio_100=R balance_4=B balance_100=B weighted_err_pp=E unaffected_moves=M
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "collections"))

from uhashring import HashRing  # noqa: E402

from ansible_collections.chom.storage.plugins.module_utils.placement import Ring  # noqa: E402

SITES = [f"site-{i:06d}" for i in range(100_000)]
REPEATS = 3


def hosts(count: int) -> list[str]:
    return [f"storage-{i}" for i in range(1, count + 1)]


def best_rate(func) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return len(SITES) / best


def speed(count: int) -> float:
    ring = Ring(hosts(count))
    reference = HashRing(nodes=hosts(count))
    ours_bulk = best_rate(lambda: ring.lookup_many(SITES))
    ours_single = best_rate(lambda: [ring.lookup(s) for s in SITES])
    theirs = best_rate(lambda: [reference.get_node(s) for s in SITES])
    print(f"speed hosts={count}: lookup_many {ours_bulk:,.0f}/s, lookup {ours_single:,.0f}/s, "
          f"uhashring get_node {theirs:,.0f}/s, ratio bulk {ours_bulk / theirs:.2f} single {ours_single / theirs:.2f}")
    return ours_bulk / theirs


def balance(count: int) -> float:
    counts = Counter(Ring(hosts(count)).lookup_many(SITES))
    ratio = max(counts.values()) / (len(SITES) / count)
    print(f"balance hosts={count}: max/mean {ratio:.3f} (min/mean {min(counts.values()) / (len(SITES) / count):.3f})")
    return ratio


def weighted_error() -> float:
    spec = [{"name": "storage-1", "weight": 2}] + [{"name": f"storage-{i}", "weight": 1} for i in (2, 3, 4)]
    counts = Counter(Ring(spec).lookup_many(SITES))
    ideal = {"storage-1": 40.0, "storage-2": 20.0, "storage-3": 20.0, "storage-4": 20.0}
    errors = {h: abs(counts[h] * 100.0 / len(SITES) - ideal[h]) for h in ideal}
    shares = ", ".join(f"{h} {counts[h] * 100.0 / len(SITES):.2f}%" for h in sorted(ideal))
    print(f"weighted 2:1:1:1: {shares}; max error {max(errors.values()):.2f} pp")
    return max(errors.values())


def movement(name: str, before: Ring, after: Ring, involved: str, ideal: float) -> int:
    old, new = before.lookup_many(SITES), after.lookup_many(SITES)
    moved = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    unaffected = sum(1 for a, b in moved if involved not in (a, b))
    print(f"movement {name}: moved {len(moved) * 100.0 / len(SITES):.2f}% (ideal {ideal:.2f}%), "
          f"moves between uninvolved hosts {unaffected}")
    return unaffected


def main() -> int:
    ratio_4, ratio_100 = speed(4), speed(100)
    balance_4, balance_100 = balance(4), balance(100)
    weighted = weighted_error()

    four = hosts(4)
    weighted_four = [{"name": "storage-1", "weight": 2}, "storage-2", "storage-3", {"name": "storage-4", "weight": 0.5}]
    unaffected = 0
    for label, base in (("equal", four), ("weighted", weighted_four)):
        ring = Ring(base)
        unaffected += movement(f"add 5th ({label})", ring, Ring([*base, "storage-5"]), "storage-5",
                               100.0 * Ring([*base, "storage-5"]).points()["storage-5"]
                               / sum(Ring([*base, "storage-5"]).points().values()))
        removed = [h for h in base if (h if isinstance(h, str) else h["name"]) != "storage-3"]
        share_3 = 100.0 * ring.points()["storage-3"] / sum(ring.points().values())
        unaffected += movement(f"remove 1 of 4 ({label})", ring, Ring(removed), "storage-3", share_3)
        excluded = [h if (h if isinstance(h, str) else h["name"]) != "storage-3"
                    else {"name": "storage-3", "capacity_state": "full"} for h in base]
        unaffected += movement(f"exclude 1 of 4 ({label})", ring, Ring(excluded), "storage-3", share_3)

    print(f"placement: ratio_4={ratio_4:.2f} ratio_100={ratio_100:.2f} balance_4={balance_4:.3f} "
          f"balance_100={balance_100:.3f} weighted_err_pp={weighted:.2f} unaffected_moves={unaffected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
