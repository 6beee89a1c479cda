"""The judgements of the kernel, firmware and groups steps, fed facts (Fedora and Ubuntu included)."""

import ast
from pathlib import Path

import pytest

from deploys.checks import firmware_rows, kernel_row
from deploys.groups import missing_memberships
from deploys.settings import Settings

UBUNTU_FIRMWARE = {"linux-firmware": "20240318.git3b128b60-0ubuntu2.3"}
DEBIAN_FIRMWARE = {"firmware-amd-graphics": "20230210-5"}
MES_80 = [{"dri": "1", "mes": 0x80, "mes_kiq": 0x6C}]
MES_83 = [{"dri": "1", "mes": 0x83, "mes_kiq": 0x6C}]


def kernel(release: str) -> dict:
    return {"release": release, "version": None}


def by_subject(rows) -> dict:
    return {r.subject: r for r in rows}


# -- kernel ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distro", "release", "remedy"),
    [
        ("fedora", "6.15.9-201.fc42.x86_64", "dnf upgrade --refresh 'kernel*'"),
        ("ubuntu", "6.14.0-37-generic", "linux-generic-hwe-24.04"),
        ("debian", "6.12.57+deb13-amd64", "trixie-backports"),
        ("debian", "6.1.0-41-amd64", "upgrade to Debian 13"),
        ("arch", "6.16.8-arch1-1", "install a newer kernel and reboot"),
    ],
)
def test_a_kernel_below_the_minimum_fails_with_the_release_and_the_distros_remedy(distro, release, remedy):
    row = kernel_row(distro, kernel(release), Settings())
    assert row.verdict == "FAIL"
    assert row.value == release
    assert "kernel_min_version 6.16.9" in row.why and "15.5 GiB" in row.why
    assert remedy in row.why


@pytest.mark.parametrize(
    ("release", "verdict"),
    [
        ("6.16.9-200.fc42.x86_64", "WARN"),
        ("6.17.0-14-generic", "WARN"),
        ("6.18.3", "WARN"),
        ("6.18.4-200.fc43.x86_64", "ok"),
        ("6.18.44-fc-v509", "ok"),
        ("7.0.0-rc3", "ok"),
    ],
)
def test_kernels_from_the_minimum_to_the_recommended_version_warn(release, verdict):
    row = kernel_row("fedora", kernel(release), Settings())
    assert row.verdict == verdict, row
    if verdict == "WARN":
        assert "6.18.4" in row.why and "gfx1151" in row.why and "dnf upgrade" in row.why


def test_the_thresholds_come_from_settings():
    s = Settings(kernel_min_version="99.0", kernel_recommended_version="99.0")
    assert "kernel_min_version 99.0" in kernel_row("debian", kernel("6.18.44-fc-v509"), s).why
    assert kernel_row("debian", kernel("6.18.44"), Settings(kernel_recommended_version="99.0")).verdict == "WARN"


@pytest.mark.parametrize(
    ("release", "verdict"),
    [
        ("6.14.0-1018-oem", "ok"),  # AMD's support table: Ubuntu 24.04 OEM kernels from 6.14.0-1018
        ("6.14.0-1027-oem", "ok"),
        ("6.17.0-1005-oem", "ok"),  # a newer OEM series with a lower ABI number
        ("6.14.0-1017-oem", "FAIL"),
        ("6.11.0-1027-oem", "FAIL"),  # a higher ABI number of an older series
        ("6.14.0-1018-generic", "FAIL"),  # the generic 6.14 lacks the fixes: kernel_min_version applies
    ],
)
def test_ubuntu_oem_kernels_have_their_own_minimum(release, verdict):
    row = kernel_row("ubuntu", kernel(release), Settings())
    assert row.verdict == verdict, row
    if release.endswith("-oem") and verdict == "FAIL":
        assert "kernel_oem_min_version 6.14.0-1018" in row.why and "linux-oem-24.04c" in row.why


def test_the_oem_minimum_is_for_ubuntu_oem_kernels_only_and_comes_from_settings():
    assert kernel_row("debian", kernel("6.14.0-1018-oem"), Settings()).verdict == "FAIL"  # not Ubuntu's flavour
    row = kernel_row("ubuntu", kernel("6.14.0-1018-oem"), Settings(kernel_oem_min_version="6.14.0-1020"))
    assert row.verdict == "FAIL" and "kernel_oem_min_version 6.14.0-1020" in row.why


@pytest.mark.parametrize("fact", [None, kernel("weird")])
def test_an_unreadable_kernel_release_fails(fact):
    row = kernel_row("ubuntu", fact, Settings())
    assert row.verdict == "FAIL" and "uname -r" in row.why


# -- firmware ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packages", "verdict", "words"),
    [
        ({"linux-firmware": "20251125-1.fc43", "amd-gpu-firmware": "20251125-1.fc43"}, "FAIL",
         ["snapshot 20251125 is known bad", "firmware_bad_snapshots", "MES 0x83",
          "dnf upgrade --refresh linux-firmware", "20251111"]),
        ({"linux-firmware": "20260110-1.fc43", "amd-gpu-firmware": "20251125-1.fc43"}, "FAIL",
         ["snapshot 20251125"]),
        # the rollback AMD engineers advise after the 20251125 regression
        ({"linux-firmware": "20251111-1.fc43", "amd-gpu-firmware": "20251111-1.fc43"}, "ok",
         ["not a known-bad snapshot"]),
        ({"linux-firmware": "20250808-1.fc42", "amd-gpu-firmware": "20250808-1.fc42"}, "ok", []),
        ({"linux-firmware": "20260110-1.fc43", "amd-gpu-firmware": "20260110-1.fc43"}, "ok", []),
        ({}, "FAIL", ["no linux-firmware / amd-gpu-firmware package"]),
    ],
)
def test_fedora_fails_only_a_known_bad_firmware_snapshot(packages, verdict, words):
    row = by_subject(firmware_rows("fedora", packages, MES_80, Settings()))["firmware"]
    assert row.verdict == verdict, row
    for word in words:
        assert word in row.value + " " + row.why


def test_the_known_bad_snapshots_come_from_settings():
    s = Settings(firmware_bad_snapshots=[20251125, 20260110])
    rows = firmware_rows("fedora", {"linux-firmware": "20260110-1.fc43"}, MES_80, s)
    assert by_subject(rows)["firmware"].verdict == "FAIL"
    rows = firmware_rows("fedora", {"linux-firmware": "20251125-1.fc43"}, MES_80, Settings(firmware_bad_snapshots=[]))
    assert by_subject(rows)["firmware"].verdict == "ok"


def test_the_loaded_mes_decides_where_readable_even_on_a_good_snapshot():
    rows = by_subject(firmware_rows("fedora", {"amd-gpu-firmware": "20251111-1.fc43"}, MES_83, Settings()))
    assert (rows["firmware"].verdict, rows["MES firmware"].verdict) == ("ok", "FAIL")


@pytest.mark.parametrize(("distro", "packages"), [("ubuntu", UBUNTU_FIRMWARE), ("debian", DEBIAN_FIRMWARE)])
def test_debian_and_ubuntu_never_fail_on_the_old_snapshot_date(distro, packages):
    rows = by_subject(firmware_rows(distro, packages, MES_80, Settings()))
    assert rows["firmware"].verdict == "info"
    assert "not compared" in rows["firmware"].why
    assert (rows["MES firmware"].verdict, rows["MES firmware"].value) == ("ok", "0x80")


@pytest.mark.parametrize(
    ("distro", "remedy"),
    [("ubuntu", "apt install --only-upgrade linux-firmware"), ("debian", "firmware-amd-graphics"),
     ("fedora", "dnf upgrade")],
)
def test_mes_0x83_fails_on_every_distro(distro, remedy):
    row = by_subject(firmware_rows(distro, {"linux-firmware": "20260110-1.fc43"}, MES_83, Settings()))["MES firmware"]
    assert row.verdict == "FAIL"
    assert "0x83" in row.value and "20251125" in row.why and remedy in row.why


def test_mes_older_than_0x80_warns():
    row = by_subject(firmware_rows("debian", DEBIAN_FIRMWARE, [{"dri": "1", "mes": 0x7A, "mes_kiq": 1}],
                                   Settings()))["MES firmware"]
    assert row.verdict == "WARN" and "0x80" in row.why


def test_unreadable_mes_says_not_checked_and_warns_where_nothing_else_was_checked():
    ubuntu = by_subject(firmware_rows("ubuntu", UBUNTU_FIRMWARE, None, Settings()))["MES firmware"]
    assert (ubuntu.verdict, ubuntu.value) == ("WARN", "not checked")
    assert "debugfs" in ubuntu.why and "unverified" in ubuntu.why
    fedora = by_subject(firmware_rows("fedora", {"linux-firmware": "20260110-1.fc43"}, None, Settings()))
    assert (fedora["MES firmware"].verdict, fedora["MES firmware"].value) == ("info", "not checked")
    assert fedora["firmware"].verdict == "ok"


# -- groups ------------------------------------------------------------------------------------


def user(primary: str, *groups: str) -> dict:
    return {"group": primary, "groups": list(groups), "home": "/home/x", "shell": "/bin/bash"}


@pytest.mark.parametrize(
    ("users", "wanted", "expected"),
    [
        ({"alice": user("alice", "team")}, ["alice"], ([], {"alice": ["render", "video"]})),
        ({"alice": user("alice", "video", "team")}, ["alice"], ([], {"alice": ["render"]})),
        ({"alice": user("render", "video")}, ["alice"], ([], {})),  # the primary group counts
        ({"alice": user("alice", "render", "video")}, ["alice"], ([], {})),
        ({"alice": user("alice")}, ["alice", "bob"], (["bob"], {"alice": ["render", "video"]})),
        ({}, [], ([], {})),
    ],
)
def test_missing_memberships(users, wanted, expected):
    assert missing_memberships(users, wanted) == expected


# -- wiring ------------------------------------------------------------------------------------


def full_steps() -> list[str]:
    """The step functions deploys/full.py calls, in the order of their lines (pyinfra's order)."""
    tree = ast.parse((Path(__file__).resolve().parents[2] / "deploys" / "full.py").read_text())
    main = next(node for node in tree.body if isinstance(node, ast.If))
    first = main.body[0]
    assert isinstance(first, ast.Assign) and first.value.func.id == "settings", \
        "full.py validates every host before the first step"
    calls = [stmt.value.func.id for stmt in main.body[1:]
             if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)]
    assert calls[0] == "prefetch", "then reads the host's facts that hold still in one command"
    return calls[1:]


def test_full_runs_the_host_checks_first_and_verify_last():
    names = full_steps()
    assert names[:3] == ["check_kernel", "check_firmware", "gpu_groups"]
    assert names[-1] == "verify_host"
