"""The built collection carries the product and nothing of the lab, inventories or tests."""

from __future__ import annotations

import os
import subprocess
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_build_contains_the_collection_without_lab_or_tests(tmp_path):
    subprocess.run(
        [os.path.join(REPO, ".venv/bin/ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), REPO],
        check=True, capture_output=True, cwd=REPO,
    )
    (archive,) = tmp_path.glob("chom-storage-*.tar.gz")
    names = tarfile.open(archive).getnames()
    tops = {name.split("/")[0] for name in names}

    for required in ("roles", "plugins", "playbooks", "meta", "README.md", "MANIFEST.json"):
        assert required in tops
    for forbidden in ("lab", "inventories", "tests", "molecule", "collections", ".venv", ".lab", ".ci", ".git", "awx"):
        assert forbidden not in tops
    assert "plugins/modules/xfs_filesystem.py" in names
    assert "roles/replication/files/chom-replicate" in names
    assert not any("lab_secrets" in name for name in names)
