"""deploys/grub.py without a host: the arguments from facts and settings, the /etc/default/grub edit,
the grubby command, and the shell the step runs (with /bin/sh and awk of this machine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploys.grub import (
    apply_script,
    args_to_change,
    cfg_check_script,
    edit_grub_default,
    grubby_command,
    kernel_args,
    kernel_cmdline_text,
    kernelstub_command,
    systemd_boot_script,
)
from deploys.settings import GIB, Settings, SettingsError
from facts.grub import GrubbyKernels, GrubDefault
from facts.kernel import parse_cmdline

MEM_TOTAL_128 = 134486163456  # /proc/meminfo of a 128 GiB box with a 512 MiB carve-out
CARD = [{"card": "card1", "vram_total": 512 << 20}]
TTM = {"module": "ttm", "pages_limit": 4063232, "page_pool_size": 4063232}
PAGES_120 = str(120 * 262144)  # 31457280
OURS = {"ttm.pages_limit": PAGES_120, "ttm.page_pool_size": PAGES_120, "amd_iommu": "off"}
OURS_ARGS = f"ttm.pages_limit={PAGES_120} ttm.page_pool_size={PAGES_120} amd_iommu=off"


# --- which arguments ----------------------------------------------------------------------------


def test_default_settings_want_ttm_for_installed_ram_less_reserve_and_iommu_off():
    assert kernel_args(Settings(), MEM_TOTAL_128, CARD, TTM) == (OURS, ["iommu"])


def test_amd_dkms_driver_gets_amdttm_arguments():
    wanted, _ = kernel_args(Settings(), MEM_TOTAL_128, CARD, {"module": "amdttm"})
    assert list(wanted)[:2] == ["amdttm.pages_limit", "amdttm.page_pool_size"]
    assert wanted["amdttm.pages_limit"] == PAGES_120


def test_ttm_gib_and_a_big_carve_out_use_the_installed_ram_like_verify():
    # 96 GiB carve-out: MemTotal shows about 30.7 GiB, installed RAM is still 128 GiB.
    mem_total = 128 * GIB - 96 * GIB - 1310720 * 1024
    wanted, _ = kernel_args(Settings(), mem_total, [{"vram_total": 96 * GIB}], TTM)
    assert wanted["ttm.pages_limit"] == PAGES_120
    wanted, _ = kernel_args(Settings(ttm_gib=96), MEM_TOTAL_128, CARD, None)
    assert wanted["ttm.pages_limit"] == wanted["ttm.page_pool_size"] == str(96 * 262144)


def test_ttm_gib_above_installed_ram_is_a_settings_error():
    with pytest.raises(SettingsError, match="ttm_gib"):
        kernel_args(Settings(ttm_gib=200), MEM_TOTAL_128, CARD, TTM)


@pytest.mark.parametrize(
    "mode, iommu, remove",
    [("off", {"amd_iommu": "off"}, ["iommu"]), ("pt", {"iommu": "pt"}, ["amd_iommu"]), ("keep", {}, [])],
)
def test_iommu_modes(mode, iommu, remove):
    wanted, removed = kernel_args(Settings(iommu_mode=mode), MEM_TOTAL_128, CARD, TTM)
    assert {k: v for k, v in wanted.items() if "iommu" in k} == iommu
    assert removed == remove


def test_extra_args_follow_ours_flags_have_no_value():
    s = Settings(iommu_mode="keep", kernel_extra_args=["amdgpu.cwsr_enable=0", "nowatchdog", "iommu=pt"])
    wanted, removed = kernel_args(s, MEM_TOTAL_128, CARD, TTM)
    assert list(wanted.items())[2:] == [("amdgpu.cwsr_enable", "0"), ("nowatchdog", None), ("iommu", "pt")]
    assert removed == []


def test_args_to_change_reads_the_last_occurrence_flags_and_dashes():
    running = parse_cmdline(f"ro quiet ttm.pages_limit=1 {OURS_ARGS} iommu=pt nowatchdog")
    wanted = {**OURS, "nowatchdog": None, "amdgpu.cwsr-enable": "0"}
    assert args_to_change(running, wanted, ["iommu"]) == (["amdgpu.cwsr-enable=0"], ["iommu"])
    running = parse_cmdline(f"{OURS_ARGS} ttm.pages_limit=1 nowatchdog=1 amdgpu.cwsr_enable=0")
    assert args_to_change(running, wanted, ["iommu"]) == ([f"ttm.pages_limit={PAGES_120}", "nowatchdog"], [])
    assert args_to_change(None, {"quiet": None}, []) == (["quiet"], [])




# --- Fedora: grubby -----------------------------------------------------------------------------

FEDORA_ENTRY = """index={index}
kernel="/boot/vmlinuz-{release}"
args="{args}"
root="UUID=4b3c1a0e-8d2f-4e5a-9c6b-7f1e2d3c4b5a"
initrd="/boot/initramfs-{release}.img"
title="Fedora Linux ({release}) 43 (Workstation Edition)"
id="8c1f0e2d9a7b4c3e8f6a5b4c3d2e1f0a-{release}"
"""
BASE = "ro rootflags=subvol=root rhgb quiet"


def grubby_info(args0: str, args1: str) -> list[dict]:
    """`grubby --info=ALL` of a Fedora 43 box with two kernels, through the fact."""
    text = FEDORA_ENTRY.format(index=0, release="6.17.7-300.fc43.x86_64", args=args0) + FEDORA_ENTRY.format(
        index=1, release="6.17.1-300.fc43.x86_64", args=args1
    )
    kernels = GrubbyKernels().process(text.splitlines())
    assert [k["index"] for k in kernels] == [0, 1]
    return kernels


def test_grubby_nothing_to_do():
    kernels = grubby_info(f"{BASE} {OURS_ARGS}", f"{OURS_ARGS} {BASE}")
    assert grubby_command(kernels, OURS, ["iommu"]) is None


def test_grubby_one_kernel_missing_the_arguments():
    kernels = grubby_info(f"{BASE} {OURS_ARGS}", BASE)
    assert grubby_command(kernels, OURS, ["iommu"]) == f"grubby --update-kernel=ALL '--args={OURS_ARGS}'"


def test_grubby_a_different_value_sets_only_that_argument():
    kernels = grubby_info(f"{BASE} {OURS_ARGS}", f"{BASE} {OURS_ARGS}".replace(PAGES_120, "4063232", 1))
    assert grubby_command(kernels, OURS, ["iommu"]) == (
        f"grubby --update-kernel=ALL --args=ttm.pages_limit={PAGES_120}"
    )


def test_grubby_iommu_switch_sets_pt_and_removes_amd_iommu():
    wanted, remove = kernel_args(Settings(iommu_mode="pt"), MEM_TOTAL_128, CARD, TTM)
    kernels = grubby_info(f"{BASE} {OURS_ARGS}", f"{BASE} {OURS_ARGS}")
    assert grubby_command(kernels, wanted, remove) == (
        "grubby --update-kernel=ALL --args=iommu=pt --remove-args=amd_iommu"
    )


# --- Debian/Ubuntu: /etc/default/grub -------------------------------------------------------------

DEBIAN = """# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Debian} ) 2>/dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""

# Uncomment to disable graphical terminal
#GRUB_TERMINAL=console
"""


def sourced(text: str, tmp_path: Path) -> tuple[str, str]:
    """(GRUB_CMDLINE_LINUX_DEFAULT, GRUB_CMDLINE_LINUX) after sh sources the text, as grub-mkconfig does."""
    path = tmp_path / "grub"
    path.write_text(text)
    proc = subprocess.run(
        ["sh", "-c", '. "$1" && printf "%s\\n%s" "$GRUB_CMDLINE_LINUX_DEFAULT" "$GRUB_CMDLINE_LINUX"', "_", path],
        capture_output=True, text=True, check=True,
    )
    default, _, linux = proc.stdout.partition("\n")
    return default, linux


def edit(text: str, wanted=None, remove=("iommu",)) -> str:
    """edit_grub_default, checked to be idempotent."""
    wanted = OURS if wanted is None else wanted
    once = edit_grub_default(text, wanted, list(remove))
    assert edit_grub_default(once, wanted, list(remove)) == once
    return once


def test_debian_default_file_gets_the_arguments_after_quiet(tmp_path):
    new = edit(DEBIAN)
    assert new == DEBIAN.replace('DEFAULT="quiet"', f'DEFAULT="quiet {OURS_ARGS}"')
    assert sourced(new, tmp_path) == (f"quiet {OURS_ARGS}", "")


def test_other_args_stay_in_order_and_ours_are_replaced_where_they_stand(tmp_path):
    text = DEBIAN.replace('"quiet"', '"quiet splash ttm.pages_limit=4063232 mitigations=off iommu=pt loglevel=3"')
    new = edit(text)
    assert sourced(new, tmp_path)[0] == (
        f"quiet splash ttm.pages_limit={PAGES_120} mitigations=off loglevel=3 "
        f"ttm.page_pool_size={PAGES_120} amd_iommu=off"
    )


def test_repeated_keys_keep_the_first_place_only(tmp_path):
    text = DEBIAN.replace('"quiet"', '"ttm.pages_limit=1 quiet ttm.pages_limit=2 amd_iommu=on amd_iommu=off"')
    assert sourced(edit(text), tmp_path)[0] == (
        f"ttm.pages_limit={PAGES_120} quiet amd_iommu=off ttm.page_pool_size={PAGES_120}"
    )


def test_flags(tmp_path):
    wanted = {"nowatchdog": None, "amd_pstate": "active"}
    text = DEBIAN.replace('"quiet"', '"quiet nowatchdog=1 amd-pstate=passive"')
    assert sourced(edit(text, wanted, ()), tmp_path)[0] == "quiet nowatchdog amd_pstate=active"
    text = DEBIAN.replace('"quiet"', '"nowatchdog quiet amd_pstate=active"')
    assert edit(text, wanted, ()) == text


@pytest.mark.parametrize(
    "line, expected",
    [
        ("GRUB_CMDLINE_LINUX_DEFAULT='quiet splash'", f"GRUB_CMDLINE_LINUX_DEFAULT='quiet splash {OURS_ARGS}'"),
        ("GRUB_CMDLINE_LINUX_DEFAULT=quiet", f'GRUB_CMDLINE_LINUX_DEFAULT="quiet {OURS_ARGS}"'),
        ("GRUB_CMDLINE_LINUX_DEFAULT=", f'GRUB_CMDLINE_LINUX_DEFAULT="{OURS_ARGS}"'),
        ('GRUB_CMDLINE_LINUX_DEFAULT=""', f'GRUB_CMDLINE_LINUX_DEFAULT="{OURS_ARGS}"'),
        ('  export GRUB_CMDLINE_LINUX_DEFAULT="quiet"  # tuned', f'  export GRUB_CMDLINE_LINUX_DEFAULT="quiet {OURS_ARGS}"  # tuned'),
        ('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash"',
         f'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT splash {OURS_ARGS}"'),
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet dyndbg=\\"file drm* +p\\" iommu=pt"',
         f'GRUB_CMDLINE_LINUX_DEFAULT="quiet dyndbg=\\"file drm* +p\\" {OURS_ARGS}"'),
    ],
)
def test_quotes(line, expected, tmp_path):
    new = edit(DEBIAN.replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', line))
    assert new == DEBIAN.replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', expected)
    assert sourced(new, tmp_path)[0].endswith(OURS_ARGS)


def test_missing_and_commented_lines_get_a_new_line_at_the_end(tmp_path):
    text = DEBIAN.replace('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', '#GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"')
    new = edit(text)
    assert new == text + f'GRUB_CMDLINE_LINUX_DEFAULT="{OURS_ARGS}"\n'
    assert sourced(new, tmp_path)[0] == OURS_ARGS
    assert edit("GRUB_TIMEOUT=5") == f'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="{OURS_ARGS}"\n'
    assert edit("") == f'GRUB_CMDLINE_LINUX_DEFAULT="{OURS_ARGS}"\n'


def test_grub_cmdline_linux_is_edited_in_place_never_appended_to(tmp_path):
    text = DEBIAN.replace('GRUB_CMDLINE_LINUX=""', 'GRUB_CMDLINE_LINUX="rd.luks=0 iommu=pt amd_iommu=off ttm.pages_limit=1"')
    new = edit(text)
    assert sourced(new, tmp_path) == (
        f"quiet ttm.page_pool_size={PAGES_120}",
        f"rd.luks=0 amd_iommu=off ttm.pages_limit={PAGES_120}",
    )


def test_an_unreadable_value_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="line 7"):
        edit_grub_default(DEBIAN.replace('"quiet"', '"quiet'), OURS, ["iommu"])
    with pytest.raises(ValueError, match="GRUB_CMDLINE_LINUX_DEFAULT"):
        edit_grub_default('GRUB_CMDLINE_LINUX_DEFAULT="a"b c\n', OURS, [])


def test_ubuntu_cloud_image_drop_in(tmp_path):
    drop_in = '# Cloud Image specific Grub settings for Generic Cloud Images\n' \
              'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n'
    assert sourced(edit(drop_in), tmp_path)[0] == f"console=tty1 console=ttyS0 {OURS_ARGS}"


# --- the shell it runs ----------------------------------------------------------------------------

GRUB_CFG = """### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-0f6e' {
	load_video
	insmod ext2
	echo	'Loading Linux 6.1.0-50-cloud-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/loop3 ro  quiet %s
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-50-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-0f6e' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-cloud-amd64 (recovery mode)' {
		linux	/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/loop3 ro single
	}
}
"""


def check_cfg(tmp_path: Path, args: str | None, remove=("iommu",)) -> subprocess.CompletedProcess:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(GRUB_CFG % args if args is not None else "set default=0\n")
    return subprocess.run(["sh", "-c", cfg_check_script(OURS, list(remove), str(cfg))], capture_output=True, text=True)


def test_cfg_check_passes_when_the_default_entry_has_the_arguments(tmp_path):
    assert check_cfg(tmp_path, OURS_ARGS).returncode == 0
    assert check_cfg(tmp_path, f"ttm.pages_limit=1 {OURS_ARGS}").returncode == 0  # the last one counts


@pytest.mark.parametrize(
    "args, says",
    [
        ("", f"lacks ttm.pages_limit={PAGES_120}"),
        (f"{OURS_ARGS} ttm.pages_limit=4063232", f"lacks ttm.pages_limit={PAGES_120}"),
        (f"{OURS_ARGS} iommu=pt", "still has iommu=pt"),
        (None, "no linux line"),
    ],
)
def test_cfg_check_says_what_the_default_entry_lacks(tmp_path, args, says):
    proc = check_cfg(tmp_path, args)
    assert proc.returncode == 1
    assert says in proc.stdout


def test_apply_script_is_valid_sh():
    for new_text in (edit(DEBIAN), None):
        script = apply_script("/etc/default/grub", new_text, OURS, ["iommu"])
        assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_grub_default_fact_command_finds_the_effective_file(tmp_path):
    etc, cfg = tmp_path / "default", tmp_path / "grub.cfg"
    (etc / "grub.d").mkdir(parents=True)
    command = GrubDefault().command().replace("/etc/default", str(etc)).replace("/boot/grub/grub.cfg", str(cfg))

    def run() -> dict:
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
        assert proc.stderr == ""
        return GrubDefault().process(proc.stdout.splitlines())

    assert run() == {"path": f"{etc}/grub", "text": None, "cfg_args": None}
    (etc / "grub").write_text(DEBIAN)
    (etc / "grub.d" / "init-select.cfg").write_text("# nothing\n")
    cfg.write_text(GRUB_CFG % OURS_ARGS)
    assert run() == {"path": f"{etc}/grub", "text": DEBIAN,
                     "cfg_args": parse_cmdline(f"root=/dev/loop3 ro quiet {OURS_ARGS}")}
    (etc / "grub.d" / "50-cloudimg-settings.cfg").write_text('GRUB_CMDLINE_LINUX_DEFAULT="console=tty1"\n')
    assert run()["path"] == f"{etc}/grub.d/50-cloudimg-settings.cfg"


# -- systemd-boot and kernelstub -----------------------------------------------------------------


def test_kernel_cmdline_replaces_ours_where_they_stand_and_appends_the_missing():
    wanted, remove = {"ttm.pages_limit": "31457280", "amd_iommu": "off"}, ["iommu"]
    text = 'root=UUID=ab ro ttm.pages_limit=1 iommu=pt dyndbg="file drm* +p" quiet\n'
    assert kernel_cmdline_text(text, [], wanted, remove) == \
        'root=UUID=ab ro ttm.pages_limit=31457280 dyndbg="file drm* +p" quiet amd_iommu=off\n'


def test_kernel_cmdline_without_the_file_starts_from_the_running_kernel_as_kernel_install_does():
    running = parse_cmdline('BOOT_IMAGE=/vmlinuz-6.17 root=/dev/nvme0n1p2 ro dyndbg="a b" initrd=/initrd.img')
    assert kernel_cmdline_text(None, running, {"amd_iommu": "off"}, []) == \
        'root=/dev/nvme0n1p2 ro dyndbg="a b" amd_iommu=off\n'


def test_kernel_cmdline_text_with_everything_there_is_the_same_words():
    text = "root=UUID=ab amd_iommu=off\n"
    assert kernel_cmdline_text(text, [], {"amd_iommu": "off"}, ["iommu"]) == text


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        ("quiet splash", "kernelstub -a 'ttm.pages_limit=31457280 amd_iommu=off'"),
        ("quiet ttm.pages_limit=100 iommu=pt",
         "kernelstub -d 'ttm.pages_limit=100 iommu=pt' -a 'ttm.pages_limit=31457280 amd_iommu=off'"),
        ("quiet ttm.pages_limit=31457280 amd_iommu=off iommu=pt", "kernelstub -d iommu=pt"),
    ],
)
def test_kernelstub_command_deletes_the_old_values_and_adds_ours(running, expected):
    wanted = {"ttm.pages_limit": "31457280", "amd_iommu": "off"}
    assert kernelstub_command(parse_cmdline(running), wanted, ["iommu"]) == expected


def test_the_systemd_boot_script_is_valid_sh_and_quotes_the_file_content():
    script = systemd_boot_script("root=UUID=ab ro $(reboot) 'x'\n", {"amd_iommu": "off"}, ["iommu"])
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "$(reboot)" not in script  # the content travels base64-encoded
    assert "kernel-install add" in script and 'backup="$f.halo-provision-' in script
