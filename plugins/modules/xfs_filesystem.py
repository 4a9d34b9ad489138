#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: xfs_filesystem
short_description: Make a dedicated block device the XFS storage volume, safely
description:
  - Probes the device with C(wipefs --no-act) and formats it as XFS only when it carries no
    signature at all (filesystem, partition table, RAID or LVM metadata) and is not mounted.
  - A device that already holds an XFS filesystem with the expected label is adopted as it is,
    so a run interrupted between formatting and mounting converges on the next run.
  - There is no force option. Erasing a device that carries a signature requires
    O(wipe_identity) to repeat the device's current identity exactly, as reported by the error.
version_added: 0.1.0
author: CHOM platform team
options:
  device:
    description: Path of the block device, for example C(/dev/vdb).
    type: path
    required: true
  label:
    description:
      - Filesystem label written at format time and required for adoption. At most 12 characters.
    type: str
    default: chom-storage
  wipe_identity:
    description:
      - Identity of the device's current contents, as printed by a refused run
        (for example C(size=10737418240,ext4:5d0c...)). Only when it matches exactly are the signatures erased
        and the device formatted. A mounted device is never wiped.
    type: str
  mkfs_options:
    description:
      - Extra options for C(mkfs.xfs), as pairs of a flag among C(-b), C(-d), C(-i), C(-m), C(-n),
        C(-s) and its C(key=value) settings, for example C(["-m", "reflink=1"]).
      - Anything else is refused, in particular C(-f), C(-K), C(-l), C(-r) and C(name=)/C(file=)
        settings, which could overwrite a signature or point at another device.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - The device is inspected with C(wipefs) and C(blkid) from util-linux and C(mkfs.xfs) from xfsprogs.
  - C(mkfs.xfs) is never run with C(-f); the signature check above is the guard, and mkfs's own
    refusal is a second one.
seealso:
  - module: ansible.posix.mount
"""

EXAMPLES = r"""
- name: Make /dev/vdb the storage volume
  chom.storage.xfs_filesystem:
    device: /dev/vdb

- name: Erase an old ext4 filesystem and format (identity copied from the refusal message)
  chom.storage.xfs_filesystem:
    device: /dev/vdb
    wipe_identity: "size=10737418240,ext4:2b6f2a4e-7f52-4bd7-9d36-0e1b1c2d3e4f"
"""

RETURN = r"""
uuid:
  description: Filesystem UUID of the volume (empty in check mode when it would be formatted).
  returned: always
  type: str
action:
  description: C(none) (already the volume), C(mkfs) or C(wipe_and_mkfs).
  returned: always
  type: str
reason:
  description: Why this action was chosen.
  returned: always
  type: str
signatures:
  description: Signatures found on the device before any change.
  returned: always
  type: list
  elements: dict
"""

import os
import stat
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.volume import (
    VolumeRefused,
    check_mkfs_options,
    parse_wipefs,
    plan_volume,
    with_table_ids,
)


def device_mountpoints(device):
    rdev = os.stat(device).st_rdev
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    mountpoints = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            source = line.split(" - ", 1)[1].split()[1] if " - " in line else ""
            if fields[2] == wanted or os.path.realpath(source) == os.path.realpath(device):
                mountpoints.append(fields[4])
    return mountpoints


def device_children(device):
    name = os.path.basename(os.path.realpath(device))
    sys_dir = f"/sys/class/block/{name}"
    if not os.path.isdir(sys_dir):
        return []
    children = [entry for entry in os.listdir(sys_dir) if os.path.exists(f"{sys_dir}/{entry}/partition")]
    holders_dir = f"{sys_dir}/holders"
    if os.path.isdir(holders_dir):
        children.extend(os.listdir(holders_dir))
    return sorted(children)


def read_signatures(module, device):
    wipefs = module.get_bin_path("wipefs", required=True)
    rc, out, err = module.run_command([wipefs, "--no-act", "--json", device])
    if rc != 0:
        module.fail_json(msg=f"Cannot probe {device} with wipefs: {err.strip()}")
    return parse_wipefs(out)


def read_table_id(module, device):
    blkid = module.get_bin_path("blkid", required=True)
    rc, out, _ = module.run_command([blkid, "--probe", "-s", "PTUUID", "-o", "value", device])
    return out.strip() if rc == 0 else ""


def read_size(module, device):
    blockdev = module.get_bin_path("blockdev", required=True)
    rc, out, err = module.run_command([blockdev, "--getsize64", device])
    if rc != 0:
        module.fail_json(msg=f"Cannot read the size of {device}: {err.strip()}")
    return int(out.strip())


def read_uuid(module, device):
    blkid = module.get_bin_path("blkid", required=True)
    rc, out, err = module.run_command([blkid, "--probe", "-s", "UUID", "-o", "value", device])
    if rc != 0 or not out.strip():
        module.fail_json(msg=f"Formatted {device} but cannot read its UUID: {err.strip()}")
    return out.strip()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            device=dict(type="path", required=True),
            label=dict(type="str", default="chom-storage"),
            wipe_identity=dict(type="str"),
            mkfs_options=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    device = module.params["device"]
    label = module.params["label"]

    if not label or len(label) > 12:
        module.fail_json(msg=f"label must be 1 to 12 characters, got {label!r}")
    try:
        check_mkfs_options(module.params["mkfs_options"])
    except VolumeRefused as refusal:
        module.fail_json(msg=str(refusal))
    if not os.path.exists(device):
        module.fail_json(msg=f"Device {device} does not exist")
    if not stat.S_ISBLK(os.stat(device).st_mode):
        module.fail_json(msg=f"{device} is not a block device")

    signatures = with_table_ids(read_signatures(module, device), read_table_id(module, device))
    sig_dicts = [sig.__dict__ for sig in signatures]
    try:
        plan = plan_volume(
            device,
            signatures,
            device_mountpoints(device),
            label,
            children=device_children(device),
            wipe_identity=module.params["wipe_identity"],
            device_size=read_size(module, device),
        )
    except VolumeRefused as refusal:
        module.fail_json(msg=str(refusal), signatures=sig_dicts)

    result = dict(changed=plan.action != "none", action=plan.action, reason=plan.reason,
                  uuid=plan.uuid, signatures=sig_dicts)
    if plan.action != "none":
        result["diff"] = dict(
            before="".join(f"{sig.identity}\n" for sig in signatures) or "(no signature)\n",
            after=f"xfs label={label}\n",
        )
    if module.check_mode or plan.action == "none":
        module.exit_json(**result)

    try:
        if plan.action == "wipe_and_mkfs":
            wipefs = module.get_bin_path("wipefs", required=True)
            module.run_command([wipefs, "--all", device], check_rc=True)
        mkfs = module.get_bin_path("mkfs.xfs", required=True)
        rc, out, err = module.run_command([mkfs, "-L", label, *module.params["mkfs_options"], device])
        if rc != 0:
            module.fail_json(msg=f"mkfs.xfs failed on {device}: {err.strip()}", **result)
    except Exception as exc:  # noqa: BLE001 - report any failure with its traceback
        module.fail_json(msg=f"Formatting {device} failed: {exc}", exception=traceback.format_exc())

    result["uuid"] = read_uuid(module, device)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
