"""Pure parts of the replication program: guards and metrics."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PATH = os.path.join(REPO, "roles/replication/files/chom-replicate")
loader = importlib.machinery.SourceFileLoader("chom_replicate", PATH)
spec = importlib.util.spec_from_loader("chom_replicate", loader)
replicate = importlib.util.module_from_spec(spec)
loader.exec_module(replicate)


def test_empty_source_with_populated_replica_is_refused():
    with pytest.raises(replicate.Refused, match="source is empty"):
        replicate.check_deletions("object", 0, 10, 10, 100.0)


def test_deletions_over_the_bound_are_refused():
    expected = r"3 of 10 replica item\(s\) would be deleted \(30.0 % > bound 25.0 %\)"
    with pytest.raises(replicate.Refused, match=expected):
        replicate.check_deletions("file", 7, 10, 3, 25.0)


@pytest.mark.parametrize("source,replica,deletions", [(10, 10, 2), (5, 0, 0), (0, 0, 0), (8, 10, 0)])
def test_deletions_within_the_bound_pass(source, replica, deletions):
    replicate.check_deletions("object", source, replica, deletions, 25.0)


def test_plain_directory_is_not_a_mounted_volume(tmp_path):
    with pytest.raises(replicate.Refused, match="not mounted"):
        replicate.check_source_volume(str(tmp_path), str(tmp_path / "files"))


def test_path_outside_the_volume_is_refused():
    with pytest.raises(replicate.Refused, match="not on the volume"):
        replicate.check_source_volume("/proc", "/etc")


def test_metrics_report_lag_from_the_last_successful_start():
    state = {"last_success_start": 1000.0, "last_success_end": 1010.0}
    text = replicate.render_metrics("storage-2", state, {"object": {"objects_copied": 3}}, True, False, 1012.5)
    assert 'chom_storage_replication_lag_seconds{replica="storage-2"} 12.500' in text
    assert 'chom_storage_replication_last_run_success{replica="storage-2"} 1' in text
    assert 'chom_storage_replication_objects_copied{replica="storage-2",tier="object"} 3' in text


def test_metrics_of_a_replica_never_replicated_say_so():
    text = replicate.render_metrics("r", {}, {}, False, True, 50.0)
    assert 'chom_storage_replication_lag_seconds{replica="r"} -1.000' in text
    assert 'chom_storage_replication_last_run_refused{replica="r"} 1' in text


def test_a_few_deletions_pass_whatever_their_share():
    replicate.check_deletions("object tier bucket small", 2, 3, 1, 25.0, allowance=3)
    with pytest.raises(replicate.Refused, match="4 of 10"):
        replicate.check_deletions("object", 6, 10, 4, 25.0, allowance=3)
    with pytest.raises(replicate.Refused, match="source is empty"):
        replicate.check_deletions("object", 0, 2, 2, 25.0, allowance=3)
