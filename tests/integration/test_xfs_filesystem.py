"""chom.storage.xfs_filesystem against real loop devices, run through Ansible.

Each test gets its own sparse file attached to a free loop device; the device is unmounted and
detached when the test ends, whatever happened. Needs root, util-linux (losetup, wipefs, blkid,
mount), fdisk (sfdisk), e2fsprogs, xfsprogs and lvm2; a missing tool fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

TOOLS = ("losetup", "wipefs", "blkid", "mount", "umount", "sfdisk", "mkfs.ext4", "mkfs.xfs", "pvcreate", "partx")
LABEL = "chom-storage"
DEVICE_SIZE = "320M"  # mkfs.xfs refuses devices below 300 MB
IDENTITY_IN_MESSAGE = re.compile(r"set the wipe identity to exactly '([^']+)'")


def sh(*cmd: str, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, input=stdin, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@pytest.fixture(scope="module", autouse=True)
def block_tools():
    if os.geteuid() != 0:
        pytest.fail("the xfs_filesystem integration tests need root (loop devices, mkfs, mount)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (Debian packages util-linux, fdisk, e2fsprogs, "
                    "xfsprogs, lvm2)")


class Loop:
    """A sparse file attached to a loop device, plus mountpoints to undo at the end."""

    def __init__(self, workdir: Path, partscan: bool = False):
        self.workdir = workdir
        self.image = workdir / "disk.img"
        sh("truncate", "-s", DEVICE_SIZE, str(self.image))
        self.device = sh("losetup", "--find", "--show", *(["--partscan"] if partscan else []), str(self.image)).strip()
        self.mounts: list[Path] = []

    def identity(self, names: str) -> str:
        """What the module names as this device's identity: its size, then its signatures."""
        return f"size={self.image.stat().st_size},{names}"

    def signatures(self) -> list[dict]:
        out = sh("wipefs", "--no-act", "--json", self.device)
        return json.loads(out)["signatures"] if out.strip() else []

    def blkid(self, tag: str) -> str:
        proc = subprocess.run(["blkid", "--probe", "-s", tag, "-o", "value", self.device],
                              check=False, capture_output=True, text=True, timeout=30)
        return proc.stdout.strip()

    def mount(self, *options: str) -> Path:
        point = Path(tempfile.mkdtemp(prefix="mnt-", dir=self.workdir))
        sh("mount", *options, self.device, str(point))
        self.mounts.append(point)
        return point

    def umount(self, point: Path) -> None:
        sh("umount", str(point))
        self.mounts.remove(point)

    def close(self) -> None:
        errors = []
        for point in reversed(self.mounts):
            proc = subprocess.run(["umount", str(point)], check=False, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                errors.append(f"umount {point}: {proc.stderr.strip()}")
        # Erase what the test wrote (PV labels included) so nothing on the host remembers the device.
        subprocess.run(["wipefs", "--all", "--quiet", self.device], check=False, capture_output=True, timeout=60)
        proc = subprocess.run(["losetup", "--detach", self.device], check=False, capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            errors.append(f"losetup --detach {self.device}: {proc.stderr.strip()}")
        if errors:
            raise AssertionError("; ".join(errors))


@pytest.fixture
def loop_factory(tmp_path):
    loops: list[Loop] = []

    def make(partscan: bool = False) -> Loop:
        loop = Loop(Path(tempfile.mkdtemp(prefix="loop-", dir=tmp_path)), partscan=partscan)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


@pytest.fixture
def loop(loop_factory) -> Loop:
    return loop_factory()


@pytest.fixture
def ext4_with_data(loop):
    """A loop device holding ext4 with one file written and synced; returns (loop, uuid, content)."""
    sh("mkfs.ext4", "-q", "-F", "-L", "olddata", loop.device)
    content = f"customer data {uuid.uuid4()}\n"
    point = loop.mount()
    (point / "site.txt").write_text(content)
    loop.umount(point)
    fs_uuid = loop.blkid("UUID")
    assert fs_uuid
    return loop, fs_uuid, content


def assert_ext4_intact(loop: Loop, fs_uuid: str, content: str) -> None:
    assert loop.blkid("TYPE") == "ext4"
    assert loop.blkid("UUID") == fs_uuid
    point = loop.mount("-o", "ro")
    try:
        assert (point / "site.txt").read_text() == content
    finally:
        loop.umount(point)


def action(run) -> str:
    """The plan the module chose. Read from ``reason``: the ansible.posix.json callback that
    ``run_module`` uses overwrites a module's ``action`` return value with the task's action name."""
    reason = run.result["reason"]
    for phrase, name in (("carries no signature", "mkfs"), ("named for wiping", "wipe_and_mkfs"),
                         ("already holds the storage volume", "none")):
        if phrase in reason:
            return name
    raise AssertionError(f"unexpected reason: {reason!r}")


def refused(run, loop: Loop, **args):
    result = run("xfs_filesystem", dict(device=loop.device, **args))
    assert result.failed, result.result
    assert not result.changed
    return result


# ---------------------------------------------------------------- blank devices


def test_blank_device_is_formatted_then_adopted(run_module, loop):
    first = run_module("xfs_filesystem", {"device": loop.device})
    assert not first.failed, first.result
    assert first.changed
    assert action(first) == "mkfs"
    fs_uuid = first.result["uuid"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", fs_uuid)
    assert (loop.blkid("TYPE"), loop.blkid("LABEL"), loop.blkid("UUID")) == ("xfs", LABEL, fs_uuid)
    assert [s["type"] for s in loop.signatures()] == ["xfs"]

    second = run_module("xfs_filesystem", {"device": loop.device})
    assert not second.failed, second.result
    assert not second.changed
    assert (action(second), second.result["uuid"]) == ("none", fs_uuid)

    # Mounted, the volume is still adopted as it is (the normal state on every later run).
    loop.mount()
    third = run_module("xfs_filesystem", {"device": loop.device})
    assert not third.failed and not third.changed, third.result
    assert third.result["uuid"] == fs_uuid
    assert loop.blkid("UUID") == fs_uuid


def test_check_mode_on_blank_device_changes_nothing(run_module, loop):
    result = run_module("xfs_filesystem", {"device": loop.device}, check=True, diff=True)
    assert not result.failed, result.result
    assert result.changed
    assert (action(result), result.result["uuid"]) == ("mkfs", "")
    assert loop.signatures() == []
    assert loop.blkid("TYPE") == ""


def test_force_option_is_refused(run_module, loop):
    for options in (["-f"], ["--force"], ["-q", "-f"]):
        result = refused(run_module, loop, mkfs_options=options)
        assert "-f" in result.msg, options
        assert loop.signatures() == []


# ---------------------------------------------------------------- devices with contents


def test_ext4_is_refused_naming_its_identity_and_data_stays(run_module, ext4_with_data):
    loop, fs_uuid, content = ext4_with_data
    result = refused(run_module, loop)
    assert f"'{loop.identity(f'ext4:{fs_uuid}')}'" in result.msg
    assert [s["type"] for s in result.result["signatures"]] == ["ext4"]
    assert_ext4_intact(loop, fs_uuid, content)

    # Check mode refuses the same way.
    result = run_module("xfs_filesystem", {"device": loop.device}, check=True)
    assert result.failed and f"ext4:{fs_uuid}" in result.msg
    assert_ext4_intact(loop, fs_uuid, content)


def test_wrong_wipe_identity_is_refused(run_module, ext4_with_data):
    loop, fs_uuid, content = ext4_with_data
    for wrong in ("ext4:00000000-0000-0000-0000-000000000000", "ext4", f"xfs:{fs_uuid}", f"ext4:{fs_uuid}",
                  loop.identity(f"ext4:{fs_uuid}") + " ", "size=1," + f"ext4:{fs_uuid}", ""):
        result = refused(run_module, loop, wipe_identity=wrong)
        assert "does not match" in result.msg, wrong
        assert f"'{loop.identity(f'ext4:{fs_uuid}')}'" in result.msg
    assert_ext4_intact(loop, fs_uuid, content)


def test_exact_identity_from_the_refusal_wipes_and_formats(run_module, ext4_with_data):
    loop, fs_uuid, _ = ext4_with_data
    identity = IDENTITY_IN_MESSAGE.search(refused(run_module, loop).msg).group(1)
    assert identity == loop.identity(f"ext4:{fs_uuid}")

    check = run_module("xfs_filesystem", {"device": loop.device, "wipe_identity": identity}, check=True)
    assert not check.failed and check.changed, check.result
    assert action(check) == "wipe_and_mkfs"
    assert loop.blkid("UUID") == fs_uuid  # check mode wiped nothing

    result = run_module("xfs_filesystem", {"device": loop.device, "wipe_identity": identity})
    assert not result.failed, result.result
    assert result.changed
    assert action(result) == "wipe_and_mkfs"
    assert (loop.blkid("TYPE"), loop.blkid("LABEL"), loop.blkid("UUID")) == ("xfs", LABEL, result.result["uuid"])
    assert [s["type"] for s in loop.signatures()] == ["xfs"]

    # The old identity left in the inventory is harmless: the device is now adopted.
    again = run_module("xfs_filesystem", {"device": loop.device, "wipe_identity": identity})
    assert not again.failed and not again.changed, again.result
    assert again.result["uuid"] == result.result["uuid"]


@pytest.mark.parametrize("partscan", [False, True], ids=["no-partscan", "partscan"])
def test_gpt_partition_table_is_refused(run_module, loop_factory, partscan):
    loop = loop_factory(partscan=partscan)
    sh("sfdisk", "--quiet", "--no-reread", loop.device, stdin="label: gpt\n,\n")
    if partscan:
        sh("partx", "--update", loop.device)
    before = loop.signatures()
    assert {s["type"] for s in before} == {"gpt", "PMBR"}
    result = refused(run_module, loop)
    if partscan:  # the kernel knows the partition: refused for it, before the signatures are weighed
        assert f"{os.path.basename(loop.device)}p1" in result.msg and "partitions" in result.msg
    else:
        assert "gpt" in result.msg and "PMBR" in result.msg
    assert loop.signatures() == before
    assert "gpt" in sh("sfdisk", "--dump", loop.device)


def test_lvm_physical_volume_is_refused(run_module, loop):
    sh("pvcreate", "--quiet", "--yes", loop.device)
    pv_uuid = loop.blkid("UUID")
    assert loop.blkid("TYPE") == "LVM2_member"
    result = refused(run_module, loop)
    assert f"'{loop.identity(f'LVM2_member:{pv_uuid}')}'" in result.msg
    assert loop.blkid("TYPE") == "LVM2_member"
    assert loop.blkid("UUID") == pv_uuid


def test_mounted_device_is_refused_even_with_matching_identity(run_module, ext4_with_data):
    loop, fs_uuid, content = ext4_with_data
    point = loop.mount()
    result = refused(run_module, loop, wipe_identity=loop.identity(f"ext4:{fs_uuid}"))
    assert "mounted" in result.msg
    assert str(point) in result.msg
    assert (point / "site.txt").read_text() == content
    loop.umount(point)
    assert_ext4_intact(loop, fs_uuid, content)


def test_xfs_with_another_label_is_refused(run_module, loop):
    sh("mkfs.xfs", "-q", "-L", "backup", loop.device)
    fs_uuid = loop.blkid("UUID")
    result = refused(run_module, loop)
    assert f"'{loop.identity(f'xfs:{fs_uuid}')}'" in result.msg
    assert "label=backup" in result.msg
    assert (loop.blkid("LABEL"), loop.blkid("UUID")) == ("backup", fs_uuid)
