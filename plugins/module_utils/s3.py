# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""S3 client setup shared by modules and tools: path-style, SigV4, region us-east-1."""

from __future__ import annotations

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the host
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc
    BotoCoreError = ClientError = Exception

DEFAULT_REGION = "us-east-1"


def s3_argument_spec() -> dict:
    return dict(
        endpoint_url=dict(type="str", required=True),
        access_key=dict(type="str", required=True, no_log=True),
        secret_key=dict(type="str", required=True, no_log=True),
        region=dict(type="str", default=DEFAULT_REGION),
    )


def make_client(endpoint_url, access_key, secret_key, region=DEFAULT_REGION, attempts=3, timeout=10, pool=10):
    """An S3 client as CHOM-APP's Laravel driver uses it: path-style addressing, SigV4.

    Checksums are sent only where the caller gives one (or the operation requires one), so a
    SHA-256 the caller computed is never replaced by the SDK's default CRC.
    """
    # Older botocore (Debian's, on the storage hosts) has neither option and sends no default checksum.
    checksums = {}
    if "request_checksum_calculation" in Config.OPTION_DEFAULTS:
        checksums = dict(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    config = Config(
        max_pool_connections=pool,
        **checksums,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=max(timeout, 60),
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


def error_code(exc) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def is_denied(exc) -> bool:
    return error_code(exc) in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")


def is_missing_bucket(exc) -> bool:
    return error_code(exc) in ("404", "NoSuchBucket", "NotFound")
