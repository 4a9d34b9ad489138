#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: site_migration
short_description: Move one site's objects to another storage host, verified, then switch it
description:
  - With O(state=migrated), copies every object of the site (the prefix C(<site>/) in each of
    O(buckets)) from O(source_host) to O(dest_host), verifies every object by its SHA-256, and
    then, in one control-plane transaction, moves the site to the destination if it is still on
    the source. The run is recorded in C(storage_migrations) with its progress and, on failure,
    its C(failure_reason).
  - The source's listing is recorded as a manifest before anything is copied. Each object copied
    and verified is added to the manifest as it goes, so a run that was killed resumes without
    copying again what is already verified.
  - O(strategy=maintenance) pauses the site's backups (C(sites.backups_paused), which backup jobs
    honour) for the copy and resumes them at the switch. O(strategy=live) copies in bulk, then
    turns on dual-write (C(sites.dual_write_host_id); CHOM-APP then writes the site's new objects
    to both hosts), copies what was written or changed meanwhile, verifies, switches and turns
    dual-write off in the same transaction.
  - With O(state=cleaned), deletes the source copy of the site's last completed migration once
    its retention (O(retain_hours) after the switch) has passed. The source is listed again and
    each object is verified on the destination first; anything that is not is kept and reported.
  - With O(state=rolled_back), moves the site back to the source of its last completed
    migration, as long as that source copy has not been cleaned. Objects are copied from the
    destination back (so writes after the switch are kept), the source ends up equal to the
    destination, and the site is switched back by the same guarded transaction.
version_added: 0.1.0
author: CHOM platform team
extends_documentation_fragment:
  - chom.storage.control_plane
options:
  site_id:
    description: The site to migrate (C(sites.id)).
    type: str
    required: true
  source_host:
    description: Storage host the site is on (C(storage_hosts.hostname)).
    type: str
    required: true
  dest_host:
    description: Storage host the site moves to. It must be able to take sites (role C(active), capacity
      state normal or warning) unless O(force_ineligible_dest).
    type: str
    required: true
  source:
    description: S3 endpoint and key on the source host. The key needs Read and List (and Write to
      delete with O(state=cleaned) or to restore with O(state=rolled_back)).
    type: dict
    required: true
    suboptions: &endpoint
      endpoint_url:
        description: S3 endpoint, for example C(http://10.0.0.10:8333).
        type: str
        required: true
      access_key:
        description: Access key.
        type: str
        required: true
      secret_key:
        description: Secret key.
        type: str
        required: true
      region:
        description: Signing region.
        type: str
        default: us-east-1
  dest:
    description: S3 endpoint and key on the destination host (Read, Write, List).
    type: dict
    required: true
    suboptions: *endpoint
  state:
    description: C(migrated) runs (or resumes) the migration; C(cleaned) deletes the retained source
      copy; C(rolled_back) moves the site back to the source.
    type: str
    choices: [migrated, cleaned, rolled_back]
    default: migrated
  strategy:
    description: C(maintenance) or C(live), see the description.
    type: str
    choices: [maintenance, live]
    default: maintenance
  buckets:
    description: Buckets holding the site's objects, under C(<site>/).
    type: list
    elements: str
    default: [chom-backups, chom-media, chom-archives]
  multipart_threshold_mb:
    description: Objects above this size (MiB) are copied part by part.
    type: int
    default: 16
  part_size_mb:
    description: Part size (MiB) of multipart copies; at least 5. Raised automatically for objects
      that would need more than 10,000 parts.
    type: int
    default: 8
  concurrency:
    description: Objects copied and verified in parallel.
    type: int
    default: 8
  memory_budget_mb:
    description: Object bytes held in memory at once by the whole run, whatever the object sizes.
    type: int
    default: 64
  verify_content:
    description: Read every destination object back and hash it, instead of trusting the SHA-256
      checksum header the engine computed from the bytes it stored.
    type: bool
    default: false
  max_delta_rounds:
    description: Passes copying what changed on the source during the copy before giving up.
    type: int
    default: 5
  retain_hours:
    description: Hours the source copy is kept after the switch; cleanup refuses before.
    type: float
    default: 24
  force_ineligible_dest:
    description: Migrate even to a host that placement would not give new sites (for example a
      rollback to a host marked unavailable).
    type: bool
    default: false
  replace_stale_on_dest:
    description:
      - Delete objects of the site that the destination already holds and the source lacks (left by
        an earlier, abandoned migration), at most 25 % of the source's object count. Without it such
        a destination is refused.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Lists what would be copied (or deleted by O(state=cleaned)) and how many bytes; writes
      nothing to either host or to the control plane.
  diff_mode:
    support: none
notes:
  - Runs on the controller (or any host with boto3 and psycopg that reaches both S3 endpoints and
    the control plane), typically with C(delegate_to) localhost.
  - Objects up to O(multipart_threshold_mb) are held in memory while copied; O(memory_budget_mb)
    bounds the total. The peak memory of a run does not grow with object size.
  - Objects are sent with C(x-amz-checksum-sha256) (per part for multipart uploads); the engine
    rejects bytes that do not match. An S3 ETag is never used as a content checksum.
  - Deletions on the destination are limited to objects of the site that this migration copied
    and that were deleted on the source meanwhile, at most 25 % of them (or 3); a source that
    suddenly lists nothing fails the migration. A destination that already holds other objects of
    the site is refused unless O(replace_stale_on_dest).
  - A rollback deletes nothing on the old source; objects deleted on the current host since the
    switch come back, and are reported in C(kept_on_destination).
  - After the switch, objects that reached the source after its last listing and are missing on
    the destination are copied (C(copied_after_switch)); an object the destination already holds
    is newer there and is left alone.
  - The copy is as consistent as the site's writers allow. With the maintenance strategy, writers
    other than backups (for example media uploads) must be stopped by the operator; changes are
    still caught by the delta passes. With the live strategy, CHOM-APP must honour dual-write.
requirements:
  - boto3
  - psycopg >= 3
"""

EXAMPLES = r"""
- name: Move site-42 from storage-1 to storage-2 with zero downtime
  chom.storage.site_migration:
    site_id: site-42
    source_host: storage-1
    dest_host: storage-2
    strategy: live
    source:
      endpoint_url: http://10.0.0.11:8333
      access_key: "{{ vault_s3_admin_access_key }}"
      secret_key: "{{ vault_s3_admin_secret_key }}"
    dest:
      endpoint_url: http://10.0.0.12:8333
      access_key: "{{ vault_s3_admin_access_key }}"
      secret_key: "{{ vault_s3_admin_secret_key }}"
    db_host: db.internal
    db_password: "{{ vault_control_plane_db_password }}"
  delegate_to: localhost

- name: Delete the source copy once the retention has passed
  chom.storage.site_migration:
    site_id: site-42
    source_host: storage-1
    dest_host: storage-2
    state: cleaned
    source: "{{ storage_1_s3 }}"
    dest: "{{ storage_2_s3 }}"
    db_password: "{{ vault_control_plane_db_password }}"
  delegate_to: localhost
"""

RETURN = r"""
migration:
  description: The C(storage_migrations) row after the run (for O(state=cleaned) and
    O(state=rolled_back), the migration acted on or created).
  returned: when a migration was run or acted on
  type: dict
  sample: {"id": "5f0c...", "site_id": "site-42", "source": "storage-1", "dest": "storage-2",
           "status": "completed", "strategy": "live", "objects_total": 2000, "objects_done": 2000,
           "data_size_bytes": 524288000, "bytes_done": 524288000, "failure_reason": null}
resumed:
  description: The run continued a migration that an earlier run left in progress.
  returned: state=migrated
  type: bool
copied_objects:
  description: Objects copied by this run (objects already verified by an earlier run are not).
  returned: state=migrated
  type: int
copied_bytes:
  description: Bytes copied by this run.
  returned: state=migrated
  type: int
plan:
  description: In check mode, what would be copied (C(objects_to_copy), C(bytes_to_copy), the first
    1,000 keys in C(would_copy)) or deleted (C(would_delete), C(kept)).
  returned: check mode
  type: dict
deleted_objects:
  description: Source objects deleted by O(state=cleaned).
  returned: state=cleaned
  type: int
kept:
  description: Source objects O(state=cleaned) did not delete, with the reason (first 1,000).
  returned: state=cleaned
  type: list
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.chom.storage.plugins.module_utils.control_plane_args import (
    connect,
    connection_argument_spec,
)
from ansible_collections.chom.storage.plugins.module_utils.migration import (
    MiB,
    MigrationError,
    MigrationRefused,
    Migrator,
    Request,
    Settings,
    SiteLock,
    cleanup_plan,
    cleanup_source,
    get_migration,
    latest_migration,
    mark_rolled_back,
    open_migration,
    retention_passed,
    site_state,
)
from ansible_collections.chom.storage.plugins.module_utils.naming import NamingError, check_site
from ansible_collections.chom.storage.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    BotoCoreError,
    ClientError,
    make_client,
)

ENDPOINT_SPEC = dict(
    endpoint_url=dict(type="str", required=True),
    access_key=dict(type="str", required=True, no_log=True),
    secret_key=dict(type="str", required=True, no_log=True),
    region=dict(type="str", default="us-east-1"),
)


def client_for(endpoint: dict, concurrency: int, side: str, host: str):
    """An S3 client whose error responses name the endpoint they came from (``side`` is the option name)."""
    client = make_client(endpoint["endpoint_url"], endpoint["access_key"], endpoint["secret_key"], endpoint["region"],
                         timeout=30, pool=concurrency + 4)
    label = f"[{side} endpoint {endpoint['endpoint_url']} of {host}]"

    def name_side(http_response, parsed, **_):
        error = parsed.get("Error") if isinstance(parsed, dict) else None
        if http_response is not None and http_response.status_code >= 300 and isinstance(error, dict):
            error["Message"] = f"{label} {error.get('Message') or error.get('Code') or 'error'}"

    client.meta.events.register("after-call.s3", name_side)
    return client


def settings_from(p) -> Settings:
    return Settings(buckets=tuple(p["buckets"]), strategy=p["strategy"],
                    multipart_threshold=p["multipart_threshold_mb"] * MiB, part_size=p["part_size_mb"] * MiB,
                    concurrency=p["concurrency"], memory_budget=p["memory_budget_mb"] * MiB,
                    retain_hours=p["retain_hours"], max_delta_rounds=p["max_delta_rounds"],
                    verify_content=p["verify_content"])


def migrate(module, conn, src, dst, settings):
    p = module.params
    request = Request(p["site_id"], p["source_host"], p["dest_host"], settings,
                      force_ineligible_dest=p["force_ineligible_dest"],
                      dest_extras="delete" if p["replace_stale_on_dest"] else "refuse")
    state = site_state(conn, p["site_id"])
    if state["host"] == p["dest_host"] and open_migration(conn, p["site_id"]) is None:
        last = latest_migration(conn, p["site_id"])
        module.exit_json(changed=False, msg=f"site {p['site_id']} is already on {p['dest_host']}", migration=last)
    migrator = Migrator(conn, src, dst, request, log=module.log)
    if module.check_mode:
        module.exit_json(changed=True, plan=migrator.plan())
    try:
        result = migrator.run()
    except MigrationRefused:
        raise
    except MigrationError as exc:
        record = get_migration(conn, migrator.store.id) if migrator.store else None
        module.fail_json(msg=f"Migration of site {p['site_id']} failed, nothing was switched: {exc}",
                         migration=record)
    module.exit_json(changed=True, **result)


def last_completed(module, conn):
    p = module.params
    migration = latest_migration(conn, p["site_id"])
    if migration is None or (migration["source"], migration["dest"]) != (p["source_host"], p["dest_host"]):
        module.fail_json(msg=f"site {p['site_id']} has no completed migration from {p['source_host']} "
                             f"to {p['dest_host']}")
    return migration


def cleaned(module, conn, src, dst, settings):
    p = module.params
    migration = last_completed(module, conn)
    if migration["source_deleted_at"]:
        module.exit_json(changed=False, migration=migration, deleted_objects=0, kept=[],
                         msg="the source copy was already deleted")
    with SiteLock(conn, p["site_id"]):
        plan = cleanup_plan(conn, src, dst, migration, settings.buckets, retention_passed(conn, migration["id"]))
        kept = [dict(object=name, reason=why) for name, why in plan["kept"][:1000]]
        if module.check_mode:
            module.exit_json(changed=bool(plan["deletable"]), migration=migration, kept=kept,
                             plan=dict(would_delete=[f"{b}/{k}" for b, k, _ in plan["deletable"][:1000]],
                                       objects_to_delete=len(plan["deletable"]),
                                       bytes_to_delete=sum(s for _, _, s in plan["deletable"])))
        deleted = cleanup_source(conn, src, migration, plan)
    if kept:
        module.warn(f"{len(plan['kept'])} source objects were kept because they are not verified on "
                    f"{p['dest_host']}; see 'kept'")
    module.exit_json(changed=deleted > 0, migration=get_migration(conn, migration["id"]), deleted_objects=deleted,
                     kept=kept)


def rolled_back(module, conn, src, dst, settings):
    p = module.params
    state = site_state(conn, p["site_id"])
    previous = latest_migration(conn, p["site_id"])
    if state["host"] == p["source_host"] and previous and \
            (previous["source"], previous["dest"]) == (p["dest_host"], p["source_host"]):
        module.exit_json(changed=False, migration=previous, msg=f"site {p['site_id']} is back on {p['source_host']}")
    migration = last_completed(module, conn)
    if migration["source_deleted_at"]:
        module.fail_json(msg=f"the source copy of migration {migration['id']} was deleted at "
                             f"{migration['source_deleted_at']}; rollback is no longer possible")
    request = Request(p["site_id"], p["dest_host"], p["source_host"], settings, force_ineligible_dest=True,
                      dest_extras="keep")
    migrator = Migrator(conn, dst, src, request, log=module.log)
    if module.check_mode:
        module.exit_json(changed=True, migration=migration, plan=migrator.plan())
    try:
        result = migrator.run()
    except MigrationRefused:
        raise
    except MigrationError as exc:
        module.fail_json(msg=f"Rollback of site {p['site_id']} failed, it stays on {p['dest_host']}: {exc}")
    mark_rolled_back(conn, migration["id"])
    result["rolled_back"] = get_migration(conn, migration["id"])
    module.exit_json(changed=True, **result)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        site_id=dict(type="str", required=True),
        source_host=dict(type="str", required=True),
        dest_host=dict(type="str", required=True),
        source=dict(type="dict", required=True, options=ENDPOINT_SPEC),
        dest=dict(type="dict", required=True, options=ENDPOINT_SPEC),
        state=dict(type="str", choices=["migrated", "cleaned", "rolled_back"], default="migrated"),
        strategy=dict(type="str", choices=["maintenance", "live"], default="maintenance"),
        buckets=dict(type="list", elements="str", default=["chom-backups", "chom-media", "chom-archives"]),
        multipart_threshold_mb=dict(type="int", default=16),
        part_size_mb=dict(type="int", default=8),
        concurrency=dict(type="int", default=8),
        memory_budget_mb=dict(type="int", default=64),
        verify_content=dict(type="bool", default=False),
        max_delta_rounds=dict(type="int", default=5),
        retain_hours=dict(type="float", default=24.0),
        force_ineligible_dest=dict(type="bool", default=False),
        replace_stale_on_dest=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(BOTO3_IMPORT_ERROR))
    try:
        check_site(p["site_id"])
    except NamingError as exc:
        module.fail_json(msg=str(exc))
    if p["source_host"] == p["dest_host"]:
        module.fail_json(msg="source_host and dest_host are the same host")
    settings = settings_from(p)
    try:
        settings.check()
    except MigrationRefused as exc:
        module.fail_json(msg=str(exc))

    conn = connect(module)
    try:
        src = client_for(p["source"], p["concurrency"], "source", p["source_host"])
        dst = client_for(p["dest"], p["concurrency"], "dest", p["dest_host"])
        action = {"migrated": migrate, "cleaned": cleaned, "rolled_back": rolled_back}[p["state"]]
        action(module, conn, src, dst, settings)
    except MigrationRefused as exc:
        module.fail_json(msg=f"Migration refused: {exc}")
    except (BotoCoreError, ClientError) as exc:
        module.fail_json(msg=f"S3 error: {exc}", exception=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - database errors are reported with their traceback
        module.fail_json(msg=f"Migration failed: {exc}", exception=traceback.format_exc())
    finally:
        conn.close()


if __name__ == "__main__":
    main()
