"""Pure helper functions of the facts package."""

import pytest
from packaging.version import Version

from facts.amdgpu import gfx_target_name, to_int
from facts.firmware import firmware_date, installed_packages
from facts.kernel import cmdline_value, kernel_version, parse_cmdline
from facts.rocm import rocm_version


@pytest.mark.parametrize(
    "release, expected",
    [
        ("6.17.0-14-generic", "6.17.0"),
        ("6.17.7-300.fc43.x86_64", "6.17.7"),
        ("6.18.9-arch1-1", "6.18.9"),
        ("7.0.0-rc3", "7.0.0rc3"),
        ("6.12", "6.12"),
        ("6.19.0-0.rc2.20251222git0e8fd3f3cbd8.22.fc44.x86_64", "6.19.0rc2"),
        ("6.17.0-061700rc3-generic", "6.17.0rc3"),
        ("6.16.9+deb14-amd64", "6.16.9"),
    ],
)
def test_kernel_version(release, expected):
    assert kernel_version(release) == Version(expected)
    assert str(kernel_version(release)) == expected


@pytest.mark.parametrize("release", ["", "custom", "v6.17", "6", "   "])
def test_kernel_version_unparseable(release):
    assert kernel_version(release) is None


def test_kernel_version_ordering():
    rc = kernel_version("7.0.0-rc3")
    assert kernel_version("6.18.4") < rc < kernel_version("7.0.0")
    assert rc > kernel_version("6.18.9-arch1-1")
    assert kernel_version("7.0.0-rc2") < rc
    minimum = Version("6.16.9")
    assert kernel_version("6.16.9-200.fc42.x86_64") >= minimum
    assert kernel_version("6.16.10-arch1-1") >= minimum
    assert kernel_version("6.16.8-arch1-1") < minimum
    assert kernel_version("6.16.9-rc7") < minimum
    assert kernel_version("6.16") < minimum
    assert kernel_version("6.17") >= minimum


@pytest.mark.parametrize(
    "version, name",
    [(110501, "gfx1151"), (110500, "gfx1150"), (110000, "gfx1100"), (90010, "gfx90a"),
     (90402, "gfx942"), (100300, "gfx1030"), (120001, "gfx1201"), (90012, "gfx90c")],
)
def test_gfx_target_name(version, name):
    assert gfx_target_name(version) == name


@pytest.mark.parametrize(
    "version, date",
    [
        ("20260110-1.fc43", 20260110),
        ("20240318.git3b128b60-0ubuntu2.3", 20240318),
        ("20230210-5", 20230210),
        ("1:20251125-1", 20251125),
        ("20251125", 20251125),
        ("nonsense", None),
        ("", None),
        ("1.2.3-4", None),
        ("202401-1", None),
        ("202401011-1", None),
        ("20241301-1", None),
    ],
)
def test_firmware_date(version, date):
    assert firmware_date(version) == date


def test_cmdline_value_last_wins():
    args = parse_cmdline("ttm.pages_limit=16000000 quiet ttm.pages_limit=31457280 ro")
    assert cmdline_value(args, "ttm.pages_limit") == "31457280"
    assert cmdline_value(args, "quiet") is None
    assert cmdline_value(args, "missing") is None
    assert cmdline_value([], "quiet") is None
    assert cmdline_value(None, "quiet") is None


def test_cmdline_value_dash_underscore():
    args = parse_cmdline("amd-iommu=off ttm.page-pool-size=1")
    assert cmdline_value(args, "amd_iommu") == "off"
    assert cmdline_value(args, "ttm.page_pool_size") == "1"


def test_cmdline_value_flag_after_value():
    assert cmdline_value(parse_cmdline("iommu=pt iommu"), "iommu") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("   ", []),
        ("a=b=c", [["a", "b=c"]]),
        ("x=", [["x", ""]]),
        ('dyndbg="file drm* +p" q', [["dyndbg", "file drm* +p"], ["q", None]]),
        ('"dyndbg=file drm* +p"', [["dyndbg", "file drm* +p"]]),
        ('"foo bar"=x', [["foo bar", "x"]]),
        ('a="unterminated value', [["a", "unterminated value"]]),
        ("a\tb\n", [["a", None], ["b", None]]),
    ],
)
def test_parse_cmdline(text, expected):
    assert parse_cmdline(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("7.1.1-38", "7.1.1"), ("7.1.1.70101-38~24.04", "7.1.1"), ("5.7.1-5", "5.7.1"),
     ("6.4.2-1.fc43", "6.4.2"), ("7.0", "7.0"), ("garbage", None), ("", None), (None, None)],
)
def test_rocm_version(text, expected):
    assert rocm_version(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("42", 42), (" 42\n", 42), ("", None), (None, None), ("-1", None), ("0x10", None),
     ("1e3", None), ("\u0663", None)],
)
def test_to_int(text, expected):
    assert to_int(text) == expected


def test_installed_packages():
    lines = [
        "dpkg ii  linux-firmware 20240318.git3b128b60-0ubuntu2.3",
        "dpkg hi  firmware-amd-graphics 20230210-5",
        "dpkg rc  hipcc 5.7.1-3",
        "dpkg un  rocm-core ",
        "rpm amd-gpu-firmware 20260110-1.fc43",
        "package rocm-core is not installed",
    ]
    assert installed_packages(lines) == {
        "linux-firmware": "20240318.git3b128b60-0ubuntu2.3",
        "firmware-amd-graphics": "20230210-5",
        "amd-gpu-firmware": "20260110-1.fc43",
    }
