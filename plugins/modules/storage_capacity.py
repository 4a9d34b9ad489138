#!/usr/bin/python
# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_capacity
short_description: Measure a storage host and classify its capacity state
description:
  - Runs on a storage host. Measures bytes and inodes used on the storage volume, I/O wait over a
    short sampling window, the busiest direction of the network interface against the link speed,
    and reads the backup success rate. Returns the capacity state (C(normal), C(warning),
    C(critical) or C(full)) with the reasons.
  - The disk share gives the state by the thresholds (70, 80 and 90 % by default). Independently
    the host counts as C(full) when inodes pass O(inode_full_percent), when I/O wait stayed above
    O(io_wait_percent) for O(io_wait_minutes), when the network passes O(network_percent) of the
    link, or when the backup success rate falls below O(backup_success_min_percent).
  - The I/O wait rule needs history; each run appends its sample to O(history_file) on the host.
  - Writes the metrics C(chom_storage_disk_usage_percent), C(chom_storage_inode_usage_percent),
    C(chom_storage_io_wait_percent), C(chom_storage_network_usage_percent),
    C(chom_storage_backup_success_rate) and C(chom_storage_capacity_state) to the node_exporter
    textfile directory.
version_added: 0.1.0
author: CHOM platform team
options:
  path:
    description: Mountpoint of the storage volume. It must be mounted.
    type: path
    default: /mnt/chom-storage
  warning_percent:
    description: Disk share from which the host is C(warning).
    type: float
    default: 70
  critical_percent:
    description: Disk share from which the host is C(critical) (no new sites).
    type: float
    default: 80
  full_percent:
    description: Disk share from which the host is C(full).
    type: float
    default: 90
  inode_full_percent:
    description: Inode share above which the host is C(full).
    type: float
    default: 85
  io_wait_percent:
    description: I/O wait share that must not be exceeded for O(io_wait_minutes).
    type: float
    default: 10
  io_wait_minutes:
    description: How long I/O wait may stay above O(io_wait_percent).
    type: float
    default: 10
  network_percent:
    description: Share of the link above which the host is C(full).
    type: float
    default: 80
  link_speed_mbps:
    description: Link speed of O(interface) in Mbit/s.
    type: float
    default: 1000
  interface:
    description: Network interface to measure. Default, the interface of the default route.
    type: str
  backup_success_min_percent:
    description: Backup success rate below which the host is C(full).
    type: float
    default: 95
  backup_success_rate_percent:
    description:
      - Backup success rate of the host's sites in percent. When not given, it is read from
        O(backup_results_file) (keys C(succeeded) and C(failed)); with neither, it is not rated.
    type: float
  backup_results_file:
    description: JSON file where backup jobs count their results.
    type: path
    default: /var/lib/chom-storage/backup-results.json
  sample_seconds:
    description: Length of the I/O wait and network sampling window.
    type: float
    default: 3
  history_file:
    description: Where I/O wait samples are kept between runs.
    type: path
    default: /var/lib/chom-storage/capacity-history.json
  metrics_dir:
    description: node_exporter textfile collector directory.
    type: path
    default: /var/lib/prometheus/node-exporter
attributes:
  check_mode:
    support: full
    details: Measures and returns the state; writes neither history nor metrics.
  diff_mode:
    support: none
notes:
  - C(changed) is always false; the history and metrics files are the module's bookkeeping.
  - I/O wait is sampled once per run, so the sustained rule holds when every run across
    O(io_wait_minutes) saw I/O wait above the limit; run the check at least every few minutes.
  - When no backup results exist yet the rate is not rated and its metric is not written.
"""

EXAMPLES = r"""
- name: Measure the storage host
  chom.storage.storage_capacity:
    link_speed_mbps: 10000
  register: capacity
"""

RETURN = r"""
capacity_state:
  description: normal, warning, critical or full.
  returned: always
  type: str
reasons:
  description: Why the state is not normal.
  returned: always
  type: list
  elements: str
measures:
  description: disk_percent, inode_percent, used_bytes, total_bytes, io_wait_percent, network_percent and
    backup_success_rate_percent.
  returned: always
  type: dict
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.chom.storage.plugins.module_utils.capacity import (
    CAPACITY_STATES,
    assess,
    check_limits,
    cpu_times,
    interface_bytes,
    io_wait_percent,
    network_percent,
    prune,
    sustained,
)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def default_interface():
    for line in read("/proc/net/route").splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return fields[0]
    return "lo"


def write_atomic(path, text, mode=0o644):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".chom-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def backup_rate(params):
    if params["backup_success_rate_percent"] is not None:
        return params["backup_success_rate_percent"]
    try:
        counts = json.loads(read(params["backup_results_file"]))
    except (FileNotFoundError, ValueError):
        return None
    total = counts.get("succeeded", 0) + counts.get("failed", 0)
    return None if total == 0 else counts.get("succeeded", 0) * 100.0 / total


def render_metrics(path, measures, state):
    mount = f'mountpoint="{path}"'
    lines = []
    for name, labels, value, help_text in (
        ("disk_usage_percent", mount, measures["disk_percent"], "Share of the storage volume's bytes used."),
        ("inode_usage_percent", mount, measures["inode_percent"], "Share of the storage volume's inodes used."),
        ("io_wait_percent", "", measures["io_wait_percent"], "Share of CPU time waiting for I/O, last sample."),
        ("network_usage_percent", "", measures["network_percent"], "Busiest direction's share of the link."),
        ("backup_success_rate", "", measures["backup_success_rate_percent"], "Share of backups that succeeded."),
    ):
        if value is None:
            continue
        lines += [f"# HELP chom_storage_{name} {help_text}", f"# TYPE chom_storage_{name} gauge",
                  f"chom_storage_{name}{{{labels}}} {value:.3f}"]
    lines += ["# HELP chom_storage_capacity_state 1 for the host's current capacity state.",
              "# TYPE chom_storage_capacity_state gauge"]
    lines += [f'chom_storage_capacity_state{{state="{s}"}} {int(s == state)}' for s in CAPACITY_STATES]
    return "\n".join(lines) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/mnt/chom-storage"),
            warning_percent=dict(type="float", default=70),
            critical_percent=dict(type="float", default=80),
            full_percent=dict(type="float", default=90),
            inode_full_percent=dict(type="float", default=85),
            io_wait_percent=dict(type="float", default=10),
            io_wait_minutes=dict(type="float", default=10),
            network_percent=dict(type="float", default=80),
            link_speed_mbps=dict(type="float", default=1000),
            interface=dict(type="str"),
            backup_success_min_percent=dict(type="float", default=95),
            backup_success_rate_percent=dict(type="float"),
            backup_results_file=dict(type="path", default="/var/lib/chom-storage/backup-results.json"),
            sample_seconds=dict(type="float", default=3),
            history_file=dict(type="path", default="/var/lib/chom-storage/capacity-history.json"),
            metrics_dir=dict(type="path", default="/var/lib/prometheus/node-exporter"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    thresholds = (p["warning_percent"], p["critical_percent"], p["full_percent"])
    limits = {name: p[name] for name in ("inode_full_percent", "io_wait_percent", "io_wait_minutes",
                                         "network_percent", "backup_success_min_percent")}
    try:
        check_limits(thresholds, limits, p["link_speed_mbps"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if not os.path.ismount(p["path"]):
        module.fail_json(msg=f"{p['path']} is not a mounted volume; refusing to measure the disk below it")
    if not 0 < p["sample_seconds"] <= 60:
        module.fail_json(msg="sample_seconds must be within (0, 60]")

    interface = p["interface"] or default_interface()
    try:
        cpu_before, net_before = cpu_times(read("/proc/stat")), interface_bytes(read("/proc/net/dev"), interface)
        started = time.monotonic()
        time.sleep(p["sample_seconds"])
        cpu_after, net_after = cpu_times(read("/proc/stat")), interface_bytes(read("/proc/net/dev"), interface)
        elapsed = time.monotonic() - started
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    fs = os.statvfs(p["path"])
    total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    used = total - fs.f_bfree * fs.f_frsize
    measures = dict(
        total_bytes=total,
        used_bytes=used,
        disk_percent=0.0 if total == 0 else used * 100.0 / (used + free),
        inode_percent=0.0 if fs.f_files == 0 else (fs.f_files - fs.f_ffree) * 100.0 / fs.f_files,
        io_wait_percent=io_wait_percent(cpu_before, cpu_after),
        network_percent=network_percent(net_before, net_after, elapsed, p["link_speed_mbps"]),
        backup_success_rate_percent=backup_rate(p),
        interface=interface,
    )

    now = time.time()
    try:
        history = json.loads(read(p["history_file"]))
    except (FileNotFoundError, ValueError):
        history = []
    history = prune(history + [[now, measures["io_wait_percent"]]], now, p["io_wait_minutes"])
    state, reasons = assess(measures, thresholds, limits,
                            sustained(history, now, p["io_wait_minutes"], p["io_wait_percent"]))

    if not module.check_mode:
        write_atomic(p["history_file"], json.dumps(history), 0o600)
        write_atomic(os.path.join(p["metrics_dir"], "chom_storage_capacity.prom"),
                     render_metrics(p["path"], measures, state))
    module.exit_json(changed=False, capacity_state=state, reasons=reasons, measures=measures)


if __name__ == "__main__":
    main()
