"""The main job on the lab, end to end, the way CHOM-APP uses chom-storage.

Registers a handful of sites (12 when the lab has scale-out hosts, else 5), lets placement give
each an active storage host, and stores each site's backup on its placed host through the S3 API
(path-style, the app's own key). Runs one replication, then reads every object of the primary
back from the replica and checks the bytes. Sites placed on scale-out hosts (group storage_pool)
are not replicated in this topology phase. The last line reports what was measured:

    lab: ok hosts=N objects_replicated=N replication_lag_seconds=S
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "collections"))

from ansible_collections.chom.storage.plugins.module_utils.naming import item_key  # noqa: E402
from ansible_collections.chom.storage.plugins.module_utils.s3 import make_client  # noqa: E402

BUCKET = "chom-backups"


def inventory():
    out = subprocess.run(
        [os.path.join(REPO, ".venv/bin/ansible-inventory"), "-i", os.path.join(REPO, "inventories/lab"), "--list"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    return yaml.safe_load(out)


def ssh(ip: str, command: str) -> subprocess.CompletedProcess:
    lab = os.environ.get("CHOM_LAB_STATE", "/var/lib/chom-lab")
    return subprocess.run(
        ["ssh", "-i", f"{lab}/ssh/id_ed25519", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab}/known_hosts",
         f"root@{ip}", command],
        capture_output=True, text=True, check=False,
    )


def place_sites(hostvars: dict, db_password: str, sites: list[str]) -> dict[str, str]:
    """Register the demo sites, run playbooks/place_sites.yml, and read back each site's host."""
    connection = dict(host="127.0.0.1", port=hostvars["control_plane_db_port"], dbname="chom", user="chom_storage",
                      password=db_password)
    with psycopg.connect(**connection, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO sites (id, tier) VALUES (%s, 'pro') ON CONFLICT (id) DO NOTHING",
                            [(s,) for s in sites])
    subprocess.run([os.path.join(REPO, ".venv/bin/ansible-playbook"), "-i", os.path.join(REPO, "inventories/lab"),
                    os.path.join(REPO, "playbooks/place_sites.yml")], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    with psycopg.connect(**connection) as conn:
        rows = conn.execute("SELECT s.id, h.hostname FROM sites s JOIN storage_hosts h ON h.id = s.storage_host_id"
                            " WHERE s.id = ANY(%s)", (sites,)).fetchall()
    placement = dict(rows)
    missing = sorted(set(sites) - set(placement))
    if missing:
        raise SystemExit(f"lab: placement left {', '.join(missing)} without a host")
    return placement


def compare(src, dst):
    """Number of objects identical on both sides, or a message naming the first difference.

    The platform's own keys (``_platform/``, such as replication's freshness marker) are not
    replicated by design and are left out.
    """
    verified = 0
    for page in src.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            if item["Key"].startswith("_platform/"):
                continue
            a = src.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            try:
                b = dst.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            except dst.exceptions.NoSuchKey:
                return f"{item['Key']} is missing"
            if hashlib.sha256(a).digest() != hashlib.sha256(b).digest():
                return f"{item['Key']} differs"
            verified += 1
    return verified


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, help="number of sites (default 12 with scale-out hosts, else 5)")
    args = parser.parse_args()

    inv = inventory()
    if args.sites is None:
        args.sites = 12 if inv.get("storage_pool", {}).get("hosts") else 5
    hostvars = inv["_meta"]["hostvars"]
    primary = inv["storage_primary"]["hosts"][0]
    replica = inv["storage_replica"]["hosts"][0]
    secrets = yaml.safe_load(open(os.path.join(REPO, "inventories/lab/group_vars/all/lab_secrets.yml")))
    key = (secrets["lab_app_access_key"], secrets["lab_app_secret_key"])
    hosts = {name: hostvars[name]["ansible_host"] for name in hostvars if name.startswith("storage-")}
    pool = inv.get("storage_pool", {}).get("hosts", [])
    src = make_client(f"http://{hosts[primary]}:8333", *key)
    dst = make_client(f"http://{hosts[replica]}:8333", *key)

    # CHOM-APP creates its sites; placement gives each new one a storage host.
    sites = [f"site-{n:03d}" for n in range(1, args.sites + 1)]
    placement = place_sites(hostvars[primary], secrets["lab_db_password"], sites)

    now = datetime.now(UTC)
    for n, site in enumerate(sites, start=1):
        host = placement[site]
        body = os.urandom(64 * 1024 * n)
        name = item_key(site, "full", now, "files.tar.gz")
        client = make_client(f"http://{hosts[host]}:8333", *key)
        client.put_object(Bucket=BUCKET, Key=name, Body=body, ContentType="application/gzip")
        digest = hashlib.sha256(body).hexdigest()[:16]
        print(f"stored {BUCKET}/{name} on {host}, the host placement chose ({len(body)} bytes, sha256 {digest})")
    spread = {host: sorted(s for s, h in placement.items() if h == host) for host in sorted(set(placement.values()))}
    print("sites by host: " + "; ".join(f"{host} {len(names)}" for host, names in spread.items()))
    unreplicated = sorted(s for s, h in placement.items() if h in pool)
    if unreplicated:
        print(f"{len(unreplicated)} site(s) on scale-out hosts are not replicated in this topology phase")

    # A timer run that started before the uploads may still be going: `systemctl start` then
    # waits for it, so a second run is made if the first did not cover every object.
    for attempt in (1, 2):
        run = ssh(hosts[primary], "systemctl start chom-replication.service; rc=$?; "
                  "journalctl -u chom-replication.service -n 4 --no-pager -o cat; exit $rc")
        print(run.stdout.strip())
        if run.returncode != 0:
            print(f"lab: replication run failed on {primary}: {run.stderr.strip()}", file=sys.stderr)
            return 1
        missing = compare(src, dst)
        if isinstance(missing, int):
            verified = missing
            break
        if attempt == 2:
            print(f"lab: {replica} after two runs: {missing}", file=sys.stderr)
            return 1
    print(f"{verified} object(s) byte-identical on {replica}")

    metrics = ssh(hosts[primary], "cat /var/lib/prometheus/node-exporter/chom_storage_replication.prom").stdout
    match = re.search(r"^chom_storage_replication_lag_seconds\{[^}]*\} (\S+)$", metrics, re.M)
    if not match:
        print("lab: no replication lag metric on the primary", file=sys.stderr)
        return 1
    lag = float(match.group(1))

    # The storage hosts pull the sites' files from the customer VPS: today's file-tier snapshot.
    subprocess.run([os.path.join(REPO, ".venv/bin/ansible-playbook"), "-i", os.path.join(REPO, "inventories/lab"),
                    os.path.join(REPO, "playbooks/snapshot_sites.yml")], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    snapshots = 0
    for host in sorted(hosts):
        listing = ssh(hosts[host], "ls -1 /mnt/chom-storage/snapshots/*/ 2>/dev/null | grep -c '^[0-9]*T[0-9]*Z$'")
        snapshots += int(listing.stdout.strip() or 0)
    print(f"{snapshots} file-tier snapshot(s) on the storage hosts")
    print(f"lab: ok hosts={len(hosts)} objects_replicated={verified} replication_lag_seconds={lag:.1f} "
          f"snapshots={snapshots} sites={len(sites)} hosts_with_sites={len(spread)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
