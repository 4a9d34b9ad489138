"""Write tests/golden/placement.json: 1,000 site IDs placed on 3, 4 and 5 hosts.

Run only when the placement algorithm is meant to change; every existing site would move.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "collections"))

from ansible_collections.chom.storage.plugins.module_utils.placement import DEFAULT_VNODES, Ring  # noqa: E402

SITE_IDS = [f"site-{i:04d}" for i in range(1, 1001)]
HOST_COUNTS = (3, 4, 5)


def main() -> None:
    golden = {"vnodes": DEFAULT_VNODES, "site_ids": SITE_IDS, "rings": {}}
    for count in HOST_COUNTS:
        hosts = [f"storage-{i}" for i in range(1, count + 1)]
        golden["rings"][str(count)] = {"hosts": hosts, "placements": Ring(hosts).lookup_many(SITE_IDS)}
    with open(os.path.join(HERE, "placement.json"), "w", encoding="utf-8") as handle:
        json.dump(golden, handle, indent=0)
        handle.write("\n")


if __name__ == "__main__":
    main()
