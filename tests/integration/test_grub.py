"""deploys/grub.py through the pyinfra CLI on the lab hosts, with Debian's real update-grub.

Regeneration is real here, and that took a lab change. On an overlay root, which is what lab
hosts had first, update-grub stops at its first step: `grub-probe --target=device /` fails with
"failed to get canonical path of `overlay'". grub-mkconfig sets GRUB_DEVICE from grub-probe itself,
so setting GRUB_DEVICE does not help. Pointing grub-probe at some other device, or swapping in a
fake grub-mkconfig, would fake the very thing under test. So each lab host now gets what a real
Debian box has (lab/lab.py):
- its root is an ext4 file system on a block device of its own, visible inside the host, so
  grub-probe resolves / as it does on a disk. The device is a loop device numbered 100 or more:
  grub-mkconfig_lib takes /dev/loop0-9 for a loop-mounted image file and probes the backing file,
  which lives outside the host, while larger numbers are probed as disks. (zram also works but
  keeps every block in RAM, and this machine's kernel reads no partition tables);
- Debian's linux-image-cloud-amd64 (with its initramfs) is in /boot, so 10_linux writes a menu
  entry that carries GRUB_CMDLINE_LINUX_DEFAULT;
- /etc/default/grub is the template grub-pc's postinst installs. grub-pc itself is not installed:
  with no boot sector to install to, it would only run grub-install.
The lab hosts run this machine's kernel, so /proc/cmdline never gets the arguments: every run
ends with "reboot pending". The reboot itself is tested in a VM (test_grub_vm.py).
"""

from __future__ import annotations

import shlex

from lab.pyinfra_cli import pyinfra, results
from tests.integration.conftest import assert_no_changes
from lab import lab
from lab.gpu import GpuProfile

PAGES_120 = str(120 * 262144)
OURS = f"ttm.pages_limit={PAGES_120} ttm.page_pool_size={PAGES_120} amd_iommu=off"
SOURCED = '. /etc/default/grub; printf "%s" "$GRUB_CMDLINE_LINUX_DEFAULT"'
OPERATION = "Set the GPU kernel arguments | Set the kernel arguments in GRUB_CMDLINE_LINUX_DEFAULT and regenerate grub.cfg"
FIRST_LINUX_LINE = "awk '$1 == \"linux\" { $1 = \"\"; print; exit }' /boot/grub/grub.cfg"


def ssh(name: str, command: str) -> str:
    return lab.ssh(name, command).stdout


def test_grub_sets_the_arguments_keeps_the_others_and_a_second_run_changes_nothing(lab_inventory):
    # halo1 as a user left it: a stale ttm value of ours, an iommu=pt that conflicts with iommu_mode "off".
    ssh("halo1", "sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/"
                 "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash ttm.pages_limit=4063232 iommu=pt loglevel=3\"/' "
                 "/etc/default/grub")
    before = {name: ssh(name, "cat /etc/default/grub") for name in ("halo1", "halo2", "halo3")}

    proc = pyinfra(lab_inventory, "deploys/grub.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert results(proc)[OPERATION]["success"] == 3, output
    for name in ("halo1", "halo2", "halo3"):
        assert f"reboot pending on {name}: the running kernel lacks {OURS}" in output

    wanted = {"halo1": f"quiet splash ttm.pages_limit={PAGES_120} loglevel=3 ttm.page_pool_size={PAGES_120} "
                        "amd_iommu=off",
              "halo2": f"quiet {OURS}", "halo3": f"quiet {OURS}"}
    for name, text in before.items():
        assert ssh(name, SOURCED) == wanted[name]
        backups = ssh(name, "ls /etc/default/grub.halo-provision-*.bak").split()
        assert len(backups) == 1, backups
        assert ssh(name, f"cat {shlex.quote(backups[0])}") == text
        # The default entry update-grub wrote boots the Debian kernel with the arguments.
        line = ssh(name, FIRST_LINUX_LINE).split()
        assert line[0].startswith("/boot/vmlinuz-") and line[1].startswith("root=/dev/loop")
        assert line[1:] == ["root=" + line[1].split("=", 1)[1], "ro", *wanted[name].split()]

    assert_no_changes(pyinfra(lab_inventory, "deploys/grub.py"))


def test_a_failing_grub_mkconfig_fails_the_host_and_puts_both_files_back(lab_inventory):
    checksums = "sha256sum /etc/default/grub /boot/grub/grub.cfg 2>&1"
    before = ssh("halo2", checksums)
    backups_before = ssh("halo2", "ls /etc/default/ | grep -c halo-provision || true")
    ssh("halo2", "mv /usr/sbin/grub-mkconfig /usr/sbin/grub-mkconfig.real && "
                 "printf '#!/bin/sh\\necho grub-mkconfig: broken on purpose >&2\\nexit 1\\n' > /usr/sbin/grub-mkconfig && "
                 "chmod 755 /usr/sbin/grub-mkconfig")
    try:
        proc = pyinfra(lab_inventory, "deploys/grub.py", "--limit", "halo2", data={"ttm_gib": "96"})
    finally:
        ssh("halo2", "mv /usr/sbin/grub-mkconfig.real /usr/sbin/grub-mkconfig")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "grub-mkconfig: broken on purpose" in output
    assert "restored /etc/default/grub from /etc/default/grub.halo-provision-" in output
    assert "and /boot/grub/grub.cfg as it was" in output
    assert ssh("halo2", checksums) == before
    # The backup of the failed attempt stays, next to the first one.
    assert int(ssh("halo2", "ls /etc/default/ | grep -c halo-provision")) == int(backups_before) + 1


def test_a_host_booted_with_the_arguments_needs_no_reboot_and_nothing_changes(lab_inventory, set_gpu):
    pyinfra(lab_inventory, "deploys/grub.py", "--limit", "halo3", check=True)  # the configuration is in place
    set_gpu("halo3", GpuProfile(cmdline=f"BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/loop302 ro quiet {OURS}"))
    for data in ({}, {"reboot_allowed": "True"}):
        proc = pyinfra(lab_inventory, "deploys/grub.py", "--limit", "halo3", data=data)
        assert_no_changes(proc)
        assert "reboot pending" not in proc.stdout + proc.stderr
        assert "Reboot" not in proc.stdout + proc.stderr


def test_switching_iommu_mode_to_pt_replaces_amd_iommu(lab_inventory):
    proc = pyinfra(lab_inventory, "deploys/grub.py", "--limit", "halo3", data={"iommu_mode": "pt"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    pt = f"ttm.pages_limit={PAGES_120} ttm.page_pool_size={PAGES_120} iommu=pt"
    assert "reboot pending on halo3: the running kernel lacks " + pt in output
    assert ssh("halo3", SOURCED) == f"quiet {pt}"
    assert ssh("halo3", FIRST_LINUX_LINE).split()[3:] == ["quiet", *pt.split()]
    assert_no_changes(pyinfra(lab_inventory, "deploys/grub.py", "--limit", "halo3", data={"iommu_mode": "pt"}))
