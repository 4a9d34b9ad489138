#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_retention
short_description: Delete stored items whose retention has ended, by the site's tier
description:
  - Lists the objects of the given buckets through every page (only below C(<site>/) when
    O(sites) is given), groups them into items by the naming scheme (C(<site>/<kind>/<stamp>/...);
    each media key is an item of its own), plans keep or delete for every item and deletes what the
    plan says, with batched C(DeleteObjects) requests of at most 1000 keys.
  - The rules are those of the platform by tier (starter, pro, enterprise). Full backups 7, 30 or
    90 days; incrementals 24 hours, 7 or 30 days; database dumps 3, 7 or 30 days; offsite copies
    (O(offsite)) 30, 90 or 365 days; configuration 30 days; archived logs 30, 60 or 90 days; the
    newest 1, 2 or 3 disaster-recovery snapshots; deployment artifacts until deployed plus
    O(artifact_grace_days); media until the site is deleted plus O(deleted_site_grace_days).
  - Never deleted, whatever the windows say, the newest good item of each site and kind (a
    database dump is good only with a C(valid) marker; other kinds unless marked C(invalid)), and
    any item a kept incremental depends on (its chain back to the last full backup).
  - Markers (C(<item>.chom/valid|invalid|deployed)) belong to their item. An item's data objects
    are deleted before its markers, so an interrupted run leaves markers without data, which the
    next run deletes; such an item never counts as good.
  - Keys outside the naming scheme are never touched; they are counted and reported.
  - An item stamped more than one hour after O(now) was written by a host with a wrong clock. It
    is never deleted and never counts as the newest good item of its site and kind, so it cannot
    make the real backups expire; it is reported in RV(future_stamped), counted in the metrics
    and named in a warning.
  - A full or incremental backup younger than six hours may still be uploading (nothing marks
    its upload complete); it does not yet count as the newest good one, so the previous one stays
    protected meanwhile.
  - Tiers and deletion times of sites come from the control plane (C(sites.tier),
    C(sites.deleted_at)) or from O(site_tiers). Items of a site unknown to both are kept. With
    neither O(endpoint_url) nor O(snapshot_root), the module only reads the control plane and
    returns RV(site_tiers), for a run on the storage host without database access.
  - With O(snapshot_root) it also plans the file-tier snapshot directories
    C(<snapshot_root>/<site>/<stamp>/); the sidecar C(<snapshot_root>/<site>/<stamp>.json) written
    by the snapshot job says the kind (C(full) or C(incremental)) and the status. A directory is
    removed by renaming it to C(.deleting-<stamp>) first, then deleting it, so an interrupted run
    never leaves half a snapshot that looks whole; the next run finishes such removals.
    Directories still being written (C(<stamp>.partial)) are never touched.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  endpoint_url:
    description: S3 endpoint of the storage host. Required when buckets are planned.
    type: str
  access_key:
    description: Access key allowed to list and delete in the buckets.
    type: str
  secret_key:
    description: Secret key. Never logged.
    type: str
  region:
    description: Signing region.
    type: str
    default: us-east-1
  buckets:
    description:
      - Buckets to plan. Default, C(chom-backups), C(chom-archives) and C(chom-media) when
        O(endpoint_url) is given, none otherwise.
    type: list
    elements: str
  sites:
    description: Plan only these site IDs. Default, every site found.
    type: list
    elements: str
  site_tiers:
    description:
      - Tiers of the sites, instead of reading the control plane. Maps a site ID to its tier, or to
        a dict with C(tier) and C(deleted_at) (ISO-8601 with offset, or null).
      - Meant for a run on the storage host without database access; the value RV(site_tiers) of a
        run on the controller fits here as it is.
    type: dict
  now:
    description:
      - The current time as ISO-8601 with an offset (for example C(2026-06-15T12:00:00Z)). Default,
        the clock of the host running the module. For tests and replays.
    type: str
  emergency:
    description:
      - Disk full. After the expired items, delete more, oldest first and within the rules, until
        O(bytes_to_free) bytes are freed.
    type: bool
    default: false
  bytes_to_free:
    description: Bytes an emergency must free. Objects are planned first, snapshots get the rest.
    type: int
    default: 0
  offsite:
    description: The buckets hold the offsite copy; full, incremental and db items use the offsite window.
    type: bool
    default: false
  artifact_grace_days:
    description: How long a deployed artifact stays after its C(deployed) marker was written.
    type: float
    default: 7
  deleted_site_grace_days:
    description:
      - How long the data of a deleted site keeps its protection after C(sites.deleted_at); after it
        media, DR snapshots and artifacts go and the newest good items are no longer protected.
    type: float
    default: 7
  snapshot_root:
    description: Directory of the file-tier snapshots, for example C(/mnt/chom-storage/snapshots).
    type: path
  backup_rate_hours:
    description:
      - Database dumps created within this many hours are counted in RV(backup_results). A dump
        still without a C(valid) or C(invalid) marker after this long counts as failed in
        O(backup_results_file).
    type: float
    default: 24
  backup_results_file:
    description:
      - The backup counts the capacity check rates (JSON with C(succeeded) and C(failed)), shared with
        the snapshot job. Each database dump is added once, when its marker appears; the file keeps
        C(db_dumps_counted_until) to know where it stopped. Updated under a lock, atomically, only
        with buckets and not in check mode.
    type: path
  metrics_file:
    description:
      - Prometheus textfile to write (atomically) on the host running the module; the byte counter
        continues from the previous file. Not written in check mode. The text is returned as
        RV(metrics) either way.
    type: path
attributes:
  check_mode:
    support: full
    details: Lists and plans; returns exactly what would be deleted; deletes and writes nothing.
  diff_mode:
    support: full
    details: The items to delete, one line each, as C(before); C(after) is empty.
notes:
  - Run it against the active storage host only. Replication propagates the deletions to the
    replica, within its own bound on the share of deletions per run; a first run over a long
    backlog may need that bound raised once.
  - File-tier snapshots made with rsync hard links do not depend on each other, so they have no
    chains; each kind keeps its own newest complete snapshot. A snapshot without a complete sidecar
    never counts as good and is removed only once older than the tier's full window.
  - The bytes a snapshot frees are those of its files with a single link; files shared with other
    snapshots are not counted, so an emergency may delete more snapshots than the bytes suggest.
  - An object written into an item after the listing is not deleted; the item stays, without
    markers, and is planned again by the next run.
  - The result lists every deleted item; on a very large backlog the result is large.
  - C(chom_storage_backup_success_rate) itself is written by the capacity check from
    O(backup_results_file), so the series has one writer.
seealso:
  - module: chom.storage.storage_capacity
"""

EXAMPLES = r"""
- name: Read the sites' tiers from the control plane
  chom.storage.backup_retention:
    db_host: 10.0.0.5
    db_password: "{{ control_plane_db_password }}"
  delegate_to: localhost
  run_once: true
  register: tiers

- name: Apply retention to the host's buckets and snapshots
  chom.storage.backup_retention:
    endpoint_url: http://10.0.0.11:8333
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    site_tiers: "{{ tiers.site_tiers }}"
    snapshot_root: /mnt/chom-storage/snapshots
    metrics_file: /var/lib/prometheus/node-exporter/chom_storage_retention.prom
    backup_results_file: /var/lib/chom-storage/backup-results.json

- name: Free 50 GiB in an emergency
  chom.storage.backup_retention:
    endpoint_url: http://10.0.0.11:8333
    access_key: "{{ object_store_admin_access_key }}"
    secret_key: "{{ object_store_admin_secret_key }}"
    site_tiers: "{{ tiers.site_tiers }}"
    snapshot_root: /mnt/chom-storage/snapshots
    emergency: true
    bytes_to_free: 53687091200
"""

RETURN = r"""
deleted:
  description: Every item deleted (or that would be in check mode), with bucket (or C(snapshots)),
    item, site, kind, created, bytes and reason.
  returned: always
  type: list
  elements: dict
totals:
  description: Per source (C(objects), C(snapshots)) the counts and bytes per kind and action,
    bytes deleted, and for an emergency the bytes asked for and still short.
  returned: always
  type: dict
outside_scheme:
  description: Up to 1000 keys or snapshot entries outside the naming scheme, left untouched.
  returned: always
  type: list
  elements: str
outside_scheme_count:
  description: How many keys or entries were outside the naming scheme.
  returned: always
  type: int
future_stamped:
  description: Up to 1000 items stamped more than one hour in the future (kept), with bucket (or
    C(snapshots)), item, site, kind, created and bytes. Their count is C(items_future) in RV(totals).
  returned: always
  type: list
  elements: dict
site_tiers:
  description: Tier and deletion time of every site planned, as O(site_tiers) takes them.
  returned: always
  type: dict
backup_results:
  description: Database dumps of the last O(backup_rate_hours) hours, C(succeeded) (valid),
    C(failed) (invalid) and C(unvalidated); C(recorded) is what this run added to
    O(backup_results_file) (or would add in check mode).
  returned: always
  type: dict
metrics:
  description: The Prometheus text of this run.
  returned: always
  type: str
"""

import fcntl
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)
from ansible_collections.chom.storage.plugins.module_utils.naming import (
    KIND_BUCKETS,
    KINDS,
    MARKER_DIR,
    STAMP_RE,
    NamingError,
    check_site,
    parse_key,
)
from ansible_collections.chom.storage.plugins.module_utils.retention import (
    DAY,
    DEPLOYED,
    EMPTY,
    INVALID,
    VALID,
    Item,
    Site,
    epoch,
    plan,
    stamp_epoch,
)
from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    BotoCoreError,
    ClientError,
    error_code,
    make_client,
)

DEFAULT_BUCKETS = tuple(dict.fromkeys(KIND_BUCKETS.values()))
MARKER_FLAGS = {"valid": VALID, "invalid": INVALID, "deployed": DEPLOYED}
DELETE_BATCH = 1000
REPORT_OUTSIDE = 1000
SNAPSHOT_KINDS = ("full", "incremental")
DELETING_PREFIX = ".deleting-"


class RetentionError(Exception):
    """A step that cannot go on; the message is one sentence for the operator."""


# ------------------------------------------------------------------------------------ inputs


def parse_now(text, name="now"):
    """Epoch seconds of an ISO-8601 time with an offset; ``name`` is the parameter named in errors."""
    if text is None:
        return int(time.time())
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RetentionError(f"{name} must be ISO-8601 with an offset, got {text!r}") from exc
    if when.tzinfo is None:
        raise RetentionError(f"{name} must carry an offset (for example Z), got {text!r}")
    return epoch(when)


def iso(seconds):
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tiers_from_param(value) -> dict[str, Site]:
    sites = {}
    for site, info in value.items():
        if isinstance(info, str):
            sites[site] = Site(info, None)
        elif isinstance(info, dict) and isinstance(info.get("tier"), str):
            deleted_at = info.get("deleted_at")
            if deleted_at in (None, ""):
                sites[site] = Site(info["tier"], None)
            else:
                sites[site] = Site(info["tier"], parse_now(str(deleted_at), f"site_tiers[{site!r}].deleted_at"))
        else:
            raise RetentionError(f"site_tiers[{site!r}] must be a tier or a dict with tier and deleted_at")
    return sites


def tiers_from_control_plane(module, site_ids) -> dict[str, Site]:
    conn = connect(module)
    try:
        with conn.cursor() as cur:
            query = "SELECT id, tier, deleted_at FROM sites"
            if site_ids is None:
                cur.execute(query)
            else:
                cur.execute(query + " WHERE id = ANY(%s)", (list(site_ids),))
            rows = cur.fetchall()
    except Exception as exc:  # noqa: BLE001 - any driver error ends the run with one sentence
        raise RetentionError(f"Cannot read the sites' tiers from the control plane: {exc}") from exc
    finally:
        conn.close()
    return {site: Site(tier, None if deleted_at is None else epoch(deleted_at)) for site, tier, deleted_at in rows}


# ------------------------------------------------------------------------------------ objects


class ObjectItem:
    """The objects of one item in one bucket; data objects and markers apart."""

    __slots__ = ("bucket", "site", "kind", "created", "size", "flags", "marked", "data", "markers")

    def __init__(self, bucket, site, kind, created):
        self.bucket, self.site, self.kind, self.created = bucket, site, kind, created
        self.size = self.flags = self.marked = 0
        self.data, self.markers = [], []


def list_bucket(client, bucket, prefixes, groups, outside):
    """Group every object below ``prefixes`` into ``groups`` (ref -> ObjectItem)."""
    paginator = client.get_paginator("list_objects_v2")
    for prefix in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
            for obj in page.get("Contents", []):
                add_object(bucket, obj["Key"], obj["Size"], obj["LastModified"], groups, outside)


def add_object(bucket, key, size, modified, groups, outside):
    parts = key.split("/", 3)
    if len(parts) == 4 and parts[1] != "media":
        ref = f"{bucket}/{parts[0]}/{parts[1]}/{parts[2]}/"
        entry = groups.get(ref)
        if entry is None:
            parsed = parse_key(key)
            if parsed is None:
                outside.append(f"{bucket}/{key}")
                return
            entry = groups[ref] = ObjectItem(bucket, parsed.site, parsed.kind, stamp_epoch(parts[2]))
        name = parts[3]
    else:
        parsed = parse_key(key)
        if parsed is None or parsed.kind != "media":
            outside.append(f"{bucket}/{key}")
            return
        ref = f"{bucket}/{key}"
        entry = groups[ref] = ObjectItem(bucket, parsed.site, "media", int(modified.timestamp()))
        name = parsed.name
    entry.size += size
    if name.startswith(MARKER_DIR) and entry.kind != "media":
        entry.markers.append(key)
        flag = MARKER_FLAGS.get(name[len(MARKER_DIR):], 0)
        entry.flags |= flag
        if flag == DEPLOYED:
            entry.marked = max(entry.marked, int(modified.timestamp()))
    else:
        entry.data.append(key)


def object_items(groups):
    for ref, entry in groups.items():
        flags = entry.flags if entry.data else entry.flags | EMPTY
        yield Item(entry.site, entry.kind, entry.created, entry.size, ref, flags, entry.marked)


def delete_keys(client, bucket, keys):
    """Delete ``keys`` in batches; return the keys the engine refused to delete, with the reason."""
    failed = {}
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        response = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch],
                                                                "Quiet": True})
        for error in response.get("Errors", []):
            failed[error.get("Key")] = f"{error.get('Code')}: {error.get('Message')}"
    return failed


def delete_object_items(client, groups, refs):
    """Data objects of every item first, then the markers of the items whose data all went."""
    failed = {}
    for phase in ("data", "markers"):
        by_bucket: dict[str, list[str]] = {}
        for ref in refs:
            entry = groups[ref]
            if phase == "markers" and any(key in failed for key in entry.data):
                continue
            by_bucket.setdefault(entry.bucket, []).extend(getattr(entry, phase))
        for bucket, keys in sorted(by_bucket.items()):
            failed.update(delete_keys(client, bucket, keys))
    return failed


# ------------------------------------------------------------------------------------ snapshots


def snapshot_bytes(path):
    """Bytes that removing ``path`` frees: files with no other hard link."""
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if info.st_nlink == 1:
                total += info.st_blocks * 512
    return total


def read_sidecar(path):
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def scan_snapshots(root, site_filter, outside, leftovers):
    """Items of ``root/<site>/<stamp>/``; the kind from the sidecar, or ``full`` when it is missing."""
    items = []
    for site in sorted(os.listdir(root)):
        site_dir = os.path.join(root, site)
        if not os.path.isdir(site_dir) or os.path.islink(site_dir):
            outside.append(site_dir)
            continue
        try:
            check_site(site)
        except NamingError:
            outside.append(site_dir)
            continue
        if site_filter is not None and site not in site_filter:
            continue
        for name in sorted(os.listdir(site_dir)):
            path = os.path.join(site_dir, name)
            if name.startswith(DELETING_PREFIX):
                leftovers.append(path)
                continue
            if name.endswith(".partial"):
                continue  # being written by the snapshot job
            if name.endswith(".json") and STAMP_RE.match(name[:-5]):
                continue  # a sidecar; read with its directory
            if not STAMP_RE.match(name) or not os.path.isdir(path) or os.path.islink(path):
                outside.append(path)
                continue
            sidecar = read_sidecar(path + ".json") or {}
            kind = sidecar.get("kind") if sidecar.get("kind") in SNAPSHOT_KINDS else "full"
            status = sidecar.get("status")
            flags = VALID if status == "complete" else INVALID if status == "failed" else 0
            items.append(Item(site, kind, stamp_epoch(name), snapshot_bytes(path), path, flags, 0))
    return items


def remove_snapshot(path):
    """Rename first, so the directory never looks like a whole snapshot while it is removed."""
    parent, name = os.path.split(path)
    doomed = os.path.join(parent, DELETING_PREFIX + name)
    os.rename(path, doomed)
    try:
        os.unlink(path + ".json")
    except FileNotFoundError:
        pass
    shutil.rmtree(doomed)


# ------------------------------------------------------------------------------------ results


def describe(item, reason, source):
    if source == "objects":
        bucket, _, ref = item.ref.partition("/")
    else:
        bucket, ref = "snapshots", item.ref
    return dict(bucket=bucket, item=ref, site=item.site, kind=item.kind, created=iso(item.created),
                bytes=item.size, reason=reason)


def backup_results(items, now, hours):
    since = now - int(hours * 3600)
    counts = dict(succeeded=0, failed=0, unvalidated=0)
    for item in items:
        if item.kind != "db" or item.created < since or item.flags & EMPTY:
            continue
        if item.flags & INVALID:
            counts["failed"] += 1
        elif item.flags & VALID:
            counts["succeeded"] += 1
        else:
            counts["unvalidated"] += 1
    return counts


def record_backup_results(path, dumps, now, hours, check_mode):
    """Add the dumps whose marker appeared since the last run to the shared counts; return what was added.

    Dumps are counted in creation order up to the oldest one still waiting for its marker, so each is
    counted once. A dump without a marker for longer than ``hours`` counts as failed.
    """
    window = int(hours * 3600)
    with open(path + ".lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as handle:
                counts = json.load(handle)
        except (FileNotFoundError, ValueError):
            counts = {}
        if not isinstance(counts, dict):
            counts = {}
        since = int(counts.get("db_dumps_counted_until", now - window))
        waiting = [created for created, flags in dumps
                   if since < created <= now and not flags & (VALID | INVALID) and created > now - window]
        until = min(waiting) - 1 if waiting else now
        added = dict(succeeded=0, failed=0)
        for created, flags in dumps:
            if since < created <= until:
                added["succeeded" if flags & VALID and not flags & INVALID else "failed"] += 1
        if not check_mode and until > since:
            counts["succeeded"] = int(counts.get("succeeded", 0)) + added["succeeded"]
            counts["failed"] = int(counts.get("failed", 0)) + added["failed"]
            counts["db_dumps_counted_until"] = until
            write_atomic(path, json.dumps(counts) + "\n")
    return added


def previous_counter(text, source):
    prefix = f'chom_storage_retention_bytes_deleted_total{{source="{source}"}} '
    for line in (text or "").splitlines():
        if line.startswith(prefix):
            try:
                return float(line[len(prefix):])
            except ValueError:
                return 0.0
    return 0.0


def render_metrics(runs, results, outside_count, now, previous):
    """Prometheus text of the run; ``runs`` maps source to (plan, kinds)."""
    lines = ["# HELP chom_storage_retention_items Items seen by the last retention run, by kind and action.",
             "# TYPE chom_storage_retention_items gauge"]
    for source, (result, kinds) in runs.items():
        by_kind = result.totals()["by_kind"]
        for kind in kinds:
            for action in ("keep", "delete"):
                count = by_kind.get(kind, {}).get(action, {}).get("items", 0)
                lines.append(f'chom_storage_retention_items{{source="{source}",kind="{kind}",action="{action}"}} '
                             f"{count}")
    lines += ["# HELP chom_storage_retention_future_items Items stamped in the future (a wrong clock), kept.",
              "# TYPE chom_storage_retention_future_items gauge"]
    for source, (result, _) in runs.items():
        lines.append(f'chom_storage_retention_future_items{{source="{source}"}} {result.totals()["items_future"]}')
    lines += ["# HELP chom_storage_retention_bytes_deleted_total Bytes deleted by retention.",
              "# TYPE chom_storage_retention_bytes_deleted_total counter"]
    for source, (result, _) in runs.items():
        total = previous_counter(previous, source) + result.bytes_freed
        lines.append(f'chom_storage_retention_bytes_deleted_total{{source="{source}"}} {total:.0f}')
    lines += ["# HELP chom_storage_retention_bytes_short Bytes an emergency still had to free after the run.",
              "# TYPE chom_storage_retention_bytes_short gauge"]
    for source, (result, _) in runs.items():
        lines.append(f'chom_storage_retention_bytes_short{{source="{source}"}} {result.totals()["bytes_short"]}')
    lines += ["# HELP chom_storage_retention_outside_scheme Keys or entries outside the naming scheme, untouched.",
              "# TYPE chom_storage_retention_outside_scheme gauge"]
    for source in runs:
        lines.append(f'chom_storage_retention_outside_scheme{{source="{source}"}} {outside_count[source]}')
    if "objects" in runs:
        lines += ["# HELP chom_storage_retention_db_dumps Database dumps of the rating window by validation state.",
                  "# TYPE chom_storage_retention_db_dumps gauge"]
        for state in ("succeeded", "failed", "unvalidated"):
            lines.append(f'chom_storage_retention_db_dumps{{state="{state}"}} {results[state]}')
    lines += ["# HELP chom_storage_retention_last_run_timestamp_seconds When retention last ran.",
              "# TYPE chom_storage_retention_last_run_timestamp_seconds gauge"]
    for source in runs:
        lines.append(f'chom_storage_retention_last_run_timestamp_seconds{{source="{source}"}} {now}')
    return "\n".join(lines) + "\n"


def write_atomic(path, text, mode=0o644):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".chom-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------ main


def argument_spec():
    spec = dict(
        endpoint_url=dict(type="str"),
        access_key=dict(type="str", no_log=True),
        secret_key=dict(type="str", no_log=True),
        region=dict(type="str", default="us-east-1"),
        buckets=dict(type="list", elements="str"),
        sites=dict(type="list", elements="str"),
        site_tiers=dict(type="dict"),
        now=dict(type="str"),
        emergency=dict(type="bool", default=False),
        bytes_to_free=dict(type="int", default=0),
        offsite=dict(type="bool", default=False),
        artifact_grace_days=dict(type="float", default=7),
        deleted_site_grace_days=dict(type="float", default=7),
        snapshot_root=dict(type="path"),
        backup_rate_hours=dict(type="float", default=24),
        backup_results_file=dict(type="path"),
        metrics_file=dict(type="path"),
    )
    spec.update(connection_argument_spec())
    return spec


def check_params(p):
    if p["bytes_to_free"] < 0:
        raise RetentionError("bytes_to_free must not be negative")
    if p["emergency"] and p["bytes_to_free"] == 0:
        raise RetentionError("emergency needs bytes_to_free, the number of bytes to free")
    for name in ("artifact_grace_days", "deleted_site_grace_days", "backup_rate_hours"):
        if p[name] < 0:
            raise RetentionError(f"{name} must not be negative")
    if p["buckets"] and not p["endpoint_url"]:
        raise RetentionError("buckets need endpoint_url, access_key and secret_key")
    if p["endpoint_url"] and not (p["access_key"] and p["secret_key"]):
        raise RetentionError("endpoint_url needs access_key and secret_key")
    if p["snapshot_root"] and not os.path.isdir(p["snapshot_root"]):
        raise RetentionError(f"snapshot_root {p['snapshot_root']} is not a directory")
    for site in p["sites"] or []:
        check_site(site)


def run(module):
    p = module.params
    check_params(p)
    now = parse_now(p["now"])
    site_filter = None if p["sites"] is None else sorted(set(p["sites"]))
    buckets = p["buckets"] if p["buckets"] is not None else (list(DEFAULT_BUCKETS) if p["endpoint_url"] else [])
    if p["site_tiers"] is not None:
        sites = tiers_from_param(p["site_tiers"])
    else:
        sites = tiers_from_control_plane(module, site_filter)
    options = dict(emergency=p["emergency"], artifact_grace=int(p["artifact_grace_days"] * DAY),
                   deleted_site_grace=int(p["deleted_site_grace_days"] * DAY))
    runs, deleted, failures, dumps, future = {}, [], {}, [], []
    outside: dict[str, list[str]] = {"objects": [], "snapshots": []}
    results = dict(succeeded=0, failed=0, unvalidated=0)
    to_free = p["bytes_to_free"]

    if buckets:
        if not HAS_BOTO3:
            module.fail_json(msg="The boto3 Python package is required for buckets", exception=str(BOTO3_IMPORT_ERROR))
        client = make_client(p["endpoint_url"], p["access_key"], p["secret_key"], p["region"])
        groups: dict[str, ObjectItem] = {}
        prefixes = [""] if site_filter is None else [f"{site}/" for site in site_filter]
        for bucket in buckets:
            list_bucket(client, bucket, prefixes, groups, outside["objects"])
        items = list(object_items(groups))
        result = plan(items, sites, now, bytes_to_free=to_free, offsite=p["offsite"], **options)
        results = backup_results(items, now, p["backup_rate_hours"])
        dumps = [(item.created, item.flags) for item in items if item.kind == "db" and not item.flags & EMPTY]
        del items
        runs["objects"] = (result, KINDS)
        future += [describe(item, None, "objects") for item in result.future()]
        doomed = result.deleted()
        deleted += [describe(item, reason, "objects") for item, reason in doomed]
        to_free = max(0, to_free - result.bytes_freed)
        if doomed and not module.check_mode:
            failures.update(delete_object_items(client, groups, [item.ref for item, _ in doomed]))

    if p["snapshot_root"]:
        leftovers: list[str] = []
        items = scan_snapshots(p["snapshot_root"], site_filter, outside["snapshots"], leftovers)
        result = plan(items, sites, now, bytes_to_free=to_free, chains=False, require_valid=True, **options)
        runs["snapshots"] = (result, SNAPSHOT_KINDS)
        future += [describe(item, None, "snapshots") for item in result.future()]
        doomed = result.deleted()
        deleted += [describe(item, reason, "snapshots") for item, reason in doomed]
        deleted += [dict(bucket="snapshots", item=path, site=os.path.basename(os.path.dirname(path)), kind=None,
                         created=None, bytes=None, reason="interrupted removal") for path in leftovers]
        if not module.check_mode:
            for path in leftovers:
                shutil.rmtree(path)
            for item, _ in doomed:
                try:
                    remove_snapshot(item.ref)
                except OSError as exc:
                    failures[item.ref] = str(exc)

    outside_count = {source: len(keys) for source, keys in outside.items()}
    previous = None
    if p["metrics_file"] and os.path.exists(p["metrics_file"]):
        with open(p["metrics_file"], encoding="utf-8") as handle:
            previous = handle.read()
    metrics = render_metrics(runs, results, outside_count, now, previous)
    if buckets and p["backup_results_file"]:
        results["recorded"] = record_backup_results(p["backup_results_file"], dumps, now, p["backup_rate_hours"],
                                                    module.check_mode)
    if p["metrics_file"] and not module.check_mode:
        write_atomic(p["metrics_file"], metrics)
    all_outside = outside["objects"] + outside["snapshots"]
    output = dict(
        changed=bool(deleted),
        deleted=deleted,
        totals={source: result.totals() for source, (result, _) in runs.items()},
        outside_scheme=all_outside[:REPORT_OUTSIDE],
        outside_scheme_count=len(all_outside),
        future_stamped=[{k: v for k, v in entry.items() if k != "reason"} for entry in future[:REPORT_OUTSIDE]],
        site_tiers={site: dict(tier=info.tier, deleted_at=iso(info.deleted_at))
                    for site, info in sorted(sites.items())},
        backup_results=results,
        metrics=metrics,
    )
    if future:
        first = future[0]
        module.warn(f"{len(future)} item(s) are stamped in the future and were kept, for example "
                    f"{first['bucket']}/{first['item']} ({first['created']}); check the clock of the host that "
                    "wrote them")
    if module._diff:
        lines = [f"{d['bucket']}/{d['item']} ({d['kind']}, {d['reason']})" for d in deleted]
        output["diff"] = dict(before_header="items", after_header="items after retention",
                              before="".join(line + "\n" for line in lines), after="")
    if failures:
        sample = "; ".join(f"{key}: {why}" for key, why in sorted(failures.items())[:5])
        module.fail_json(msg=f"{len(failures)} object(s) or snapshot(s) could not be deleted ({sample})",
                         failed_deletions=failures, **output)
    return output


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        module.exit_json(**run(module))
    except (RetentionError, NamingError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    except (BotoCoreError, ClientError) as exc:
        module.fail_json(msg=f"S3 request to {module.params['endpoint_url']} failed ({error_code(exc)}): {exc}")
    except OSError as exc:
        module.fail_json(msg=f"Snapshot or file operation failed: {exc}")


if __name__ == "__main__":
    main()
