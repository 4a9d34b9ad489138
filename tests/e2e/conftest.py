"""Fixtures for end-to-end tests on the running lab (`make lab-up` and site.yml first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "collections"))

from ansible_collections.chom.storage.plugins.module_utils.s3 import make_client  # noqa: E402


class Lab:
    def __init__(self):
        inventory = os.path.join(REPO, "inventories/lab/hosts.yml")
        if not os.path.exists(inventory):
            pytest.fail("the lab is not running: no inventories/lab/hosts.yml (run `make lab-up` first)")
        out = subprocess.run(
            [os.path.join(REPO, ".venv/bin/ansible-inventory"), "-i", os.path.join(REPO, "inventories/lab"), "--list"],
            capture_output=True, text=True, check=True, cwd=REPO,
        ).stdout
        inv = json.loads(out)
        self.hostvars = inv["_meta"]["hostvars"]
        self.primary = inv["storage_primary"]["hosts"][0]
        self.replica = inv["storage_replica"]["hosts"][0]
        # Scale-out hosts (lab/lab.sh up with HOSTS > 2): active, not part of the primary/replica pair.
        self.pool = inv.get("storage_pool", {}).get("hosts", [])
        with open(os.path.join(REPO, "inventories/lab/group_vars/all/lab_secrets.yml"), encoding="utf-8") as handle:
            self.secrets = yaml.safe_load(handle)

    def ip(self, host: str) -> str:
        return self.hostvars[host]["ansible_host"]

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        lab = os.environ.get("CHOM_LAB_STATE", "/var/lib/chom-lab")
        result = subprocess.run(
            ["ssh", "-i", f"{lab}/ssh/id_ed25519", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab}/known_hosts",
             "-o", "ConnectTimeout=5", f"root@{self.ip(host)}", command],
            capture_output=True, text=True, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{host}: `{command}` exited {result.returncode}: {result.stderr.strip()}")
        return result

    def s3(self, host: str, who: str = "app"):
        return make_client(f"http://{self.ip(host)}:8333", self.secrets[f"lab_{who}_access_key"],
                           self.secrets[f"lab_{who}_secret_key"], attempts=1)

    def playbook(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0")
        return subprocess.run(
            [os.path.join(REPO, ".venv/bin/ansible-playbook"), *args],
            capture_output=True, text=True, check=False, cwd=REPO, env=env,
        )


@pytest.fixture(scope="session")
def lab() -> Lab:
    return Lab()
