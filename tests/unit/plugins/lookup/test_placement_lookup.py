"""The lookup plugin through Ansible itself, against the golden file."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
GOLDEN = os.path.join(REPO, "tests/golden/placement.json")


def run_lookup(tmp_path, expression: str, variables: dict):
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1")
    result = subprocess.run(
        [os.path.join(REPO, ".venv/bin/ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-m", "ansible.builtin.debug", "-a", f"msg={{{{ {expression} }}}}", "-e", f"@{varfile}"],
        capture_output=True, text=True, cwd=REPO, env=env, check=False,
    )
    task = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return task


@pytest.mark.parametrize("count", ["3", "4", "5"])
def test_lookup_matches_the_golden_file(tmp_path, count):
    with open(GOLDEN, encoding="utf-8") as handle:
        data = json.load(handle)
    ring = data["rings"][count]
    task = run_lookup(tmp_path, "query('chom.storage.placement', site_ids, hosts=hosts)",
                      {"site_ids": data["site_ids"], "hosts": list(reversed(ring["hosts"]))})
    assert task.get("failed") is not True, task
    assert task["msg"] == ring["placements"]


@pytest.mark.parametrize(
    "hosts,message",
    [
        ([], "placement: the host list is empty"),
        ([{"name": "a", "weight": 0}], "weight must be a positive number"),
        (["a", "a"], "duplicate hostnames: a"),
    ],
)
def test_lookup_refuses_bad_hosts_clearly(tmp_path, hosts, message):
    task = run_lookup(tmp_path, "query('chom.storage.placement', 'site-1', hosts=hosts)", {"hosts": hosts})
    assert task.get("failed") is True
    assert message in task["msg"]


def test_lookup_refuses_zero_vnodes_and_blank_site(tmp_path):
    task = run_lookup(tmp_path, "query('chom.storage.placement', 'site-1', hosts=['a'], vnodes=0)", {})
    assert task.get("failed") is True and "vnodes must be a positive integer" in task["msg"]
    task = run_lookup(tmp_path, "query('chom.storage.placement', '', hosts=['a'])", {})
    assert task.get("failed") is True and "site ID must be a non-empty string" in task["msg"]
