"""Fixtures for the scale-out tests: the lab with at least three storage hosts (`make lab-up HOSTS=4`)."""

from __future__ import annotations

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("chom_e2e_lab", os.path.join(HERE, "..", "e2e", "conftest.py"))
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)
Lab = _e2e.Lab


@pytest.fixture(scope="session")
def lab() -> Lab:
    lab = Lab()
    storage = sorted(name for name in lab.hostvars if name.startswith("storage-"))
    if len(storage) < 3:
        pytest.fail(f"the scale-out tests need at least 3 storage hosts, the lab has {len(storage)} "
                    f"({', '.join(storage)}): run `make lab-up HOSTS=4` (or `make e2e-scale`)")
    return lab
