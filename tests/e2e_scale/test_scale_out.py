"""Scale-out runbooks on the lab with scale-out hosts (group storage_pool): add a host, decommission
one that holds sites, refuse the last active host, rebalance a bounded batch, and stop before any
host when the control plane cannot be reached.

The tests run in file order and share the lab: the host added first is the one decommissioned
(with three hosts) or the last pool host (with four); a decommissioned host is brought back with
add_storage_host before rebalancing onto it.
"""

from __future__ import annotations

import os
import re
import uuid

import psycopg
import pytest

from ansible_collections.chom.storage.plugins.module_utils.control_plane import placement_hosts, site_hosts
from ansible_collections.chom.storage.plugins.module_utils.placement import Ring, propose_moves

BUCKET = "chom-backups"
HOST_TASK = re.compile(r"^(?:ok|changed): \[(storage-\d+)\]", re.M)


def db(lab):
    return psycopg.connect(host="127.0.0.1", port=lab.hostvars[lab.primary]["control_plane_db_port"], dbname="chom",
                           user="chom_storage", password=lab.secrets["lab_db_password"], autocommit=True)


def hosts(lab) -> dict[str, tuple[str, str]]:
    with db(lab) as conn:
        rows = conn.execute("SELECT hostname, host(ip_address), role FROM storage_hosts").fetchall()
    return {name: (ip, role) for name, ip, role in rows}


def placements(lab) -> dict[str, str]:
    with db(lab) as conn:
        rows = conn.execute("SELECT s.id, h.hostname FROM sites s JOIN storage_hosts h ON h.id = s.storage_host_id"
                            " WHERE s.deleted_at IS NULL").fetchall()
    return dict(rows)


def recap(run) -> dict[str, str]:
    text = run.stdout[run.stdout.index("PLAY RECAP"):]
    return {line.split()[0]: line for line in text.splitlines()[1:] if ":" in line}


def playbook(lab, name: str, *extra: str):
    return lab.playbook("-i", "inventories/lab", f"playbooks/{name}", *extra)


def prometheus_targets() -> str:
    with open("/var/lib/chom-lab/prometheus/prometheus.yml", encoding="utf-8") as handle:
        return handle.read()


def bring_back(lab, host: str) -> None:
    """Make a decommissioned lab host active again: its role, then its services through add_storage_host."""
    with db(lab) as conn:
        conn.execute("UPDATE storage_hosts SET role = 'active', updated_at = now()"
                     " WHERE hostname = %s AND role <> 'active'", (host,))
    run = playbook(lab, "add_storage_host.yml", "-e", f"new_host={host}")
    assert run.returncode == 0, run.stdout[-3000:]


@pytest.fixture(scope="module")
def added(lab) -> str:
    return lab.pool[-1]


@pytest.fixture(scope="module")
def retired(lab) -> str:
    return lab.pool[0]


def test_add_storage_host_registers_it_and_a_second_run_changes_nothing(lab, added):
    first = playbook(lab, "add_storage_host.yml", "-e", f"new_host={added}")
    assert first.returncode == 0, first.stdout[-3000:]
    ip, role = hosts(lab)[added]
    assert ip == lab.ip(added)
    assert role in ("active", "decommissioning")  # an earlier run's role is operational state, kept
    if role != "active":
        bring_back(lab, added)
    assert f'storage_host: "{added}"' in prometheus_targets()

    second = playbook(lab, "add_storage_host.yml", "-e", f"new_host={added}")
    assert second.returncode == 0, second.stdout[-3000:]
    for host, line in recap(second).items():
        assert "changed=0" in line and "failed=0" in line, f"second run changed {host}: {line}"


def test_add_storage_host_refuses_a_name_or_address_registered_under_another_identity(lab, added):
    # The new host claims the primary's address: the address is registered as the primary, and
    # the name is registered with another address.
    run = playbook(lab, "add_storage_host.yml", "-e", f"new_host={added}",
                   "-e", f"object_store_listen_address={lab.ip(lab.primary)}")
    assert run.returncode != 0
    assert f"the address {lab.ip(lab.primary)} is registered as {lab.primary}" in run.stdout, run.stdout[-2000:]
    assert f"the name {added} is registered with address {lab.ip(added)}" in run.stdout
    assert HOST_TASK.findall(run.stdout) == []
    assert hosts(lab)[added][0] == lab.ip(added)


@pytest.fixture(scope="module")
def stored(lab, retired):
    """Fresh sites placed over the active hosts, each with a few objects on its host, some on ``retired``."""
    if hosts(lab)[retired][1] != "active":
        bring_back(lab, retired)
    tag = uuid.uuid4().hex[:6]
    bodies: dict[str, dict[str, bytes]] = {}
    n = 0
    while not any(h == retired for s, h in placements(lab).items() if s in bodies):
        new = [f"scale-{tag}-{n + i:02d}" for i in range(6)]
        n += len(new)
        with db(lab) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO sites (id, tier) VALUES (%s, 'pro')", [(s,) for s in new])
        run = playbook(lab, "place_sites.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        bodies.update({s: {} for s in new})
        assert n < 60, f"placement put none of {n} sites on {retired}"
    where = placements(lab)
    for site in bodies:
        client = lab.s3(where[site])
        for i, size in enumerate((1000, 150_000, 20 * 1024 * 1024 if site.endswith("-00") else 3000)):
            key = f"{site}/full/20261204T0{i}0000Z/files-{i}.tar.gz"
            body = os.urandom(size)
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
            bodies[site][key] = body
    return bodies


def test_decommission_check_mode_shows_the_moves_and_changes_nothing(lab, retired, stored):
    before = placements(lab)
    on_retired = sorted(s for s, h in before.items() if h == retired)
    run = playbook(lab, "decommission_storage_host.yml", "-e", f"host={retired}", "-e", f"confirm_host={retired}",
                   "--check")
    assert run.returncode == 0, run.stdout[-4000:]
    assert f"{len(on_retired)} site(s) to move" in run.stdout
    for site in on_retired:
        assert f"{site} -> storage-" in run.stdout
    assert placements(lab) == before
    assert hosts(lab)[retired][1] == "active"


def test_decommission_moves_exactly_its_sites_byte_identical(lab, retired, stored):
    before = placements(lab)
    moving = {s for s, h in before.items() if h == retired}
    assert moving & set(stored)

    run = playbook(lab, "decommission_storage_host.yml", "-e", f"host={retired}", "-e", f"confirm_host={retired}")
    assert run.returncode == 0, run.stdout[-4000:]

    after = placements(lab)
    assert {s for s in before if after.get(s) != before[s]} == moving
    active = {name for name, (_, role) in hosts(lab).items() if role == "active"}
    assert retired not in after.values()
    for site in moving:
        assert after[site] in active, f"{site} went to {after[site]}"
    for site in moving & set(stored):
        client = lab.s3(after[site])
        for key, body in stored[site].items():
            assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body, f"{key} on {after[site]}"

    assert hosts(lab)[retired][1] == "decommissioning"
    assert f'storage_host: "{retired}"' not in prometheus_targets()
    state = lab.ssh(retired, "systemctl is-active chom-object-store.service chom-object-store-s3.socket",
                    check=False).stdout.split()
    assert state == ["inactive", "inactive"]

    again = playbook(lab, "decommission_storage_host.yml", "-e", f"host={retired}", "-e", f"confirm_host={retired}")
    assert again.returncode == 0, again.stdout[-3000:]
    assert all("changed=0" in line for line in recap(again).values()), recap(again)
    assert placements(lab) == after


def test_decommissioning_the_last_active_host_is_refused(lab):
    others = [name for name, (_, role) in hosts(lab).items() if role == "active" and name != lab.primary]
    with db(lab) as conn:
        conn.execute("UPDATE storage_hosts SET role = 'maintenance' WHERE hostname = ANY(%s)", (others,))
    try:
        run = playbook(lab, "decommission_storage_host.yml", "-e", f"host={lab.primary}",
                       "-e", f"confirm_host={lab.primary}")
    finally:
        with db(lab) as conn:
            conn.execute("UPDATE storage_hosts SET role = 'active' WHERE hostname = ANY(%s)", (others,))
    assert run.returncode != 0
    assert f"Refused: {lab.primary} is the last active storage host" in run.stdout, run.stdout[-2000:]
    assert HOST_TASK.findall(run.stdout) == []
    assert hosts(lab)[lab.primary][1] == "active"


def test_decommission_refuses_when_a_destination_lacks_the_capacity(lab):
    assert any(h == lab.primary for h in placements(lab).values())
    before = placements(lab)
    run = playbook(lab, "decommission_storage_host.yml", "-e", f"host={lab.primary}",
                   "-e", f"confirm_host={lab.primary}", "-e", "decommission_fill_limit_percent=0.001")
    assert run.returncode != 0
    assert "over the 0.001 % limit (decommission_fill_limit_percent)" in run.stdout, run.stdout[-2000:]
    assert HOST_TASK.findall(run.stdout) == []
    assert hosts(lab)[lab.primary][1] == "active"
    assert placements(lab) == before


def test_decommission_refuses_a_confirmation_that_differs(lab):
    run = playbook(lab, "decommission_storage_host.yml", "-e", f"host={lab.primary}", "-e", "confirm_host=storage-9")
    assert run.returncode != 0
    assert HOST_TASK.findall(run.stdout) == []
    assert hosts(lab)[lab.primary][1] == "active"


def proposed(lab) -> list[str]:
    """Sites the ring of the registered hosts would move, computed as site_placement does."""
    unit = int(lab.hostvars[lab.primary]["placement_capacity_unit_bytes"])
    with db(lab) as conn:
        ring = Ring(placement_hosts(conn), capacity_unit_bytes=unit)
        placed = {site: host for site, host in site_hosts(conn).items() if host}
    return [move["site_id"] for move in propose_moves(placed, ring)]


def test_rebalance_runs_a_bounded_batch(lab, retired):
    bring_back(lab, retired)  # back on the ring: placement proposes moves onto it
    todo = proposed(lab)
    assert len(todo) >= 2, f"expected moves onto {retired}, got {todo}"
    before = placements(lab)

    run = playbook(lab, "rebalance.yml", "-e", "batch_size=2")
    assert run.returncode == 0, run.stdout[-4000:]

    after = placements(lab)
    moved = sorted(s for s in before if after.get(s) != before[s])
    assert len(moved) == 2, moved
    assert set(moved) <= set(todo)
    assert sorted(proposed(lab)) == sorted(set(todo) - set(moved))


def test_decommission_resumes_after_a_failed_migration(lab, retired):
    if hosts(lab)[retired][1] != "active":
        bring_back(lab, retired)
    unit = int(lab.hostvars[lab.primary]["placement_capacity_unit_bytes"])
    with db(lab) as conn:
        ring = Ring([h for h in placement_hosts(conn) if h["name"] != retired], capacity_unit_bytes=unit)
    on_retired = sorted(s for s, h in placements(lab).items() if h == retired)
    assert on_retired, f"no site on {retired} to decommission"
    targets = dict(zip(on_retired, ring.lookup_many(on_retired), strict=True))
    down = targets[on_retired[-1]]  # the last site's destination fails; sites before it may move

    units = "chom-object-store-s3.socket chom-object-store-s3.service"
    lab.ssh(down, f"systemctl stop {units}")
    try:
        failed = playbook(lab, "decommission_storage_host.yml", "-e", f"host={retired}",
                          "-e", f"confirm_host={retired}")
    finally:
        lab.ssh(down, "systemctl start chom-object-store-s3.socket")
    assert failed.returncode != 0
    assert "Migration of site" in failed.stdout and "failed" in failed.stdout, failed.stdout[-3000:]
    assert hosts(lab)[retired][1] == "decommissioning"
    assert lab.ssh(retired, "systemctl is-active chom-object-store.service", check=False).stdout.strip() == "active"
    assert f'storage_host: "{retired}"' in prometheus_targets()  # nothing past the migrations ran

    rerun = playbook(lab, "decommission_storage_host.yml", "-e", f"host={retired}", "-e", f"confirm_host={retired}")
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    after = placements(lab)
    assert retired not in after.values()
    assert {site: after[site] for site in on_retired} == targets
    bring_back(lab, retired)


@pytest.mark.parametrize("runbook, extra", [
    ("add_storage_host.yml", ["-e", "new_host=storage-3"]),
    ("decommission_storage_host.yml", ["-e", "host=storage-3", "-e", "confirm_host=storage-3"]),
    ("rebalance.yml", []),
])
def test_runbook_stops_before_any_host_when_postgresql_is_unreachable(lab, runbook, extra):
    run = playbook(lab, runbook, *extra, "-e", "control_plane_db_port=1")
    assert run.returncode != 0
    assert HOST_TASK.findall(run.stdout) == [], f"{runbook} ran host tasks without a control plane"
    assert all("changed=0" in line for line in recap(run).values()), recap(run)
    assert re.search(r"connect|Connection refused", run.stdout, re.I), run.stdout[-2000:]
