# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Encrypted offsite copies of stored items: format, streaming encryption, copy, restore, retention.

Format of an offsite object (version 1)::

    header   "CHOMOFS" | version (1 B) | chunk size (4 B) | salt (16 B) | nonce prefix (8 B)
             | key check (8 B) | key ID length (1 B) | key ID | name length (2 B) | name
    records  one per plaintext chunk: AES-256-GCM ciphertext of the chunk + 16 B tag

- The chunk key is derived per object with HKDF-SHA256 from the 32-byte master key and the
  object's random salt, so nonces never repeat under one key; the nonce of chunk ``i`` is the
  object's random nonce prefix followed by ``i`` (4 bytes, big-endian).
- Every record authenticates, as associated data, the whole header, its own index and whether
  it is the last one. Altered, dropped, reordered or appended records, a cut-off stream and an
  altered header all fail authentication.
- Every record but the last holds exactly ``chunk size`` plaintext bytes; the last holds the
  rest (possibly nothing: an empty object is one empty final record). The ciphertext is
  ``header + plaintext + 16 B x max(1, ceil(size / chunk size))`` bytes long.
- The key check (an HMAC of a fixed text under the master key) tells "wrong key" apart from
  "altered data"; the key ID names which key to use.
- The header carries the item's source name (``<bucket>/<key>``), so a copy renamed to another
  key is refused on restore. Object metadata carries the plaintext SHA-256 and size; restore
  checks both after decryption.

Memory stays bounded: one chunk while encrypting or decrypting, one multipart part while uploading.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os
import struct
from dataclasses import dataclass, field

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = exc
    InvalidTag = Exception

from ansible_collections.chom.storage.plugins.module_utils import retention
from ansible_collections.chom.storage.plugins.module_utils.backup_items import group_items, list_objects

MAGIC = b"CHOMOFS"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
TAG_BYTES = 16
KEY_BYTES = 32
SALT_BYTES = 16
NONCE_PREFIX_BYTES = 8
KEY_CHECK_BYTES = 8
READ_CHUNK = 1 << 20
MIN_PART_SIZE = 5 << 20
KEY_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

# User metadata of an offsite object (S3 lowercases the names).
META_SHA256 = "chom-sha256"
META_SIZE = "chom-size"
META_KEY_ID = "chom-key-id"
META_FORMAT = "chom-format"
META_SOURCE = "chom-source"
META_SOURCE_ETAG = "chom-source-etag"


class OffsiteError(Exception):
    """An offsite object that cannot be read back, or an input that cannot be used."""


class WrongKeyError(OffsiteError):
    """The object was encrypted with another key than the one given."""


class IntegrityError(OffsiteError):
    """The object fails authentication or verification: altered, truncated, reordered or mixed up."""


# ------------------------------------------------------------------------------------ keys


def parse_master_key(text: str) -> bytes:
    """The 32-byte master key from its base64 text; the message never contains the key."""
    if not isinstance(text, str) or not text.strip():
        raise OffsiteError("encryption_key is empty; give the base64 text of 32 random bytes "
                           "(for example the output of `openssl rand -base64 32`), kept in Ansible Vault")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise OffsiteError("encryption_key is not valid base64; give the base64 text of 32 random bytes "
                           "(for example the output of `openssl rand -base64 32`)") from None
    if len(key) != KEY_BYTES:
        raise OffsiteError(f"encryption_key decodes to {len(key)} bytes; AES-256 needs exactly {KEY_BYTES} "
                           "(for example the output of `openssl rand -base64 32`)")
    return key


def check_key_id(key_id: str) -> str:
    if not key_id or len(key_id) > 64 or not set(key_id) <= KEY_ID_CHARS:
        raise OffsiteError(f"key ID {key_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return key_id


def key_check(key: bytes) -> bytes:
    return hmac.new(key, b"chom-offsite key check v1", hashlib.sha256).digest()[:KEY_CHECK_BYTES]


def _chunk_cipher(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=b"chom-offsite v1 chunk key")
    return AESGCM(derived.derive(key))


# ------------------------------------------------------------------------------------ format


@dataclass(frozen=True)
class Header:
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    key_check: bytes
    key_id: str
    name: str
    raw: bytes = field(repr=False)


def build_header(key: bytes, key_id: str, name: str, chunk_size: int) -> Header:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise OffsiteError(f"chunk size must be 1 B to {MAX_CHUNK_SIZE} B, got {chunk_size}")
    key_id_bytes, name_bytes = check_key_id(key_id).encode(), name.encode("utf-8")
    if len(name_bytes) > 0xFFFF:
        raise OffsiteError("object name longer than 65535 bytes")
    salt, prefix, check = os.urandom(SALT_BYTES), os.urandom(NONCE_PREFIX_BYTES), key_check(key)
    raw = (MAGIC + struct.pack(">BI", FORMAT_VERSION, chunk_size) + salt + prefix + check
           + struct.pack(">B", len(key_id_bytes)) + key_id_bytes + struct.pack(">H", len(name_bytes)) + name_bytes)
    return Header(chunk_size, salt, prefix, check, key_id, name, raw)


def parse_header(buffer: bytes) -> Header | None:
    """The header at the start of ``buffer``, or None while more bytes are needed."""
    fixed = len(MAGIC) + 5 + SALT_BYTES + NONCE_PREFIX_BYTES + KEY_CHECK_BYTES + 1
    if len(buffer) < len(MAGIC):
        return None
    if buffer[:len(MAGIC)] != MAGIC:
        raise OffsiteError("not an offsite object of chom.storage (unknown magic)")
    if len(buffer) < fixed:
        return None
    version, chunk_size = struct.unpack_from(">BI", buffer, len(MAGIC))
    if version != FORMAT_VERSION:
        raise OffsiteError(f"offsite format version {version} is not supported (this collection reads "
                           f"{FORMAT_VERSION})")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityError(f"header names an impossible chunk size {chunk_size}")
    at = len(MAGIC) + 5
    salt, at = buffer[at:at + SALT_BYTES], at + SALT_BYTES
    prefix, at = buffer[at:at + NONCE_PREFIX_BYTES], at + NONCE_PREFIX_BYTES
    check, at = buffer[at:at + KEY_CHECK_BYTES], at + KEY_CHECK_BYTES
    key_id_len, at = buffer[at], at + 1
    if len(buffer) < at + key_id_len + 2:
        return None
    key_id, at = buffer[at:at + key_id_len].decode("ascii", "replace"), at + key_id_len
    (name_len,), at = struct.unpack_from(">H", buffer, at), at + 2
    if len(buffer) < at + name_len:
        return None
    name, at = buffer[at:at + name_len].decode("utf-8", "replace"), at + name_len
    return Header(chunk_size, bytes(salt), bytes(prefix), bytes(check), key_id, name, bytes(buffer[:at]))


def _nonce(header: Header, index: int) -> bytes:
    if index >= 1 << 32:
        raise OffsiteError("object too large: more than 2^32 chunks")
    return header.nonce_prefix + struct.pack(">I", index)


def _aad(header: Header, index: int, final: bool) -> bytes:
    return header.raw + struct.pack(">QB", index, 1 if final else 0)


def ciphertext_size(plain_size: int, key_id: str, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    header = len(MAGIC) + 5 + SALT_BYTES + NONCE_PREFIX_BYTES + KEY_CHECK_BYTES + 1 + len(key_id.encode()) + 2
    chunks = max(1, -(-plain_size // chunk_size))
    return header + len(name.encode("utf-8")) + plain_size + TAG_BYTES * chunks


def _rechunk(chunks, size: int):
    """Pieces of exactly ``size`` bytes, the last one shorter (and none at all for empty input)."""
    buffer = bytearray()
    for data in chunks:
        buffer += data
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def encrypt_stream(chunks, key: bytes, key_id: str, name: str, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """The offsite object of the plaintext ``chunks`` (an iterable of bytes), as an iterator of bytes."""
    header = build_header(key, key_id, name, chunk_size)
    cipher = _chunk_cipher(key, header.salt)
    yield header.raw
    index, pending = 0, None
    for piece in _rechunk(chunks, chunk_size):
        if pending is not None:
            yield cipher.encrypt(_nonce(header, index), pending, _aad(header, index, False))
            index += 1
        pending = piece
    yield cipher.encrypt(_nonce(header, index), pending or b"", _aad(header, index, True))


def read_header(chunks) -> tuple[Header, bytearray, object]:
    """(header, bytes read past it, the rest of ``chunks`` as an iterator)."""
    iterator = iter(chunks)
    buffer = bytearray()
    for data in iterator:
        buffer += data
        header = parse_header(buffer)
        if header is not None:
            return header, buffer[len(header.raw):], iterator
    header = parse_header(buffer)
    if header is None:
        raise IntegrityError("the object ends inside its header (truncated, or not an offsite object)")
    return header, buffer[len(header.raw):], iterator


def decrypt_stream(chunks, key: bytes, expected_name: str | None = None):
    """The plaintext of an offsite object read from ``chunks``, as an iterator of bytes.

    Raises :class:`WrongKeyError` for another key, :class:`IntegrityError` for anything altered,
    truncated, reordered or (with ``expected_name``) stored under another item's name. Bytes are
    only yielded once their record is authenticated; a consumer must still discard its output
    when the iterator raises before its end.
    """
    header, buffer, rest = read_header(chunks)
    if not hmac.compare_digest(header.key_check, key_check(key)):
        raise WrongKeyError(f"the object was encrypted with another key than the one given (its key ID is "
                            f"{header.key_id!r})")
    if expected_name is not None and header.name != expected_name:
        raise IntegrityError(f"the object holds the item {header.name!r}, not {expected_name!r}")
    cipher = _chunk_cipher(key, header.salt)
    record = header.chunk_size + TAG_BYTES
    index = 0

    def open_record(data, final):
        try:
            return cipher.decrypt(_nonce(header, index), bytes(data), _aad(header, index, final))
        except InvalidTag:
            raise IntegrityError(f"record {index} fails authentication: the object was altered, truncated or "
                                 "reordered") from None

    for data in itertools.chain((b"",), rest):
        buffer += data
        while len(buffer) > record:  # a full record with more bytes after it is not the last one
            yield open_record(buffer[:record], False)
            del buffer[:record]
            index += 1
    if len(buffer) < TAG_BYTES:
        raise IntegrityError(f"the object ends after record {index - 1}: truncated")
    yield open_record(buffer, True)


class HashingReader:
    """Passes byte chunks through while counting them and computing their SHA-256."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.sha256 = hashlib.sha256()
        self.size = 0

    def __iter__(self):
        for data in self._chunks:
            self.sha256.update(data)
            self.size += len(data)
            yield data

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


# ------------------------------------------------------------------------------------ S3 transfers


def iter_body(client, bucket: str, key: str):
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield from body.iter_chunks(READ_CHUNK)
    finally:
        body.close()


def upload_stream(client, bucket: str, key: str, chunks, metadata: dict, storage_class: str | None = None,
                  threshold: int = 16 << 20, part_size: int = 16 << 20, before_complete=None) -> str:
    """Upload ``chunks``: one PUT below ``threshold`` bytes, else a multipart upload of ``part_size`` parts.

    ``before_complete()`` runs once all bytes are read and before the object becomes visible;
    when it raises, nothing is stored. Returns ``put`` or ``multipart``.
    """
    if part_size < MIN_PART_SIZE:
        raise OffsiteError(f"multipart part size must be at least {MIN_PART_SIZE} B")
    extra = dict(Metadata=metadata, ContentType="application/octet-stream")
    if storage_class:
        extra["StorageClass"] = storage_class
    buffer = bytearray()
    iterator = iter(chunks)
    for data in iterator:
        buffer += data
        if len(buffer) > threshold:
            break
    else:
        if before_complete:
            before_complete()
        client.put_object(Bucket=bucket, Key=key, Body=bytes(buffer), **extra)
        return "put"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    parts = []
    try:
        def send(data):
            number = len(parts) + 1
            answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        while True:
            while len(buffer) >= part_size:
                send(bytes(buffer[:part_size]))
                del buffer[:part_size]
            data = next(iterator, None)
            if data is None:
                break
            buffer += data
        if buffer or not parts:
            send(bytes(buffer))
        if before_complete:
            before_complete()
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001, S110 - the original error matters more
            pass
        raise
    return "multipart"


def head(client, bucket: str, key: str) -> dict | None:
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - classified here
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


@dataclass
class CopySettings:
    key: bytes = field(repr=False)
    key_id: str
    offsite_bucket: str
    offsite_prefix: str = ""
    storage_class: str | None = "STANDARD"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    multipart_threshold: int = 16 << 20
    part_size: int = 16 << 20


def length_problem(answer: dict, meta: dict, name: str, chunk_size: int) -> str | None:
    """Why an offsite object's length does not fit the plaintext size its metadata records, or None."""
    length = answer.get("ContentLength")
    try:
        expected = ciphertext_size(int(meta.get(META_SIZE, "")), meta.get(META_KEY_ID, ""), name, chunk_size)
    except ValueError:
        return f"the offsite copy records no usable plaintext size ({META_SIZE} {meta.get(META_SIZE)!r})"
    if length != expected:
        return (f"the offsite copy is {length} B long, {expected} B expected for {meta.get(META_SIZE)} B of "
                "plaintext (truncated or altered)")
    return None


def offsite_key(settings: CopySettings, bucket: str, key: str) -> str:
    return f"{settings.offsite_prefix}{bucket}/{key}"


def copy_object(source, offsite, bucket: str, obj: dict, settings: CopySettings, check_mode: bool = False) -> dict:
    """Copy one source object (dict with key, size, etag) offsite, encrypted, unless already there.

    Returns ``{"key", "offsite_key", "size", "action"}`` with action ``present`` (already offsite:
    same source ETag and size, or same plaintext SHA-256, and the copy has the length its
    plaintext size gives), ``copied``, or ``would copy``. A copy of the wrong length (cut short, or
    written by another tool) is replaced; ``replaced`` then says why.
    """
    name = f"{bucket}/{obj['key']}"
    target = offsite_key(settings, bucket, obj["key"])
    result = {"key": name, "offsite_key": target, "size": obj["size"]}
    existing = head(offsite, settings.offsite_bucket, target)
    meta = (existing or {}).get("Metadata", {})
    if existing:
        problem = length_problem(existing, meta, name, settings.chunk_size)
        if problem:
            result["replaced"] = problem
            existing, meta = None, {}
    if existing and meta.get(META_SOURCE_ETAG) == obj["etag"] and meta.get(META_SIZE) == str(obj["size"]):
        return dict(result, action="present")
    sha256 = None
    if existing:  # another source version, or the same bytes uploaded again: compare the plaintext
        first = HashingReader(iter_body(source, bucket, obj["key"]))
        for _ in first:
            pass
        sha256 = first.hexdigest
        if meta.get(META_SHA256) == sha256 and meta.get(META_SIZE) == str(first.size):
            return dict(result, action="present", sha256=sha256)
    if check_mode:
        return dict(result, action="would copy")
    if sha256 is None:
        first = HashingReader(iter_body(source, bucket, obj["key"]))
        for _ in first:
            pass
        sha256, size = first.hexdigest, first.size
    else:
        size = first.size
    second = HashingReader(iter_body(source, bucket, obj["key"]))

    def unchanged():
        if second.hexdigest != sha256 or second.size != size:
            raise OffsiteError(f"{bucket}/{obj['key']} changed while it was copied; nothing was stored")

    metadata = {META_SHA256: sha256, META_SIZE: str(size), META_KEY_ID: settings.key_id,
                META_FORMAT: str(FORMAT_VERSION), META_SOURCE: f"{bucket}/{obj['key']}",
                META_SOURCE_ETAG: obj["etag"]}
    stream = encrypt_stream(second, settings.key, settings.key_id, f"{bucket}/{obj['key']}", settings.chunk_size)
    how = upload_stream(offsite, settings.offsite_bucket, target, stream, metadata, settings.storage_class,
                        settings.multipart_threshold, settings.part_size, before_complete=unchanged)
    return dict(result, action="copied", sha256=sha256, upload=how)


# ------------------------------------------------------------------------------------ restore


def restore_stream(offsite, bucket: str, key: str, master_key: bytes, key_id: str | None = None,
                   prefix: str = ""):
    """(metadata, plaintext iterator, verify) of one offsite object; call ``verify()`` after the last chunk.

    ``verify`` raises :class:`IntegrityError` when the plaintext's SHA-256 or size differs from the
    object's metadata. The item name sealed in the header must be the key without ``prefix``.
    """
    if not key.startswith(prefix):
        raise OffsiteError(f"offsite key {key!r} does not start with the offsite prefix {prefix!r}")
    expected_name = key[len(prefix):]
    answer = head(offsite, bucket, key)
    if answer is None:
        raise OffsiteError(f"offsite object {bucket}/{key} does not exist")
    meta = answer.get("Metadata", {})
    if meta.get(META_FORMAT) != str(FORMAT_VERSION) or META_SHA256 not in meta:
        raise OffsiteError(f"{bucket}/{key} is not an offsite copy of chom.storage (no {META_SHA256} metadata)")
    if key_id is not None and meta.get(META_KEY_ID) not in (None, key_id):
        raise WrongKeyError(f"{bucket}/{key} was encrypted with key ID {meta.get(META_KEY_ID)!r}, "
                            f"the key given is {key_id!r}")
    if meta.get(META_SOURCE, expected_name) != expected_name:
        raise IntegrityError(f"{bucket}/{key} records the source {meta.get(META_SOURCE)!r}, not {expected_name!r}")
    reader = HashingReader(decrypt_stream(iter_body(offsite, bucket, key), master_key, expected_name))

    def verify():
        if reader.hexdigest != meta[META_SHA256] or str(reader.size) != meta.get(META_SIZE):
            raise IntegrityError(f"{bucket}/{key}: the restored plaintext ({reader.size} B, sha256 "
                                 f"{reader.hexdigest}) differs from the recorded one ({meta.get(META_SIZE)} B, "
                                 f"sha256 {meta[META_SHA256]})")

    return meta, reader, verify


def file_sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(READ_CHUNK), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def restore_to_file(offsite, bucket: str, key: str, master_key: bytes, path: str, key_id: str | None = None,
                    prefix: str = "", mode: int = 0o600) -> dict:
    """Decrypt and verify into a temporary file beside ``path``, then rename it into place."""
    meta, reader, verify = restore_stream(offsite, bucket, key, master_key, key_id, prefix)
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.chom-restore-{os.getpid()}")
    try:
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            for data in reader:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        verify()
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return dict(sha256=reader.hexdigest, size=reader.size, source=meta.get(META_SOURCE))


def restore_to_bucket(offsite, bucket: str, key: str, master_key: bytes, dest, dest_bucket: str, dest_key: str,
                      key_id: str | None = None, prefix: str = "", threshold: int = 16 << 20,
                      part_size: int = 16 << 20) -> dict:
    """Decrypt and verify into ``dest_bucket/dest_key``; the object appears only once verified."""
    meta, reader, verify = restore_stream(offsite, bucket, key, master_key, key_id, prefix)
    metadata = {META_SHA256: meta[META_SHA256], META_SIZE: meta.get(META_SIZE, "")}
    upload_stream(dest, dest_bucket, dest_key, reader, metadata, None, threshold, part_size, before_complete=verify)
    return dict(sha256=reader.hexdigest, size=reader.size, source=meta.get(META_SOURCE))


# ------------------------------------------------------------------------------------ retention


def retention_item(item, flags: int | None = None) -> retention.Item:
    """The retention planner's view of a stored item; flags from its markers unless given."""
    if flags is None:
        flags = (retention.VALID if "valid" in item.markers else 0) | (
            retention.INVALID if "invalid" in item.markers else 0)
    size = sum(obj["size"] for obj in item.objects)
    return retention.Item(item.site, item.kind, retention.epoch(item.created), size, item.prefix, flags)


def is_good(item) -> bool:
    """Copied offsite: a db item only with a ``valid`` marker, any other item unless marked ``invalid``."""
    if "invalid" in item.markers:
        return False
    return item.kind != "db" or "valid" in item.markers


def plan_copy(items, site_tiers: dict, now) -> tuple[list, list]:
    """(items to copy, [(item, why not)]) among a storage host's items.

    An item is copied when it is good and the offsite retention would keep it (within the tier's
    offsite window, the newest good item of its site and kind, or needed by a kept incremental);
    items of sites without a known tier are copied and kept.
    """
    by_prefix = {item.prefix: item for item in items}
    good = [item for item in items if is_good(item)]
    skipped = [(item, "marked invalid" if "invalid" in item.markers else "not validated yet (no valid marker)")
               for item in items if not is_good(item)]
    sites = {site: retention.Site(tier) for site, tier in site_tiers.items()}
    plan = retention.plan([retention_item(item) for item in good], sites, now, offsite=True)
    copy = []
    for planned, action, reason in plan.decisions():
        if action == "keep":
            copy.append(by_prefix[planned.ref])
        else:
            skipped.append((by_prefix[planned.ref], f"offsite retention: {reason}"))
    return copy, skipped


def plan_prune(items, site_tiers: dict, now) -> tuple[list, list]:
    """([(item, reason)] to delete, [(item, reason)] kept) among the offsite copies.

    Offsite copies are good by construction (only good items are copied), so the planner's rules
    apply unchanged: the tier's offsite window (30 / 90 / 365 days), never the newest good item of a
    site and kind, never an item a kept incremental depends on, never items of unknown sites or tiers.
    """
    by_prefix = {item.prefix: item for item in items}
    sites = {site: retention.Site(tier) for site, tier in site_tiers.items()}
    plan = retention.plan([retention_item(item, retention.VALID) for item in items], sites, now, offsite=True)
    delete, keep = [], []
    for planned, action, reason in plan.decisions():
        (delete if action == "delete" else keep).append((by_prefix[planned.ref], reason))
    return delete, keep


def list_offsite_items(offsite, settings: CopySettings, bucket: str, sites=None):
    base = f"{settings.offsite_prefix}{bucket}/"
    prefixes = [f"{base}{site}/" for site in sites] if sites is not None else [base]
    objects = [obj for prefix in prefixes for obj in list_objects(offsite, settings.offsite_bucket, prefix)]
    return group_items(bucket, objects, key_offset=len(base))


def delete_item(offsite, settings: CopySettings, item) -> int:
    keys = [obj["key"] for obj in item.objects]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start:start + 1000]]
        answer = offsite.delete_objects(Bucket=settings.offsite_bucket, Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise OffsiteError(f"deleting {first.get('Key')} offsite failed: {first.get('Message')}")
    return len(keys)
