# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which storage host snapshots which site's files, from the customer VPS inventory and the control plane.

Each customer VPS lists the sites it hosts and their document roots. The control plane records
each site's storage host and whether its backups are paused. A site is snapshotted by its
recorded storage host; a paused site is passed on as paused (its host reports it as skipped), and
a site that has no recorded host, a host outside the inventory, or is deleted is not snapshotted
and is reported.
"""

from __future__ import annotations

import posixpath
import re

from ansible_collections.chom.storage.plugins.module_utils.naming import NamingError, check_site

# Plain absolute paths only: the document root is written into the VPS's authorized_keys forced
# command, where quotes, spaces and shell characters have no business.
DOCUMENT_ROOT_RE = re.compile(r"^(/[A-Za-z0-9_@+][A-Za-z0-9_.@+-]*)+$")


class SnapshotPlanError(ValueError):
    """The VPS site lists do not describe a valid set of sites."""


def check_document_root(path) -> str:
    if not isinstance(path, str) or not DOCUMENT_ROOT_RE.match(path) or posixpath.normpath(path) != path:
        raise SnapshotPlanError(
            f"document root {path!r} must be a plain absolute path (letters, digits, _ . @ + -; no '..', "
            "no trailing slash, not /)")
    return path


def check_vps_sites(vps_sites: dict) -> list[dict]:
    """Validate ``{vps host: [{site, document_root}, ...]}``; every problem is reported at once."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    flat: list[dict] = []
    for vps in sorted(vps_sites):
        entries = vps_sites[vps]
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.append(f"{vps}: the site list must be a list of {{site, document_root}}")
            continue
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) - {"site", "document_root"}:
                problems.append(f"{vps}: {entry!r} must be a mapping with the keys site and document_root only")
                continue
            try:
                site = check_site(entry.get("site"))
                if site == "_platform":
                    raise NamingError("_platform is not a customer site")
                root = check_document_root(entry.get("document_root"))
            except (NamingError, SnapshotPlanError) as exc:
                problems.append(f"{vps}: {exc}")
                continue
            if site in seen:
                problems.append(f"{vps}: site {site} is also listed on {seen[site]}")
                continue
            seen[site] = vps
            flat.append({"site": site, "vps_host": vps, "document_root": root})
    if problems:
        raise SnapshotPlanError("; ".join(problems))
    return flat


def read_site_flags(conn, site_ids: list[str]) -> dict[str, dict]:
    """Recorded storage host, backup pause and deletion of each site found in the control plane."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT s.id, h.hostname, s.backups_paused, s.backups_paused_reason, s.deleted_at IS NOT NULL"
            " FROM sites s LEFT JOIN storage_hosts h ON h.id = s.storage_host_id WHERE s.id = ANY(%s)",
            (list(site_ids),),
        )
        return {
            site: {"storage_host": host, "paused": bool(paused), "paused_reason": reason, "deleted": bool(deleted)}
            for site, host, paused, reason, deleted in cur.fetchall()
        }


def plan(sites: list[dict], flags: dict[str, dict], storage_hosts: list[str]) -> dict:
    """Sites per storage host, and the sites that are not snapshotted, with the reason."""
    hosts: dict[str, list[dict]] = {name: [] for name in storage_hosts}
    not_snapshotted: dict[str, str] = {}
    paused: dict[str, str] = {}
    for entry in sites:
        site = entry["site"]
        flag = flags.get(site)
        if flag is None:
            not_snapshotted[site] = "not in the control plane's sites table"
        elif flag["deleted"]:
            not_snapshotted[site] = "deleted in the control plane"
        elif flag["storage_host"] is None:
            not_snapshotted[site] = "no storage host recorded (run playbooks/place_sites.yml)"
        elif flag["storage_host"] not in hosts:
            not_snapshotted[site] = f"its storage host {flag['storage_host']} is not in this inventory's storage_hosts"
        else:
            if flag["paused"]:
                paused[site] = flag["paused_reason"] or "no reason recorded"
            hosts[flag["storage_host"]].append(dict(entry, paused=flag["paused"], paused_reason=flag["paused_reason"]))
    for entries in hosts.values():
        entries.sort(key=lambda e: e["site"])
    return {"hosts": hosts, "not_snapshotted": not_snapshotted, "paused": paused}
