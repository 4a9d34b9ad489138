# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Decide whether a block device may become the storage volume.

The rule is deliberately narrow: a device is formatted only when it carries no signature
at all (no filesystem, partition table, RAID or LVM metadata) and is not mounted. A
device that already holds the volume this collection made (XFS with the expected label)
is adopted as it is. Anything else is refused, unless the caller names the device's
current identity as the one to wipe.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


class VolumeRefused(Exception):
    """The device must not be formatted; the message says why and what to do."""


@dataclass(frozen=True)
class Signature:
    type: str
    offset: str
    uuid: str = ""
    label: str = ""

    @property
    def identity(self) -> str:
        return f"{self.type}:{self.uuid or self.offset}"


@dataclass(frozen=True)
class Plan:
    action: str  # "none" (adopt), "mkfs" or "wipe_and_mkfs"
    reason: str
    uuid: str = ""


def parse_wipefs(output: str) -> list[Signature]:
    """Parse `wipefs --no-act --json` output; an empty output means no signature."""
    if not output.strip():
        return []
    data = json.loads(output)
    return [
        Signature(
            type=str(entry.get("type") or "unknown"),
            offset=str(entry.get("offset") or ""),
            uuid=str(entry.get("uuid") or ""),
            label=str(entry.get("label") or ""),
        )
        for entry in data.get("signatures", [])
    ]


def device_identity(signatures: list[Signature], device_size: int | None = None) -> str:
    """One string naming everything a device carries, to be quoted back for a wipe.

    With the device's size in bytes it names that device rather than a kind of disk: partition
    tables carry their disk ID as uuid (see ``with_table_ids``), and the size tells apart disks
    whose signatures alone would look the same.
    """
    names = ",".join(sorted(sig.identity for sig in signatures))
    return names if device_size is None else f"size={device_size},{names}"


def with_table_ids(signatures: list[Signature], ptuuid: str) -> list[Signature]:
    """Partition-table signatures without a uuid get the table's disk ID (blkid's PTUUID)."""
    if not ptuuid:
        return signatures
    tables = ("dos", "gpt", "PMBR", "atari", "bsd", "sun", "sgi", "mac")
    return [Signature(s.type, s.offset, ptuuid, s.label) if s.type in tables and not s.uuid else s
            for s in signatures]


def plan_volume(
    device: str,
    signatures: list[Signature],
    mountpoints: list[str],
    label: str,
    children: list[str] | None = None,
    wipe_identity: str | None = None,
    device_size: int | None = None,
) -> Plan:
    """Return what to do with ``device``, or raise VolumeRefused."""
    children = children or []
    xfs_ours = len(signatures) == 1 and signatures[0].type == "xfs" and signatures[0].label == label
    if xfs_ours:
        return Plan("none", f"{device} already holds the storage volume (xfs, label {label})", signatures[0].uuid)

    if mountpoints:
        raise VolumeRefused(
            f"{device} is mounted at {', '.join(mountpoints)}; a mounted device is never formatted"
        )
    if children:
        raise VolumeRefused(
            f"{device} has partitions or holders ({', '.join(children)}); it is never formatted"
        )

    if not signatures:
        return Plan("mkfs", f"{device} carries no signature")

    identity = device_identity(signatures, device_size)
    if wipe_identity is not None and wipe_identity == identity:
        return Plan("wipe_and_mkfs", f"{device} carries {identity}, named for wiping")

    found = "; ".join(
        f"{sig.type}" + (f" uuid={sig.uuid}" if sig.uuid else "") + (f" label={sig.label}" if sig.label else "")
        for sig in signatures
    )
    hint = "" if wipe_identity is None else f" (the wipe setting names '{wipe_identity}', which does not match)"
    raise VolumeRefused(
        f"{device} already carries {found}; refusing to format it{hint}. "
        f"To erase it, set the wipe identity to exactly '{identity}'."
    )


# mkfs.xfs options an operator may add: geometry and features of this one device, given as a
# flag followed by key=value settings. Everything else is refused, in particular -f/-K, the
# log and realtime sections (-l, -r) and name=/file= settings, which could point at another device.
MKFS_FLAGS = ("-b", "-d", "-i", "-m", "-n", "-s")
MKFS_FORBIDDEN_KEYS = ("name", "file", "logdev", "rtdev")
_MKFS_VALUE = re.compile(r"^[a-z_]+=[A-Za-z0-9_.]+(,[a-z_]+=[A-Za-z0-9_.]+)*$")


def check_mkfs_options(options: list[str]) -> None:
    """Raise VolumeRefused unless ``options`` are flag/value pairs from the allowed set."""
    allowed = f"only {', '.join(MKFS_FLAGS)} each followed by key=value settings (no -f/--force, no other device)"
    if len(options) % 2:
        raise VolumeRefused(f"mkfs_options {options!r} refused: {allowed}")
    for flag, value in zip(options[::2], options[1::2], strict=True):
        keys = {setting.split("=", 1)[0] for setting in value.split(",")}
        if flag not in MKFS_FLAGS or not _MKFS_VALUE.match(value) or keys & set(MKFS_FORBIDDEN_KEYS):
            raise VolumeRefused(f"mkfs_options {flag} {value!r} refused: {allowed}")
