"""Write or check the test objects of sites on a storage host's S3 endpoint (controller side).

    site_objects.py put   ENDPOINT BUCKET TAG SITE [SITE ...]
    site_objects.py check ENDPOINT BUCKET TAG SITE [SITE ...]
    site_objects.py put-keys ENDPOINT BUCKET KEY [KEY ...]
    site_objects.py has-keys ENDPOINT BUCKET KEY [KEY ...]

Each site gets three objects under ``<site>/full/<stamp>/``: 0 bytes, 150 kB and 17 MiB (multipart
size for the engine's clients). Their bytes are derived from TAG, the site and the object's name,
so ``check`` knows what every byte must be without keeping anything between runs. ``check`` prints
JSON: ``{"missing": [...], "different": [...], "present": N}`` and exits 0 either way; the
scenario's assertions decide. ``put-keys`` writes 50 kB under each given key; ``has-keys`` prints
the JSON list of the given keys that exist. The S3 key comes from S3_ACCESS_KEY and S3_SECRET_KEY in the
environment, never from the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "collections"))

from ansible_collections.chom.storage.plugins.module_utils.s3 import make_client  # noqa: E402

SIZES = {"empty.bin": 0, "db.sql.gz": 150_000, "files.tar.gz": 17 * 1024 * 1024}


def body(tag: str, site: str, name: str) -> bytes:
    size = SIZES[name]
    seed = hashlib.sha256(f"{tag}/{site}/{name}".encode()).digest()
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def key(tag: str, site: str, name: str) -> str:
    return f"{site}/full/20261204T000000Z/{tag}-{name}"


def main(argv: list[str]) -> int:
    action, endpoint, bucket, tag, *sites = argv
    client = make_client(endpoint, os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"], attempts=3)
    if action == "put-keys":
        for k in [tag, *sites]:
            client.put_object(Bucket=bucket, Key=k, Body=hashlib.sha256(k.encode()).digest() * 1563)
        print(json.dumps({"written": 1 + len(sites)}))
        return 0
    if action == "has-keys":
        found = []
        for k in [tag, *sites]:
            try:
                client.head_object(Bucket=bucket, Key=k)
                found.append(k)
            except client.exceptions.ClientError as err:
                if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                    raise
        print(json.dumps(found))
        return 0
    if action == "put":
        for site in sites:
            for name in SIZES:
                client.put_object(Bucket=bucket, Key=key(tag, site, name), Body=body(tag, site, name))
        print(json.dumps({"written": len(sites) * len(SIZES)}))
        return 0
    missing, different, present = [], [], 0
    for site in sites:
        for name in SIZES:
            k = key(tag, site, name)
            try:
                data = client.get_object(Bucket=bucket, Key=k)["Body"].read()
            except client.exceptions.NoSuchKey:
                missing.append(k)
                continue
            if data == body(tag, site, name):
                present += 1
            else:
                different.append(k)
    print(json.dumps({"missing": missing, "different": different, "present": present}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
