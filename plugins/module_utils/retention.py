# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Retention planning: which stored items may go, and why. Pure logic, no I/O.

The planner takes the time "now", what the control plane knows of each site (tier, deletion
time) and the items found in storage, and decides keep or delete for every item, with a reason.
All times are whole seconds since the Unix epoch in UTC, so neither the host's time zone nor a
daylight-saving change can move a boundary.

Rules, per tier (starter / pro / enterprise):

==============  ==========================================================================
kind            kept
==============  ==========================================================================
full            7 / 30 / 90 days
incremental     24 hours / 7 days / 30 days
db              3 / 7 / 30 days
offsite         30 / 90 / 365 days: full, incremental and db items planned with
                ``offsite=True`` (the daily copy in archive-class storage)
config          30 days, every tier
logs            30 / 60 / 90 days (the 30-90 day range of archived logs, widening with the tier
                the way the backup windows do)
dr              the newest 1 / 2 / 3 good snapshots
artifact        until deployed; a deployed artifact goes once its ``deployed`` marker is
                ``artifact_grace`` old (default 7 days), so a deployment can still be rolled back
media           until the site is deleted; then once the deletion is ``deleted_site_grace``
                old (default 7 days), so an undone deletion finds its media
==============  ==========================================================================

An item is expired when it is at least as old as its window. On top of the windows:

* Each (site, kind) is its own series. The newest *good* item of a series is always kept, even
  when expired. Good means: for ``db`` a ``valid`` marker (a dump without one is not yet
  validated, and a dump marked ``invalid`` never counts); for every other kind no ``invalid``
  marker. With ``require_valid=True`` (file-tier snapshots) only ``valid`` counts for every kind.
* Incrementals (object store) depend on the previous item of their chain, back to the last full
  before them. An item a kept item depends on is kept, so a chain whose base full is older than
  the full window keeps its base as long as one of its incrementals is kept.
* Items of a site the control plane does not know, or with a tier outside the table, are kept.
* Once a site has been deleted for ``deleted_site_grace``, its newest good items lose their
  protection; the windows still apply, so its backups age out like any other. Its media, DR
  snapshots and artifacts go then.
* An item with the ``EMPTY`` flag (markers left without data, e.g. by an interrupted deletion)
  is deleted and never counts as good.
* An item stamped more than ``FUTURE_SKEW`` (1 hour) after "now" was written by a host whose clock
  was wrong. It is kept and reported as "stamped in the future", but never counts as the newest
  good item, so the real backups keep their own newest good one. Like any kept incremental it
  keeps what it depends on. Media carry no stamp (their time is the engine's) and are exempt.
* A full or incremental backup younger than ``SETTLE`` (6 hours) may still be uploading: it is
  many objects written over a while, and nothing marks its upload complete. It does not count as
  the newest good of its kind yet, so the newest older good one stays protected meanwhile. A young
  item is within every window, so it is kept either way. Items counted good only with a ``valid``
  marker (database dumps, ``require_valid`` snapshots) need no settle time: the marker is written
  once the item is whole.

Emergency mode (disk full) frees ``bytes_to_free``: the expired items go first as usual; if that
is not enough, more items go oldest first, within the same rules. Never deleted in an emergency:
the newest good item of a series, anything a kept item depends on (an incremental chain is
deleted whole or not at all; the chain holding a newest good full or incremental stays), media
of a live site, undeployed artifacts, items of unknown sites or tiers, and file-tier snapshots
that are not complete yet. The DR count and the artifact grace may be cut short.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from operator import itemgetter
from typing import NamedTuple

DAY = 86400
TIERS = ("starter", "pro", "enterprise")
CHAIN_KINDS = ("full", "incremental")
OFFSITE_KINDS = ("full", "incremental", "db")

WINDOWS = {
    "starter": dict(full=7 * DAY, incremental=1 * DAY, db=3 * DAY, offsite=30 * DAY, config=30 * DAY,
                    logs=30 * DAY),
    "pro": dict(full=30 * DAY, incremental=7 * DAY, db=7 * DAY, offsite=90 * DAY, config=30 * DAY,
                logs=60 * DAY),
    "enterprise": dict(full=90 * DAY, incremental=30 * DAY, db=30 * DAY, offsite=365 * DAY, config=30 * DAY,
                       logs=90 * DAY),
}
DR_KEEP = dict(starter=1, pro=2, enterprise=3)
ARTIFACT_GRACE = 7 * DAY
DELETED_SITE_GRACE = 7 * DAY
FUTURE_SKEW = 3600  # clock skew allowed between the host stamping an item and the one planning
SETTLE = 6 * 3600  # a full or incremental this young may still be uploading

# Item flags (bits).
VALID = 1
INVALID = 2
DEPLOYED = 4
EMPTY = 8

KEEP = 0
DELETE = 1
ACTIONS = ("keep", "delete")

# Reason codes; REASONS[code] is the text shown to operators.
R_WINDOW = 0
R_NEWEST_GOOD = 1
R_DEPENDENCY = 2
R_DR_NEWEST = 3
R_DR_NEWER = 4
R_NOT_DEPLOYED = 5
R_DEPLOY_GRACE = 6
R_LIVE_MEDIA = 7
R_DELETED_GRACE = 8
R_UNKNOWN_SITE = 9
R_UNKNOWN_TIER = 10
R_INCOMPLETE = 11
R_EXPIRED = 12
R_DR_OLDER = 13
R_DEPLOYED = 14
R_SITE_DELETED = 15
R_EMPTY = 16
R_EMERGENCY = 17
R_UNKNOWN_KIND = 18
R_FUTURE = 19
REASONS = (
    "within its retention window",
    "newest good item of its site and kind",
    "a kept item depends on it",
    "one of the newest good DR snapshots",
    "DR snapshot newer than the newest good ones",
    "artifact not deployed yet",
    "deployed artifact within its grace",
    "media of a live site",
    "site deleted, within its grace",
    "site unknown to the control plane",
    "tier unknown",
    "not complete, within the full window",
    "older than its retention window",
    "older than the newest good DR snapshots",
    "deployed artifact past its grace",
    "site deleted",
    "markers left without data",
    "emergency: oldest first to free space",
    "kind unknown",
    "stamped in the future",
)
# Keep reasons an emergency may override (dependencies are handled chain by chain).
EMERGENCY_OVERRIDABLE = frozenset((R_WINDOW, R_DR_NEWEST, R_DEPLOY_GRACE))


class Item(NamedTuple):
    """One stored item. ``created`` and ``marked`` are UTC epoch seconds.

    ``ref`` identifies the item to the caller (object key prefix, directory); ``marked`` is when
    its ``deployed`` marker was written (0 when unknown).
    """

    site: str
    kind: str
    created: int
    size: int
    ref: str
    flags: int = 0
    marked: int = 0


class Site(NamedTuple):
    """What the control plane says of a site: its tier and when it was deleted (epoch s or None)."""

    tier: str
    deleted_at: int | None = None


def epoch(when: datetime) -> int:
    """Whole UTC epoch seconds of an aware datetime; a naive one is refused rather than guessed."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("times must be timezone-aware; naive datetimes are refused")
    return calendar.timegm(when.utctimetuple())


def stamp_epoch(text: str) -> int:
    """Epoch seconds of a ``YYYYMMDDTHHMMSSZ`` stamp (already checked by the naming scheme)."""
    return calendar.timegm((int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]),
                            int(text[13:15]), 0, 0, 0))


class Plan:
    """Keep or delete for every item, with the reason; ``items`` are sorted by site and time."""

    __slots__ = ("items", "actions", "reasons", "now", "bytes_to_free", "bytes_freed")

    def __init__(self, items, actions, reasons, now, bytes_to_free):
        self.items = items
        self.actions = actions
        self.reasons = reasons
        self.now = now
        self.bytes_to_free = bytes_to_free
        self.bytes_freed = sum(item[3] for item, action in zip(items, actions, strict=True) if action == DELETE)

    def __len__(self):
        return len(self.items)

    def decisions(self):
        """(item, "keep"|"delete", reason text) for every item, in plan order."""
        for item, action, reason in zip(self.items, self.actions, self.reasons, strict=True):
            yield item, ACTIONS[action], REASONS[reason]

    def deleted(self) -> list[tuple[Item, str]]:
        """(item, reason) of every item to delete."""
        return [(item, REASONS[reason]) for item, action, reason in zip(self.items, self.actions, self.reasons,
                                                                         strict=True) if action == DELETE]

    def future(self) -> list[Item]:
        """Items stamped in the future (kept, and worth an operator's look at the clock that wrote them)."""
        return [item for item, reason in zip(self.items, self.reasons, strict=True) if reason == R_FUTURE]

    def totals(self) -> dict:
        """Counts and bytes per kind and action, plus what an emergency asked for and got."""
        counts: dict[tuple[str, int], list[int]] = {}
        for item, action in zip(self.items, self.actions, strict=True):
            entry = counts.get((item[1], action))
            if entry is None:
                entry = counts[(item[1], action)] = [0, 0]
            entry[0] += 1
            entry[1] += item[3]
        by_kind = {}
        for (kind, action), (count, size) in sorted(counts.items()):
            by_kind.setdefault(kind, {})[ACTIONS[action]] = dict(items=count, bytes=size)
        deleted = sum(count for (_, action), (count, _) in counts.items() if action == DELETE)
        future = sum(1 for reason in self.reasons if reason == R_FUTURE)
        return dict(items=len(self.items), items_deleted=deleted, items_kept=len(self.items) - deleted,
                    items_future=future, bytes_deleted=self.bytes_freed, bytes_to_free=self.bytes_to_free,
                    bytes_short=max(0, self.bytes_to_free - self.bytes_freed), by_kind=by_kind)


def check_inputs(now: int, bytes_to_free: int, artifact_grace: int, deleted_site_grace: int) -> None:
    if not isinstance(now, int) or now < 0:
        raise ValueError("now must be whole epoch seconds (use epoch() on an aware datetime)")
    if bytes_to_free < 0:
        raise ValueError("bytes_to_free must not be negative")
    if artifact_grace < 0 or deleted_site_grace < 0:
        raise ValueError("grace periods must not be negative")


def plan(items, sites, now, *, emergency=False, bytes_to_free=0, offsite=False, chains=True,
         require_valid=False, artifact_grace=ARTIFACT_GRACE, deleted_site_grace=DELETED_SITE_GRACE) -> Plan:
    """Plan retention for ``items`` (iterable of :class:`Item` or plain tuples in its field order).

    ``sites`` maps site ID to :class:`Site` (or a ``(tier, deleted_at)`` tuple). ``now`` is an aware
    datetime or epoch seconds. ``offsite`` plans full, incremental and db items with the offsite
    window. ``chains=False`` drops the dependency of incrementals (hard-linked snapshots).
    ``require_valid=True`` counts only items marked valid as good, and keeps other items until
    they are older than the full window (file-tier snapshots without a complete sidecar).
    With ``emergency``, more items go oldest first until ``bytes_to_free`` bytes are freed.
    """
    if isinstance(now, datetime):
        now = epoch(now)
    check_inputs(now, bytes_to_free, artifact_grace, deleted_site_grace)
    # By site, then time (kind and ref only break ties): one sort, linear passes after.
    ordered = sorted(items, key=itemgetter(0, 2, 1, 4))
    count = len(ordered)
    actions = bytearray(count)
    reasons = bytearray(count)
    units = [] if emergency else None
    start = 0
    while start < count:
        site = ordered[start][0]
        end = start + 1
        while end < count and ordered[end][0] == site:
            end += 1
        _plan_site(ordered, start, end, sites.get(site), now, actions, reasons, units, offsite, chains,
                   require_valid, artifact_grace, deleted_site_grace)
        start = end
    result = Plan(ordered, actions, reasons, now, bytes_to_free)
    if emergency and result.bytes_freed < bytes_to_free:
        _free(result, units, bytes_to_free)
    return result


def _free(result: Plan, units, bytes_to_free: int) -> None:
    """Delete whole emergency units, oldest first, until enough bytes are freed."""
    units.sort(key=itemgetter(0, 1))
    items, actions, reasons = result.items, result.actions, result.reasons
    freed = result.bytes_freed
    for _created, _first, positions in units:
        if freed >= bytes_to_free:
            break
        for position in positions:
            if actions[position] == KEEP:
                actions[position] = DELETE
                reasons[position] = R_EMERGENCY
                freed += items[position][3]
    result.bytes_freed = freed


def _plan_site(ordered, start, end, site_info, now, actions, reasons, units, offsite, chains, require_valid,
               artifact_grace, deleted_site_grace) -> None:
    # Items are in time order: those stamped in the future are the last ones. They are kept and
    # left out of the planning, except that a chain keeps what they depend on (media carry no
    # stamp, only the engine's time, and are planned as usual).
    cut = end
    while cut > start and ordered[cut - 1][2] > now + FUTURE_SKEW:
        cut -= 1
    planned = list(range(start, cut))
    future_links = []
    for position in range(cut, end):
        kind = ordered[position][1]
        if kind == "media":
            planned.append(position)
        else:
            reasons[position] = R_FUTURE
            if chains and kind in CHAIN_KINDS:
                future_links.append(position)
    tier = None if site_info is None else site_info[0]
    windows = WINDOWS.get(tier)
    if windows is None:
        unknown = R_UNKNOWN_SITE if site_info is None else R_UNKNOWN_TIER
        for position in planned:
            reasons[position] = unknown
        return
    deleted_at = site_info[1]
    deleted_long_ago = deleted_at is not None and now - deleted_at >= deleted_site_grace
    series: dict[str, list[int]] = {}
    for position in planned + future_links:
        kind = ordered[position][1]
        group = "chain" if chains and kind in CHAIN_KINDS else kind
        members = series.get(group)
        if members is None:
            series[group] = [position]
        else:
            members.append(position)
    for group, positions in series.items():
        if group == "chain":
            _plan_chains(ordered, positions, windows, now, actions, reasons, units, offsite, require_valid,
                         deleted_long_ago)
        elif group == "media":
            _plan_media(positions, deleted_at, deleted_long_ago, actions, reasons, units)
        elif group == "dr":
            _plan_dr(ordered, positions, DR_KEEP[tier], now, actions, reasons, units, require_valid,
                     deleted_long_ago, windows["full"])
        elif group == "artifact":
            _plan_artifacts(ordered, positions, now, actions, reasons, units, require_valid, deleted_long_ago,
                            artifact_grace)
        else:
            kind_window = _window(windows, group, offsite)
            if kind_window is None:
                for position in positions:
                    reasons[position] = R_UNKNOWN_KIND
                continue
            _plan_windowed(ordered, positions, kind_window, now, actions, reasons, units, require_valid,
                           deleted_long_ago, windows["full"], group == "db")


def _window(windows, kind, offsite):
    if offsite and kind in OFFSITE_KINDS:
        return windows["offsite"]
    return windows.get(kind)


def _is_good(flags, strict):
    if flags & (INVALID | EMPTY):
        return False
    return bool(flags & VALID) if strict else True


def _newest_good(ordered, positions, strict, deleted_long_ago, settled_before=None):
    """The newest good item; with ``settled_before``, only one created at or before that time."""
    if deleted_long_ago:
        return None
    for position in reversed(positions):
        item = ordered[position]
        if _is_good(item[5], strict) and (settled_before is None or item[2] <= settled_before):
            return position
    return None


def _expire(ordered, position, window, now, require_valid, full_window, strict):
    """Keep/delete reason of one windowed item, before the newest-good and dependency rules."""
    item = ordered[position]
    flags = item[5]
    if flags & EMPTY:
        return DELETE, R_EMPTY
    age = now - item[2]
    if require_valid and not _is_good(flags, True):
        return (DELETE, R_EXPIRED) if age >= max(window, full_window) else (KEEP, R_INCOMPLETE)
    return (DELETE, R_EXPIRED) if age >= window else (KEEP, R_WINDOW)


def _plan_windowed(ordered, positions, window, now, actions, reasons, units, require_valid, deleted_long_ago,
                   full_window, is_db):
    strict = is_db or require_valid
    newest = _newest_good(ordered, positions, strict, deleted_long_ago)
    for position in positions:
        if position == newest:
            actions[position], reasons[position] = KEEP, R_NEWEST_GOOD
            continue
        action, reason = _expire(ordered, position, window, now, require_valid, full_window, strict)
        actions[position], reasons[position] = action, reason
        if units is not None and action == KEEP and reason in EMERGENCY_OVERRIDABLE:
            units.append((ordered[position][2], position, (position,)))


def _plan_chains(ordered, positions, windows, now, actions, reasons, units, offsite, require_valid,
                 deleted_long_ago):
    """Full and incremental items of one site, in time order: windows, newest good, dependencies."""
    full_window = windows["full"]
    window_of = {kind: _window(windows, kind, offsite) for kind in CHAIN_KINDS}
    fulls = [p for p in positions if ordered[p][1] == "full"]
    incrementals = [p for p in positions if ordered[p][1] == "incremental"]
    settled_before = now + FUTURE_SKEW if require_valid else now - SETTLE
    protected = {p for p in (_newest_good(ordered, fulls, require_valid, deleted_long_ago, settled_before),
                             _newest_good(ordered, incrementals, require_valid, deleted_long_ago, settled_before))
                 if p is not None}
    # Split into chains: each full starts one; incrementals before any full form a chain without a base.
    chains: list[list[int]] = []
    for position in positions:
        if ordered[position][1] == "full" or not chains:
            chains.append([position])
        else:
            chains[-1].append(position)
    for chain in chains:
        kept_later = False
        for position in reversed(chain):
            if ordered[position][2] > now + FUTURE_SKEW:
                action, reason = KEEP, R_FUTURE
            elif position in protected:
                action, reason = KEEP, R_NEWEST_GOOD
            else:
                kind = ordered[position][1]
                action, reason = _expire(ordered, position, window_of[kind], now, require_valid, full_window,
                                         require_valid)
                if kept_later and action == DELETE and reason != R_EMPTY:
                    action, reason = KEEP, R_DEPENDENCY
            actions[position], reasons[position] = action, reason
            kept_later = kept_later or action == KEEP
        if units is not None:
            kept = [p for p in chain if actions[p] == KEEP]
            if kept and all(reasons[p] in (R_WINDOW, R_DEPENDENCY) for p in kept):
                units.append((ordered[chain[0]][2], chain[0], tuple(kept)))


def _plan_media(positions, deleted_at, deleted_long_ago, actions, reasons, units):
    if deleted_at is None:
        action, reason = KEEP, R_LIVE_MEDIA
    elif deleted_long_ago:
        action, reason = DELETE, R_SITE_DELETED
    else:
        action, reason = KEEP, R_DELETED_GRACE
    for position in positions:
        actions[position], reasons[position] = action, reason


def _plan_dr(ordered, positions, keep_count, now, actions, reasons, units, require_valid, deleted_long_ago,
             full_window):
    """Keep the newest ``keep_count`` good snapshots; older ones go, newer not-good ones stay."""
    good_seen = 0
    for position in reversed(positions):
        flags = ordered[position][5]
        if flags & EMPTY:
            action, reason = DELETE, R_EMPTY
        elif _is_good(flags, require_valid) and not deleted_long_ago:
            good_seen += 1
            if good_seen == 1:
                action, reason = KEEP, R_NEWEST_GOOD
            elif good_seen <= keep_count:
                action, reason = KEEP, R_DR_NEWEST
            else:
                action, reason = DELETE, R_DR_OLDER
        elif deleted_long_ago:
            action, reason = DELETE, R_SITE_DELETED
        elif good_seen >= keep_count and not (require_valid and now - ordered[position][2] < full_window):
            action, reason = DELETE, R_DR_OLDER
        else:
            action, reason = KEEP, R_DR_NEWER
        actions[position], reasons[position] = action, reason
        if units is not None and action == KEEP and reason == R_DR_NEWEST:
            units.append((ordered[position][2], position, (position,)))


def _plan_artifacts(ordered, positions, now, actions, reasons, units, require_valid, deleted_long_ago, grace):
    newest = _newest_good(ordered, positions, require_valid, deleted_long_ago)
    for position in positions:
        item = ordered[position]
        flags = item[5]
        if flags & EMPTY:
            action, reason = DELETE, R_EMPTY
        elif position == newest:
            action, reason = KEEP, R_NEWEST_GOOD
        elif deleted_long_ago:
            action, reason = DELETE, R_SITE_DELETED
        elif not flags & DEPLOYED:
            action, reason = KEEP, R_NOT_DEPLOYED
        elif now - (item[6] or item[2]) >= grace:
            action, reason = DELETE, R_DEPLOYED
        else:
            action, reason = KEEP, R_DEPLOY_GRACE
        actions[position], reasons[position] = action, reason
        if units is not None and action == KEEP and reason == R_DEPLOY_GRACE:
            units.append((item[2], position, (position,)))
