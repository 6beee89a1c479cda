"""facts/distro.py: one description of the distribution for every step (family from ID_LIKE,
release, package manager, boot loader), and no step parsing os-release on its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from facts.distro import Distro, boot_loader

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "facts" / "Distro"


def case(name: str) -> dict:
    output = json.loads((CASES / f"{name}.json").read_text())["output"]
    return Distro().process(output.splitlines())


@pytest.mark.parametrize(
    ("name", "family", "release", "major", "manager", "loader"),
    [
        ("fedora_43_grubby", "fedora", "43", 43, "dnf", "grubby"),
        ("fedora_42_systemd_boot", "fedora", "42", 42, "dnf", "systemd-boot"),
        ("ubuntu_24_04_grub", "ubuntu", "24.04", 24, "apt", "grub"),
        ("ubuntu_25_10_systemd_boot", "ubuntu", "25.10", 25, "apt", "systemd-boot"),
        ("pop_os_24_04_kernelstub", "ubuntu", "24.04", 24, "apt", "kernelstub"),
        ("debian_12_grub", "debian", "12", 12, "apt", "grub"),
        ("debian_13_grub", "debian", "13", 13, "apt", "grub"),
        ("debian_forky_testing", "debian", "14", 14, "apt", "grub"),
        ("debian_13_kernel_cmdline_only", "debian", "13", 13, "apt", "systemd-boot"),
        ("rocky_9_rhel_like", "fedora", "9.6", 9, "dnf", "grubby"),
        ("arch_unknown_family", "arch", None, None, None, "systemd-boot"),
    ],
)
def test_each_distribution_gets_its_family_release_package_manager_and_boot_loader(
        name, family, release, major, manager, loader):
    d = case(name)
    assert (d["family"], d["release"], d["major"], d["package_manager"], d["boot_loader"]) == \
        (family, release, major, manager, loader)


def test_a_grub_host_that_also_has_etc_kernel_cmdline_stays_grub():
    """Fedora's installer writes /etc/kernel/cmdline beside GRUB; a Debian host may have it for kernel-install."""
    assert boot_loader("fedora", {"/etc/kernel/cmdline", "/etc/default/grub"}, {"grubby"}) == "grubby"
    assert boot_loader("debian", {"/etc/kernel/cmdline", "/etc/default/grub"}, {"update-grub"}) == "grub"
    assert boot_loader("debian", {"/etc/kernel/cmdline", "/etc/default/grub", "/boot/efi/loader/loader.conf"},
                       {"update-grub", "bootctl"}) == "systemd-boot"


def test_the_fact_command_probes_every_file_and_tool_and_never_fails():
    command = Distro().command()
    assert command.rstrip().endswith("true")
    for probed in ["/etc/os-release", "/usr/lib/os-release", "/etc/kernelstub/configuration", "/etc/kernel/cmdline",
                   "/boot/efi/loader/loader.conf", "grubby", "kernelstub"]:
        assert probed in command


def test_no_step_reads_the_distribution_another_way():
    """The five parsers of os-release that disagreed (ID only vs ID_LIKE): only facts/distro.py decides."""
    offenders = []
    for path in sorted((ROOT / "deploys").glob("*.py")) + sorted((ROOT / "facts").glob("*.py")):
        if path.name == "distro.py":
            continue
        text = path.read_text()
        for pattern in (r"\bLinuxDistribution\b", r"release_meta", r"ID_LIKE", r"os-release"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert offenders == []
