"""storage_capacity on real XFS volumes (loop devices): bytes and inodes past each threshold."""

from __future__ import annotations

import os
import subprocess

import pytest


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def xfs_volume(tmp_path):
    """A 512 MiB XFS volume with few inodes (maxpct=1), mounted on a temp dir."""
    image = tmp_path / "disk.img"
    mount = tmp_path / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(512 << 20)
    device = sh("losetup", "--find", "--show", str(image))
    try:
        sh("mkfs.xfs", "-q", "-i", "maxpct=1", device)
        sh("mount", device, str(mount))
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def check(run_module, mount, tmp_path, **extra):
    args = dict(path=str(mount), sample_seconds=0.2, history_file=str(tmp_path / "history.json"),
                metrics_dir=str(tmp_path / "metrics"), interface="lo", **extra)
    run = run_module("storage_capacity", args)
    assert not run.failed, run.msg
    assert run.changed is False
    return run.result


def fill_to(mount, percent: float) -> None:
    st = os.statvfs(mount)
    total = st.f_blocks * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    target = int(total * percent / 100) - used
    if target > 0:
        with open(os.path.join(mount, f"fill-{percent}"), "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, target)


def test_bytes_past_70_80_90_percent_change_the_state(run_module, xfs_volume, tmp_path):
    states = []
    for percent in (50, 71, 81, 91):
        fill_to(xfs_volume, percent)
        result = check(run_module, xfs_volume, tmp_path)
        states.append(result["capacity_state"])
        assert result["measures"]["disk_percent"] == pytest.approx(percent, abs=1.0)
    assert states == ["normal", "warning", "critical", "full"]
    metrics = (tmp_path / "metrics" / "chom_storage_capacity.prom").read_text()
    assert f'chom_storage_disk_usage_percent{{mountpoint="{xfs_volume}"}} 9' in metrics
    assert 'chom_storage_capacity_state{state="full"} 1' in metrics
    assert 'chom_storage_capacity_state{state="normal"} 0' in metrics
    assert "chom_storage_io_wait_percent{}" in metrics and "chom_storage_inode_usage_percent{" in metrics

    for name in os.listdir(xfs_volume):
        os.unlink(os.path.join(xfs_volume, name))
    assert check(run_module, xfs_volume, tmp_path)["capacity_state"] == "normal"


def test_many_small_files_fill_inodes_while_bytes_stay_low(run_module, xfs_volume, tmp_path):
    st = os.statvfs(xfs_volume)
    wanted = int(st.f_files * 0.86) - (st.f_files - st.f_ffree) + 1
    directory = xfs_volume / "many"
    directory.mkdir()
    for n in range(wanted):
        (directory / f"f{n}").touch()
    result = check(run_module, xfs_volume, tmp_path)
    assert result["measures"]["inode_percent"] > 85
    assert result["measures"]["disk_percent"] < 70
    assert result["capacity_state"] == "full"
    assert any(reason.startswith("inodes ") for reason in result["reasons"])


def test_check_mode_writes_neither_history_nor_metrics(run_module, xfs_volume, tmp_path):
    args = dict(path=str(xfs_volume), sample_seconds=0.2, history_file=str(tmp_path / "h.json"),
                metrics_dir=str(tmp_path / "m"), interface="lo")
    run = run_module("storage_capacity", args, check=True)
    assert not run.failed and run.result["capacity_state"] == "normal"
    assert not (tmp_path / "h.json").exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"warning_percent": 85}, "thresholds must rise"),
        ({"full_percent": 120}, "full threshold must be within 0-100"),
        ({"link_speed_mbps": 0}, "link speed must be positive"),
    ],
)
def test_bad_settings_are_refused(run_module, xfs_volume, tmp_path, extra, message):
    run = run_module("storage_capacity", dict(path=str(xfs_volume), metrics_dir=str(tmp_path / "m"), **extra))
    assert run.failed and message in run.msg
    assert not (tmp_path / "m").exists()


def test_a_path_that_is_not_mounted_is_refused(run_module, tmp_path):
    run = run_module("storage_capacity", dict(path=str(tmp_path), metrics_dir=str(tmp_path / "m")))
    assert run.failed and "is not a mounted volume" in run.msg
