# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Naming scheme of every item a storage host keeps.

Every stored item belongs to one site (or to the platform, site ``_platform``), has a kind
and a creation time in UTC. The object key carries all three, so a site's data is listable
by the prefix ``<site>/`` and a site's items of one kind by ``<site>/<kind>/``::

    <site>/<kind>/<stamp>/<name>        one item: every object below <site>/<kind>/<stamp>/
    <site>/media/<path>                 media keep the customer's own path; no stamp

``stamp`` is the UTC creation time written ``YYYYMMDDTHHMMSSZ`` (sorts as text in time order;
no time zone or daylight-saving rule can change it). Kinds, their bucket and what they hold:

==============  ==============  ==============================================================
kind            bucket          what
==============  ==============  ==============================================================
full            chom-backups    full backup of the site's files and database
incremental     chom-backups    incremental backup; depends on the previous item of its chain
db              chom-backups    database dump (``dump.sql.gz``)
config          chom-backups    configuration backup: nginx configs, TLS certificates, env files
dr              chom-archives   disaster-recovery snapshot of the whole VPS
logs            chom-archives   archived application logs
artifact        chom-archives   deployment artifact: site template, staging copy
media           chom-media      customer uploads
==============  ==============  ==============================================================

File-tier snapshots use the same site and stamp on the volume:
``<volume>/snapshots/<site>/<stamp>/``.

Site IDs are 1-64 characters of ``a-z 0-9 - _ .``, starting with a letter or digit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

KINDS = ("full", "incremental", "db", "config", "dr", "logs", "artifact", "media")
KIND_BUCKETS = {
    "full": "chom-backups",
    "incremental": "chom-backups",
    "db": "chom-backups",
    "config": "chom-backups",
    "dr": "chom-archives",
    "logs": "chom-archives",
    "artifact": "chom-archives",
    "media": "chom-media",
}
PLATFORM_SITE = "_platform"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
SITE_RE = re.compile(r"^(?:[a-z0-9][a-z0-9._-]{0,63}|_platform)$")
STAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")


class NamingError(ValueError):
    """A site, kind, time or key that does not follow the naming scheme."""


def check_site(site: str) -> str:
    if not isinstance(site, str) or not SITE_RE.match(site) or ".." in site:
        raise NamingError(f"site ID {site!r} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit")
    return site


def site_prefix(site: str) -> str:
    """Prefix under which every object of ``site`` lives, in every bucket."""
    return check_site(site) + "/"


def stamp(when: datetime) -> str:
    """UTC stamp of an aware datetime; a naive one is refused rather than guessed."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise NamingError("times must be timezone-aware; naive datetimes are refused")
    return when.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime:
    if not STAMP_RE.match(text):
        raise NamingError(f"{text!r} is not a UTC stamp YYYYMMDDTHHMMSSZ")
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)


def item_prefix(site: str, kind: str, when: datetime) -> str:
    """Prefix of one item; its objects are ``<prefix><name>``."""
    if kind not in KINDS or kind == "media":
        raise NamingError(f"kind must be one of {', '.join(k for k in KINDS if k != 'media')}, got {kind!r}")
    return f"{site_prefix(site)}{kind}/{stamp(when)}/"


def item_key(site: str, kind: str, when: datetime, name: str) -> str:
    if not name or name.startswith("/"):
        raise NamingError(f"object name {name!r} must be a non-empty relative name")
    return item_prefix(site, kind, when) + name


@dataclass(frozen=True)
class ParsedKey:
    site: str
    kind: str
    created: datetime | None  # None for media
    item: str  # the item's prefix (media: the key itself)
    name: str


def parse_key(key: str) -> ParsedKey | None:
    """The site, kind and time a key names, or None for a key outside the scheme."""
    parts = key.split("/", 3)
    if len(parts) < 3 or not SITE_RE.match(parts[0]) or parts[1] not in KINDS:
        return None
    site, kind = parts[0], parts[1]
    if kind == "media":
        return ParsedKey(site, kind, None, key, key[len(site) + len("/media/"):])
    if len(parts) < 4 or not parts[3]:
        return None
    try:
        created = parse_stamp(parts[2])
    except ValueError:  # not a stamp, or not a real date (20260231T...)
        return None
    return ParsedKey(site, kind, created, f"{site}/{kind}/{parts[2]}/", parts[3])


# Markers: small objects inside an item, written by the collection, found by listing alone.
#   <item prefix>.chom/valid      the item passed validation (db dumps: size floor and structure)
#   <item prefix>.chom/invalid    the item failed validation; body: the reason
#   <item prefix>.chom/deployed   an artifact that has been deployed
MARKER_DIR = ".chom/"
MARKERS = ("valid", "invalid", "deployed")


def marker_key(item: str, marker: str) -> str:
    if marker not in MARKERS:
        raise NamingError(f"marker must be one of {', '.join(MARKERS)}, got {marker!r}")
    return f"{item}{MARKER_DIR}{marker}"
