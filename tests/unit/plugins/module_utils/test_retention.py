from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ansible_collections.chom.storage.plugins.module_utils.retention import (
    DAY,
    DEPLOYED,
    EMPTY,
    FUTURE_SKEW,
    INVALID,
    SETTLE,
    VALID,
    WINDOWS,
    Item,
    Site,
    epoch,
    plan,
    stamp_epoch,
)

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
NOW_S = epoch(NOW)
HOUR = 3600
SITES = {"alpha": Site("starter"), "beta": Site("pro"), "gamma": Site("enterprise")}


def item(site, kind, age_s, flags=0, size=100, ref=None, marked=0):
    created = NOW_S - age_s
    return Item(site, kind, created, size, ref or f"{site}/{kind}/{created}/", flags, marked)


def actions(result) -> dict[str, tuple[str, str]]:
    return {it.ref: (action, reason) for it, action, reason in result.decisions()}


def deleted_refs(result) -> set[str]:
    return {it.ref for it, _ in result.deleted()}


# ------------------------------------------------------------------------------------ windows


@pytest.mark.parametrize("tier", ["starter", "pro", "enterprise"])
@pytest.mark.parametrize("kind", ["db", "config", "logs"])
def test_each_windowed_kind_expires_exactly_at_its_window(tier, kind):
    window = WINDOWS[tier][kind]
    newest = item("s1", kind, 0, VALID, ref="newest")
    inside = item("s1", kind, window - 1, VALID, ref="inside")
    boundary = item("s1", kind, window, VALID, ref="boundary")
    old = item("s1", kind, window + DAY, VALID, ref="old")
    result = actions(plan([old, boundary, inside, newest], {"s1": Site(tier)}, NOW))
    assert result["newest"] == ("keep", "newest good item of its site and kind")
    assert result["inside"] == ("keep", "within its retention window")
    assert result["boundary"] == ("delete", "older than its retention window")
    assert result["old"][0] == "delete"


def test_the_table_of_windows_is_the_spec():
    days = {tier: {kind: WINDOWS[tier][kind] / DAY for kind in ("full", "incremental", "db", "offsite")}
            for tier in WINDOWS}
    assert days == {
        "starter": dict(full=7, incremental=1, db=3, offsite=30),
        "pro": dict(full=30, incremental=7, db=7, offsite=90),
        "enterprise": dict(full=90, incremental=30, db=30, offsite=365),
    }
    assert {tier: WINDOWS[tier]["config"] / DAY for tier in WINDOWS} == dict(starter=30, pro=30, enterprise=30)
    assert {tier: WINDOWS[tier]["logs"] / DAY for tier in WINDOWS} == dict(starter=30, pro=60, enterprise=90)


@pytest.mark.parametrize("tier,full_days,incremental_days", [("starter", 7, 1), ("pro", 30, 7),
                                                             ("enterprise", 90, 30)])
def test_full_and_incremental_windows_by_tier(tier, full_days, incremental_days):
    # One chain per day: a full each day, so no incremental depends on an older one. All are
    # past the settle time, so the youngest of each kind is the newest good one.
    items = [item("s1", "full", d * DAY + SETTLE + HOUR, ref=f"full-{d}") for d in range(0, 100)]
    items += [item("s1", "incremental", d * DAY + SETTLE, ref=f"inc-{d}") for d in range(0, 100)]
    result = actions(plan(items, {"s1": Site(tier)}, NOW))
    kept_fulls = {ref for ref, (action, _) in result.items() if ref.startswith("full-") and action == "keep"}
    kept_incs = {ref for ref, (action, _) in result.items() if ref.startswith("inc-") and action == "keep"}
    assert kept_fulls == {f"full-{d}" for d in range(full_days)}
    assert kept_incs == {f"inc-{d}" for d in range(incremental_days)}


def test_offsite_uses_the_offsite_window():
    items = [item("s1", "db", d * DAY, VALID, ref=f"db-{d}") for d in range(0, 40)]
    result = actions(plan(items, {"s1": Site("starter")}, NOW, offsite=True))
    assert {ref for ref, (action, _) in result.items() if action == "keep"} == {f"db-{d}" for d in range(30)}


def test_now_is_injectable_as_epoch_or_aware_datetime_and_naive_is_refused():
    items = [item("s1", "config", 40 * DAY), item("s1", "config", 10 * DAY)]
    assert actions(plan(items, SITES | {"s1": Site("pro")}, NOW)) == \
        actions(plan(items, {"s1": Site("pro")}, NOW_S))
    later = actions(plan(items, {"s1": Site("pro")}, NOW + timedelta(days=25)))
    assert sorted(a for a, _ in later.values()) == ["delete", "keep"]
    with pytest.raises(ValueError, match="naive"):
        plan(items, {"s1": Site("pro")}, datetime(2026, 6, 15, 12))


def test_stamps_convert_to_utc_epoch():
    assert stamp_epoch("20260615T120000Z") == NOW_S
    assert stamp_epoch("19700101T000001Z") == 1


# ------------------------------------------------------------------------------------ newest good


def test_newest_good_is_kept_even_when_expired():
    result = actions(plan([item("s1", "config", 400 * DAY, ref="a"), item("s1", "config", 300 * DAY, ref="b")],
                          {"s1": Site("starter")}, NOW))
    assert result == {"a": ("delete", "older than its retention window"),
                      "b": ("keep", "newest good item of its site and kind")}


def test_an_item_stamped_in_the_future_is_kept_reported_and_never_the_newest_good():
    # A host whose clock ran decades ahead wrote one dump; the real ones keep their newest good.
    items = [item("s1", "db", 10 * DAY, VALID, ref="db-old"), item("s1", "db", 4 * DAY, VALID, ref="db-real"),
             item("s1", "db", -3650 * DAY, VALID, ref="db-2036")]
    result = plan(items, {"s1": Site("starter")}, NOW)
    got = actions(result)
    assert got["db-real"] == ("keep", "newest good item of its site and kind")
    assert got["db-old"] == ("delete", "older than its retention window")
    assert got["db-2036"] == ("keep", "stamped in the future")
    assert [i.ref for i in result.future()] == ["db-2036"]
    assert result.totals()["items_future"] == 1


def test_future_items_are_never_deleted_and_keep_what_they_depend_on():
    items = [item("s1", "full", 20 * DAY, ref="f-real"), item("s1", "incremental", 10 * DAY, ref="i-real"),
             item("s1", "full", -400 * DAY, EMPTY, ref="f-future"),
             item("s1", "incremental", -401 * DAY, ref="i-future"),
             item("s1", "media", -DAY, ref="m-future")]
    result = plan(items, {"s1": Site("starter", NOW_S - 30 * DAY)}, NOW, emergency=True, bytes_to_free=10**9)
    got = actions(result)
    assert {ref for ref, (action, why) in got.items() if why == "stamped in the future" and action == "keep"} == \
        {"f-future", "i-future"}
    # The site was deleted long ago: the real items age out as if the future ones were not there.
    assert got["f-real"][0] == got["i-real"][0] == "delete"
    # Media carry the engine's time, not a stamp: they follow the site's deletion as always.
    assert got["m-future"] == ("delete", "site deleted")
    # A future incremental on a real chain keeps that chain, even once nothing else protects it.
    chain = [item("s1", "full", 20 * DAY, ref="f"), item("s1", "incremental", 10 * DAY, ref="i"),
             item("s1", "incremental", -DAY, ref="i-future")]
    got = actions(plan(chain, {"s1": Site("starter", NOW_S - 30 * DAY)}, NOW, emergency=True, bytes_to_free=10**9))
    assert got == {"f": ("keep", "a kept item depends on it"), "i": ("keep", "a kept item depends on it"),
                   "i-future": ("keep", "stamped in the future")}


def test_the_allowed_clock_skew_is_one_hour():
    items = [item("s1", "config", 40 * DAY, ref="old"), item("s1", "config", -FUTURE_SKEW, ref="skewed"),
             item("s1", "config", -FUTURE_SKEW - 1, ref="future")]
    got = actions(plan(items, {"s1": Site("pro")}, NOW))
    assert got["skewed"] == ("keep", "newest good item of its site and kind")
    assert got["future"] == ("keep", "stamped in the future")
    assert got["old"][0] == "delete"
    assert got == actions(plan(items, {"s1": Site("pro")}, NOW_S))


def test_a_full_still_uploading_does_not_count_as_the_newest_good():
    # A full written a minute ago may still be uploading; the complete one stays protected.
    items = [item("s1", "full", 7 * DAY, ref="full-complete"), item("s1", "full", 60, ref="full-uploading")]
    got = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert got == {"full-complete": ("keep", "newest good item of its site and kind"),
                   "full-uploading": ("keep", "within its retention window")}
    settled = [item("s1", "full", 7 * DAY, ref="full-complete"), item("s1", "full", SETTLE, ref="full-new")]
    assert actions(plan(settled, {"s1": Site("starter")}, NOW))["full-complete"][0] == "delete"
    # A database dump counts once it carries its valid marker, however young.
    dumps = [item("s1", "db", 3 * DAY, VALID, ref="db-old"), item("s1", "db", 60, VALID, ref="db-new")]
    assert actions(plan(dumps, {"s1": Site("starter")}, NOW))["db-old"][0] == "delete"


def test_invalid_db_dump_is_never_the_newest_good():
    items = [item("s1", "db", 10 * DAY, VALID, ref="valid-old"), item("s1", "db", 5 * DAY, INVALID, ref="bad"),
             item("s1", "db", 4 * DAY, VALID | INVALID, ref="both")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert result["valid-old"] == ("keep", "newest good item of its site and kind")
    assert result["bad"][0] == "delete" and result["both"][0] == "delete"


def test_unvalidated_db_dump_does_not_count_as_good_but_stays_in_its_window():
    items = [item("s1", "db", 10 * DAY, VALID, ref="valid"), item("s1", "db", 1 * DAY, ref="pending"),
             item("s1", "db", 5 * DAY, ref="stale")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert result == {"valid": ("keep", "newest good item of its site and kind"),
                      "pending": ("keep", "within its retention window"),
                      "stale": ("delete", "older than its retention window")}


def test_other_kinds_are_good_unless_marked_invalid():
    items = [item("s1", "logs", 100 * DAY, ref="plain"), item("s1", "logs", 90 * DAY, INVALID, ref="bad")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert result["plain"] == ("keep", "newest good item of its site and kind")
    assert result["bad"][0] == "delete"


def test_each_site_and_kind_is_its_own_series_on_the_same_day():
    items = []
    for site in ("alpha", "beta", "gamma"):
        for kind in ("db", "config", "logs", "full"):
            items.append(item(site, kind, 500 * DAY, VALID, ref=f"{site}-{kind}"))
    result = actions(plan(items, SITES, NOW))
    assert all(value == ("keep", "newest good item of its site and kind") for value in result.values())


# ------------------------------------------------------------------------------------ chains


def test_a_chain_whose_base_is_older_than_the_window_keeps_its_base():
    # pro: full 30 days, incremental 7 days. The base full is 35 days old, incrementals daily after it,
    # and a newer chain has begun since.
    items = [item("s1", "full", 50 * DAY, ref="full-old"), item("s1", "incremental", 49 * DAY, ref="inc-old")]
    items += [item("s1", "full", 35 * DAY, ref="base")]
    items += [item("s1", "incremental", d * DAY, ref=f"inc-{d}") for d in range(34, 1, -1)]
    items += [item("s1", "full", DAY, ref="full-new")]
    result = actions(plan(items, {"s1": Site("pro")}, NOW))
    assert result["full-new"] == ("keep", "newest good item of its site and kind")
    assert result["base"] == ("keep", "a kept item depends on it")
    assert result["inc-2"] == ("keep", "newest good item of its site and kind")
    for d in range(3, 7):
        assert result[f"inc-{d}"] == ("keep", "within its retention window"), d
    for d in range(7, 35):  # expired, but each is needed by the newer kept ones
        assert result[f"inc-{d}"] == ("keep", "a kept item depends on it"), d
    assert result["full-old"][0] == "delete" and result["inc-old"][0] == "delete"


def test_newest_good_incremental_keeps_its_chain_even_when_all_expired():
    items = [item("s1", "full", 50 * DAY, ref="base"), item("s1", "incremental", 49 * DAY, ref="i1"),
             item("s1", "incremental", 48 * DAY, ref="i2"), item("s1", "incremental", 47 * DAY, INVALID, ref="i3")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert result["i2"] == ("keep", "newest good item of its site and kind")
    assert result["i1"] == ("keep", "a kept item depends on it")
    assert result["base"] == ("keep", "newest good item of its site and kind")
    assert result["i3"] == ("delete", "older than its retention window")


def test_incrementals_before_any_full_form_a_chain_without_base():
    items = [item("s1", "incremental", 5 * DAY, ref="o1"), item("s1", "incremental", 7 * HOUR, ref="o2")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert result["o1"] == ("keep", "a kept item depends on it")


def test_hard_linked_snapshots_do_not_depend_on_each_other():
    items = [item("s1", "full", 20 * DAY, VALID, ref="f"), item("s1", "incremental", 10 * DAY, VALID, ref="i1"),
             item("s1", "incremental", 2 * HOUR, VALID, ref="i2")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW, chains=False, require_valid=True))
    assert result["f"] == ("keep", "newest good item of its site and kind")
    assert result["i1"] == ("delete", "older than its retention window")
    assert result["i2"] == ("keep", "newest good item of its site and kind")


def test_incomplete_snapshots_are_not_good_and_wait_for_the_full_window():
    items = [item("s1", "full", 30 * DAY, VALID, ref="complete"), item("s1", "full", 6 * DAY, ref="no-sidecar"),
             item("s1", "full", 5 * DAY, INVALID, ref="failed"), item("s1", "incremental", 3 * DAY, ref="inc-running"),
             item("s1", "full", 8 * DAY, INVALID, ref="failed-old")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW, chains=False, require_valid=True))
    assert result["complete"] == ("keep", "newest good item of its site and kind")
    assert result["no-sidecar"] == ("keep", "not complete, within the full window")
    assert result["failed"] == ("keep", "not complete, within the full window")
    assert result["inc-running"] == ("keep", "not complete, within the full window")
    assert result["failed-old"] == ("delete", "older than its retention window")


# ------------------------------------------------------------------------------------ other kinds


@pytest.mark.parametrize("tier,count", [("starter", 1), ("pro", 2), ("enterprise", 3)])
def test_dr_keeps_the_newest_good_snapshots_by_tier(tier, count):
    items = [item("s1", "dr", d * DAY, ref=f"dr-{d}") for d in range(1, 6)]
    items.append(item("s1", "dr", 0, INVALID, ref="dr-failed-newest"))
    result = actions(plan(items, {"s1": Site(tier)}, NOW))
    assert {ref for ref, (action, _) in result.items() if action == "keep"} == \
        {f"dr-{d}" for d in range(1, count + 1)} | {"dr-failed-newest"}
    assert result["dr-failed-newest"] == ("keep", "DR snapshot newer than the newest good ones")


def test_artifacts_are_kept_until_deployed_then_for_a_grace():
    items = [item("s1", "artifact", 300 * DAY, ref="old-undeployed"),
             item("s1", "artifact", 200 * DAY, DEPLOYED, ref="deployed-long-ago", marked=NOW_S - 100 * DAY),
             item("s1", "artifact", 200 * DAY, DEPLOYED, ref="deployed-yesterday", marked=NOW_S - DAY),
             item("s1", "artifact", 100 * DAY, DEPLOYED, ref="newest", marked=NOW_S - 90 * DAY)]
    result = actions(plan(items, {"s1": Site("pro")}, NOW))
    assert result == {"old-undeployed": ("keep", "artifact not deployed yet"),
                      "deployed-long-ago": ("delete", "deployed artifact past its grace"),
                      "deployed-yesterday": ("keep", "deployed artifact within its grace"),
                      "newest": ("keep", "newest good item of its site and kind")}


def test_media_is_kept_until_the_site_is_deleted_and_its_grace_passed():
    sites = {"live": Site("starter"), "just-gone": Site("starter", NOW_S - DAY),
             "gone": Site("starter", NOW_S - 8 * DAY)}
    items = [item(site, "media", 1000 * DAY, ref=f"{site}/media/a.jpg") for site in sites]
    result = actions(plan(items, sites, NOW))
    assert result == {"live/media/a.jpg": ("keep", "media of a live site"),
                      "just-gone/media/a.jpg": ("keep", "site deleted, within its grace"),
                      "gone/media/a.jpg": ("delete", "site deleted")}


def test_a_deleted_site_loses_newest_good_protection_after_its_grace():
    items = [item("gone", "db", 100 * DAY, VALID, ref="db"), item("gone", "db", 1 * DAY, VALID, ref="db-new"),
             item("gone", "dr", 100 * DAY, ref="dr"), item("gone", "artifact", 5 * DAY, ref="art")]
    result = actions(plan(items, {"gone": Site("pro", NOW_S - 30 * DAY)}, NOW))
    assert result["db"][0] == "delete" and result["dr"][0] == "delete" and result["art"][0] == "delete"
    assert result["db-new"] == ("keep", "within its retention window")


def test_unknown_sites_tiers_and_kinds_are_kept():
    items = [item("nobody", "db", 900 * DAY, ref="a"), item("odd", "db", 900 * DAY, ref="b"),
             item("s1", "holiday-photos", 900 * DAY, ref="c")]
    result = actions(plan(items, {"odd": Site("platinum"), "s1": Site("pro")}, NOW))
    assert result == {"a": ("keep", "site unknown to the control plane"), "b": ("keep", "tier unknown"),
                      "c": ("keep", "kind unknown")}


def test_markers_without_data_are_deleted_and_never_good():
    items = [item("s1", "db", 10 * DAY, VALID, ref="real"), item("s1", "db", 1 * DAY, VALID | EMPTY, ref="empty")]
    result = actions(plan(items, {"s1": Site("starter")}, NOW))
    assert result == {"real": ("keep", "newest good item of its site and kind"),
                      "empty": ("delete", "markers left without data")}


# ------------------------------------------------------------------------------------ emergency


def test_emergency_deletes_expired_first_then_oldest_within_the_rules():
    items = [
        item("s1", "config", 40 * DAY, size=10, ref="expired"),
        item("s1", "config", 20 * DAY, size=10, ref="cfg-20"),
        item("s1", "config", 10 * DAY, size=10, ref="cfg-10"),
        item("s1", "config", 1 * DAY, size=10, ref="cfg-newest"),
        item("s2", "db", 2 * DAY, VALID, size=10, ref="db-2"),
        item("s2", "db", 1 * DAY, VALID, size=10, ref="db-newest"),
        item("s2", "media", 500 * DAY, size=10_000, ref="media"),
        item("s2", "artifact", 500 * DAY, size=10_000, ref="undeployed"),
    ]
    sites = {"s1": Site("starter"), "s2": Site("enterprise")}
    assert deleted_refs(plan(items, sites, NOW)) == {"expired"}
    assert deleted_refs(plan(items, sites, NOW, emergency=True, bytes_to_free=10)) == {"expired"}
    assert deleted_refs(plan(items, sites, NOW, emergency=True, bytes_to_free=20)) == {"expired", "cfg-20"}
    assert deleted_refs(plan(items, sites, NOW, emergency=True, bytes_to_free=30)) == {"expired", "cfg-20",
                                                                                       "cfg-10"}
    everything = plan(items, sites, NOW, emergency=True, bytes_to_free=10**9)
    assert deleted_refs(everything) == {"expired", "cfg-20", "cfg-10", "db-2"}
    totals = everything.totals()
    assert totals["bytes_deleted"] == 40 and totals["bytes_short"] == 10**9 - 40
    reasons = dict((it.ref, reason) for it, reason in everything.deleted())
    assert reasons["cfg-20"] == "emergency: oldest first to free space"


def test_emergency_deletes_chains_whole_and_never_the_newest_good_chain():
    items = [item("s1", "full", 6 * DAY, size=100, ref="f-old"), item("s1", "incremental", 5 * DAY, ref="i-old"),
             item("s1", "full", 2 * DAY, size=100, ref="f-new"), item("s1", "incremental", 7 * HOUR, ref="i-new")]
    result = plan(items, {"s1": Site("pro")}, NOW, emergency=True, bytes_to_free=50)
    assert deleted_refs(result) == {"f-old", "i-old"}
    result = plan(items, {"s1": Site("pro")}, NOW, emergency=True, bytes_to_free=10**6)
    assert deleted_refs(result) == {"f-old", "i-old"}


def test_emergency_can_trim_dr_to_the_newest_good_one():
    items = [item("s1", "dr", d * DAY, size=5, ref=f"dr-{d}") for d in range(1, 4)]
    result = plan(items, {"s1": Site("enterprise")}, NOW, emergency=True, bytes_to_free=100)
    assert deleted_refs(result) == {"dr-2", "dr-3"}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="bytes_to_free"):
        plan([], {}, NOW, emergency=True, bytes_to_free=-1)
    with pytest.raises(ValueError, match="epoch"):
        plan([], {}, 1.5)


# ------------------------------------------------------------------------------------ time zones


def mixed_items(now_s: int) -> list[Item]:
    items = []
    for site_index, site in enumerate(("alpha", "beta", "gamma")):
        for hour in range(0, 24 * 120, 5):
            created = now_s - hour * HOUR - site_index
            kind = ("full", "incremental", "db", "config", "logs", "dr", "artifact")[hour % 7]
            flags = (VALID, 0, INVALID)[hour % 3] | (DEPLOYED if hour % 2 else 0)
            items.append(Item(site, kind, created, hour, f"{site}/{kind}/{created}/", flags, created))
    return items


@pytest.mark.parametrize("now", [
    datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # Europe/Berlin springs forward at 01:00 UTC
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # and falls back at 01:00 UTC
    datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    datetime(2026, 3, 8, 6, 30, tzinfo=UTC),  # America/New_York: 07:00 UTC
    datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
])
def test_daylight_saving_changes_in_the_host_time_zone_change_nothing(now, monkeypatch):
    items = mixed_items(epoch(now))
    sites = {"alpha": Site("starter"), "beta": Site("pro"), "gamma": Site("enterprise", epoch(now) - 3 * DAY)}
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    reference = list(plan(items, sites, now, emergency=True, bytes_to_free=10**5).decisions())
    try:
        for zone in ("Europe/Berlin", "America/New_York"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            assert time.localtime(epoch(now)).tm_zone != "UTC"
            local_now = now.astimezone(ZoneInfo(zone))
            for when in (now, local_now):
                assert list(plan(items, sites, when, emergency=True, bytes_to_free=10**5).decisions()) == reference
    finally:
        monkeypatch.undo()
        time.tzset()


# ------------------------------------------------------------------------------------ scale


def test_a_large_plan_is_linear_enough():
    items = [Item(f"site-{i % 5000}", ("full", "incremental", "db", "config")[i % 4], NOW_S - (i // 5000) * HOUR,
                  1, f"r{i}", VALID) for i in range(200_000)]
    started = time.perf_counter()
    result = plan(items, {f"site-{i}": Site(TIERS_CYCLE[i % 3]) for i in range(5000)}, NOW)
    assert time.perf_counter() - started < 10
    assert len(result) == 200_000 and result.totals()["items"] == 200_000


TIERS_CYCLE = ("starter", "pro", "enterprise")
