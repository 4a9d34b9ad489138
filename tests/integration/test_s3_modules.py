"""chom.storage.s3_bucket and chom.storage.s3_probe against a real SeaweedFS, run through the ansible CLI."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from conftest import CONSUMER_BUCKETS, S3Key, free_ports

DENIED_BUCKET = "chom-archives"
ALL_BUCKETS = [*CONSUMER_BUCKETS, DENIED_BUCKET]


@pytest.fixture(scope="module")
def engine(seaweedfs_factory):
    """An engine of this module's own (its bucket list is asserted), with the chom buckets created."""
    server = seaweedfs_factory()
    for bucket in ALL_BUCKETS:
        server.client().create_bucket(Bucket=bucket)
    return server


def bucket_names(server) -> set[str]:
    return {bucket["Name"] for bucket in server.client().list_buckets()["Buckets"]}


def probe_objects(server, bucket) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=".chom-probe/")
    return [item["Key"] for item in listing.get("Contents", [])]


# ------------------------------------------------------------------------------------ s3_bucket


def test_buckets_are_created_once(run_module, engine):
    before = bucket_names(engine)
    wanted = ["chom-it-backups", "chom-it-media", "chom-it-archives"]

    first = run_module("s3_bucket", dict(engine.module_args(), buckets=wanted), diff=True)

    assert not first.failed and first.changed, first.result
    assert sorted(first.result["created"]) == sorted(wanted)
    assert set(first.result["buckets"]) == before | set(wanted)
    assert bucket_names(engine) == before | set(wanted)
    for bucket in wanted:
        engine.client().head_bucket(Bucket=bucket)

    second = run_module("s3_bucket", dict(engine.module_args(), buckets=wanted))

    assert not second.failed and not second.changed, second.result
    assert second.result["created"] == []
    assert bucket_names(engine) == before | set(wanted)

    # One more bucket next to existing ones: only that one is reported and created.
    third = run_module("s3_bucket", dict(engine.module_args(), buckets=[*wanted, "chom-it-exports"]))

    assert not third.failed and third.changed, third.result
    assert third.result["created"] == ["chom-it-exports"]
    assert bucket_names(engine) == before | {*wanted, "chom-it-exports"}


def test_check_mode_creates_nothing(run_module, engine):
    before = bucket_names(engine)

    run = run_module("s3_bucket", dict(engine.module_args(), buckets=["chom-media", "chom-check-only"]), check=True)

    assert not run.failed and run.changed, run.result
    assert run.result["created"] == ["chom-check-only"]
    assert bucket_names(engine) == before
    with pytest.raises(ClientError):
        engine.client().head_bucket(Bucket="chom-check-only")


INVALID_BUCKET_NAMES = ["Chom-Media", "chom_media", "ab", "-chom", "chom-", "x" * 64, "chom media"]


def test_invalid_bucket_names_are_refused(run_module, engine):
    before = bucket_names(engine)

    run = run_module("s3_bucket", dict(engine.module_args(), buckets=["chom-it-valid", *INVALID_BUCKET_NAMES]))

    assert run.failed, run.result
    assert run.msg.startswith(f"Invalid bucket names: {', '.join(INVALID_BUCKET_NAMES)} (")
    assert bucket_names(engine) == before  # not even the valid one


def test_consumer_key_cannot_create_buckets(run_module, engine):
    run = run_module("s3_bucket", dict(engine.module_args(engine.consumer), buckets=["chom-consumer-made"]))

    assert run.failed, run.result
    assert f"S3 bucket check on {engine.endpoint} failed" in run.msg
    assert "Forbidden" in run.msg  # HeadBucket of a bucket outside its grants: 403 without a body
    assert "chom-consumer-made" not in bucket_names(engine)


# ------------------------------------------------------------------------------------- s3_probe


def test_probe_passes_with_the_admin_key(run_module, engine):
    run = run_module("s3_probe", dict(engine.module_args(), retries=3, delay=0.5, writable=list(CONSUMER_BUCKETS),
                                      readonly=[DENIED_BUCKET]))

    assert not run.failed, run.result
    assert not run.changed
    assert run.result["attempts"] == 1
    checks = run.result["checks"]
    for bucket in CONSUMER_BUCKETS:
        assert f"writes, reads back and deletes in {bucket}" in checks
    assert f"lists {DENIED_BUCKET}" in checks
    for bucket in CONSUMER_BUCKETS:
        assert probe_objects(engine, bucket) == []


def test_probe_of_the_consumer_key_proves_least_privilege(run_module, engine):
    before = bucket_names(engine)

    run = run_module("s3_probe", dict(engine.module_args(engine.consumer), retries=3, delay=0.5,
                                      writable=list(CONSUMER_BUCKETS), denied=[DENIED_BUCKET],
                                      deny_create_bucket=True))

    assert not run.failed, run.result
    checks = run.result["checks"]
    for bucket in CONSUMER_BUCKETS:
        assert f"writes, reads back and deletes in {bucket}" in checks
    assert f"refused a write to {DENIED_BUCKET}" in checks
    assert "refused bucket creation" in checks
    assert bucket_names(engine) == before
    assert probe_objects(engine, DENIED_BUCKET) == []


def test_probe_fails_when_the_consumer_cannot_write_where_it_must(run_module, engine):
    run = run_module("s3_probe", dict(engine.module_args(engine.consumer), retries=1, writable=[DENIED_BUCKET]))

    assert run.failed, run.result
    assert f"Key cannot write, read and delete in bucket {DENIED_BUCKET}: AccessDenied" in run.msg


def test_probe_fails_when_a_denied_bucket_is_writable(run_module, engine):
    bucket = CONSUMER_BUCKETS[0]

    run = run_module("s3_probe", dict(engine.module_args(engine.consumer), retries=1, denied=[bucket]))

    assert run.failed, run.result
    assert f"Least privilege broken: a write to bucket {bucket} was allowed" in run.msg


def test_probe_check_mode_only_reads(run_module, engine):
    run = run_module("s3_probe", dict(engine.module_args(engine.consumer), retries=1,
                                      readonly=list(CONSUMER_BUCKETS), writable=[DENIED_BUCKET]), check=True)

    assert not run.failed, run.result
    assert "write checks skipped in check mode" in run.result["checks"]


def test_probe_against_a_closed_port_fails_after_its_retries(run_module):
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    retries, delay = 3, 1.5

    args = {"endpoint_url": endpoint, "access_key": "CHOMPROBECLOSED", "secret_key": "closed-secret",
            "retries": retries, "delay": delay}

    run = run_module("s3_probe", args)

    assert run.failed, run.result
    assert f"S3 endpoint {endpoint} is not healthy" in run.msg
    assert "EndpointConnectionError" in run.msg
    # It waited between its attempts instead of giving up at the first refusal.
    assert run.duration >= (retries - 1) * delay, run.duration


def test_wrong_secret_fails_at_once_and_clearly(run_module, engine):
    wrong = S3Key(engine.admin.access_key, "wrong-" + engine.admin.secret_key[::-1])
    retries, delay = 5, 3

    probe = run_module("s3_probe", dict(engine.module_args(wrong), retries=retries, delay=delay), verbosity=3)
    bucket = run_module("s3_bucket", dict(engine.module_args(wrong), buckets=["chom-media"]), verbosity=3)

    assert probe.failed, probe.result
    assert f"S3 endpoint {engine.endpoint} is not healthy: SignatureDoesNotMatch" in probe.msg
    # A refused signature is final: no retries are spent on it.
    assert probe.duration < delay, probe.duration
    assert bucket.failed, bucket.result
    assert f"S3 bucket check on {engine.endpoint} failed" in bucket.msg
    assert "Forbidden" in bucket.msg  # HeadBucket answers 403 without a body, so no error code
    for run in (probe, bucket):
        assert wrong.secret_key not in run.raw
        assert engine.admin.secret_key not in run.raw


def test_admin_secret_with_spaces_quotes_dollar_and_bang_works(run_module, seaweedfs_factory):
    # (weed itself expands ${VAR} in its identities file, so that form is not used here.)
    secret = """it's a "quoted" secret with spaces $HOME $1 $(id) `id` !! !$ \\n; end"""
    server = seaweedfs_factory(admin_secret=secret)
    assert server.admin.secret_key == secret

    buckets = run_module("s3_bucket", dict(server.module_args(), buckets=["chom-media"]), diff=True, verbosity=3)
    probe = run_module("s3_probe", dict(server.module_args(), retries=3, delay=0.5, writable=["chom-media"]),
                       verbosity=3)

    assert not buckets.failed and buckets.changed, buckets.result
    assert bucket_names(server) == {"chom-media"}
    assert not probe.failed, probe.result
    assert "writes, reads back and deletes in chom-media" in probe.result["checks"]
    for run in (buckets, probe):
        assert secret not in run.raw
