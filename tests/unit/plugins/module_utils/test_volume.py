"""Unit tests of the volume decision: which devices may be formatted, adopted or wiped."""

from __future__ import annotations

import json

import pytest

from ansible_collections.chom.storage.plugins.module_utils.volume import (
    Signature,
    VolumeRefused,
    check_mkfs_options,
    device_identity,
    parse_wipefs,
    plan_volume,
    with_table_ids,
)

DEV = "/dev/vdb"
LABEL = "chom-storage"
EXT4 = Signature("ext4", "0x438", uuid="5d0c1b2a-0000-4000-8000-000000000001")
OURS = Signature("xfs", "0x0", uuid="9a8b7c6d-0000-4000-8000-000000000002", label=LABEL)
GPT = [Signature("gpt", "0x200"), Signature("gpt", "0x18fffe00"), Signature("PMBR", "0x1fe")]


def wipefs_json(*entries: dict) -> str:
    return json.dumps({"signatures": list(entries)})


# ---------------------------------------------------------------- parse_wipefs


def test_parse_wipefs_empty_output_and_empty_list_mean_blank():
    assert parse_wipefs("") == []
    assert parse_wipefs("  \n") == []
    assert parse_wipefs(wipefs_json()) == []


def test_parse_wipefs_reads_every_signature_with_nulls_as_empty():
    out = wipefs_json(
        {"device": "loop5", "offset": "0x200", "type": "gpt", "uuid": None, "label": None},
        {"device": "loop5", "offset": "0x1fe", "type": "PMBR", "uuid": None, "label": None},
        {"device": "loop5", "offset": "0x0", "type": "xfs", "uuid": "u-1", "label": "other"},
    )
    sigs = parse_wipefs(out)
    assert sigs == [
        Signature("gpt", "0x200"),
        Signature("PMBR", "0x1fe"),
        Signature("xfs", "0x0", uuid="u-1", label="other"),
    ]
    assert [s.identity for s in sigs] == ["gpt:0x200", "PMBR:0x1fe", "xfs:u-1"]


def test_parse_wipefs_missing_type_is_still_a_signature():
    sigs = parse_wipefs(wipefs_json({"offset": "0x10"}))
    assert sigs == [Signature("unknown", "0x10")]


def test_parse_wipefs_rejects_garbage():
    with pytest.raises(ValueError):
        parse_wipefs("wipefs: not json")


def test_device_identity_is_order_independent():
    assert device_identity(GPT) == device_identity(list(reversed(GPT))) == "PMBR:0x1fe,gpt:0x18fffe00,gpt:0x200"


# ---------------------------------------------------------------- plan_volume


def test_blank_unmounted_device_is_formatted():
    plan = plan_volume(DEV, [], [], LABEL)
    assert plan.action == "mkfs"
    assert plan.uuid == ""


def test_our_volume_is_adopted_with_its_uuid():
    plan = plan_volume(DEV, [OURS], ["/mnt/chom-storage"], LABEL)
    assert (plan.action, plan.uuid) == ("none", OURS.uuid)


@pytest.mark.parametrize("signatures", [[EXT4], GPT, [Signature("LVM2_member", "0x218", uuid="KjhC-mg")],
                                        [Signature("xfs", "0x0", uuid="u-2", label="backup")],
                                        [OURS, Signature("PMBR", "0x1fe")]])
def test_any_other_signature_is_refused_and_names_the_identity(signatures):
    with pytest.raises(VolumeRefused) as refusal:
        plan_volume(DEV, signatures, [], LABEL)
    assert f"'{device_identity(signatures)}'" in str(refusal.value)


def test_wrong_wipe_identity_is_refused_and_says_so():
    with pytest.raises(VolumeRefused, match="does not match"):
        plan_volume(DEV, [EXT4], [], LABEL, wipe_identity="ext4:someone-else")
    with pytest.raises(VolumeRefused):
        plan_volume(DEV, GPT, [], LABEL, wipe_identity="gpt:0x200")  # only part of the identity
    with pytest.raises(VolumeRefused):
        plan_volume(DEV, [EXT4], [], LABEL, wipe_identity="")


def test_exact_wipe_identity_wipes():
    assert plan_volume(DEV, [EXT4], [], LABEL, wipe_identity=EXT4.identity).action == "wipe_and_mkfs"
    assert plan_volume(DEV, GPT, [], LABEL, wipe_identity=device_identity(GPT)).action == "wipe_and_mkfs"


def test_wipe_identity_on_a_blank_device_just_formats():
    assert plan_volume(DEV, [], [], LABEL, wipe_identity=EXT4.identity).action == "mkfs"


def test_mounted_or_partitioned_device_is_refused_even_with_matching_identity():
    with pytest.raises(VolumeRefused, match="mounted"):
        plan_volume(DEV, [EXT4], ["/srv"], LABEL, wipe_identity=EXT4.identity)
    with pytest.raises(VolumeRefused, match="mounted"):
        plan_volume(DEV, [], ["/srv"], LABEL)
    with pytest.raises(VolumeRefused, match="partitions"):
        plan_volume(DEV, [], [], LABEL, children=["vdb1"])
    with pytest.raises(VolumeRefused, match="holders"):
        plan_volume(DEV, GPT, [], LABEL, children=["dm-0"], wipe_identity=device_identity(GPT))


@pytest.mark.parametrize(
    "options",
    [["-f"], ["--force"], ["-q", "-f"], ["-Kf"], ["-qf"], ["-l", "logdev=/dev/vdc,size=64m"],
     ["-r", "rtdev=/dev/vdc"], ["-d", "name=/dev/vdc"], ["-d", "file=1,name=/tmp/x"], ["-m"],
     ["-m", "reflink=1", "-f", "x"], ["-m", "reflink=1;rm"]],
)
def test_dangerous_mkfs_options_are_refused(options):
    with pytest.raises(VolumeRefused, match="-f/--force"):
        check_mkfs_options(options)


@pytest.mark.parametrize("options", [[], ["-m", "reflink=1"], ["-i", "maxpct=5", "-d", "agcount=4,su=64k"]])
def test_geometry_mkfs_options_are_allowed(options):
    check_mkfs_options(options)


def test_identity_names_one_device_not_a_kind_of_disk():
    table = [Signature("dos", "0x1fe")]
    one = device_identity(with_table_ids(table, "b8d0cb7c"), 1 << 30)
    other = device_identity(with_table_ids(table, "0b01cce7"), 1 << 30)
    bigger = device_identity(with_table_ids(table, "b8d0cb7c"), 2 << 30)
    assert len({one, other, bigger}) == 3
    assert one == "size=1073741824,dos:b8d0cb7c"
