"""The lab itself: hosts boot with the chosen Debian release and fake GPU, and stop cleanly."""

import time

from facts.memory import GIB
from lab import lab
from lab.gpu import GpuProfile


def test_hosts_run_their_debian_release_and_answer_ssh(lab_hosts):
    for host in lab_hosts:
        out = lab.ssh(host, ". /etc/os-release; echo $VERSION_ID $(hostname) $(systemctl is-system-running)")
        assert out.stdout.split() == [host.release, host.name, "running"], out.stdout


def test_fake_gpu_files_are_at_the_kernel_paths(lab_hosts):
    out = lab.ssh(lab_hosts[0], "cat /sys/class/drm/card1/device/mem_info_gtt_total "
                  "/sys/module/ttm/parameters/pages_limit /sys/class/kfd/kfd/topology/nodes/1/properties; "
                  "ls /sys/class/net /sys/module | wc -l")
    lines = out.stdout.split("\n")
    assert lines[0] == str(120 * GIB)
    assert lines[1] == str(120 * 262144)
    assert "gfx_target_version 110501" in lines
    assert int(lines[-2]) > 10, "the real /sys/class and /sys/module entries must stay visible"


def test_fake_values_change_while_the_host_runs(lab_hosts, set_gpu):
    set_gpu("halo2", GpuProfile(gtt_total=16642998272, ttm_module="amdttm"))
    out = lab.ssh("halo2", "cat /sys/class/drm/card1/device/mem_info_gtt_total; "
                  "ls /sys/module/ttm/parameters | wc -l; cat /sys/module/amdttm/parameters/pages_limit")
    assert out.stdout.split() == ["16642998272", "0", str(120 * 262144)]


def test_stop_leaves_nothing_behind_and_a_cached_start_is_quick(lab_hosts):
    lab.stop()
    assert lab.leftovers() == {"processes": [], "mounts": [], "links": [], "netns": [], "nft": [], "disks": []}
    started = time.monotonic()
    hosts = lab.start(lab.parse_host_args([f"{h.name}:{h.release}" for h in lab_hosts]))
    seconds = time.monotonic() - started
    print(f"lab: {len(hosts)} hosts started from the cache in {seconds:.1f} s")
    assert [h.name for h in hosts] == [h.name for h in lab_hosts]
    assert all(lab.is_alive(h) for h in hosts)


def test_hosts_reach_the_debian_archive_through_the_lab_nat(lab_hosts):
    out = lab.ssh(lab_hosts[1], "apt-get update -qq && apt-cache policy grub2-common | grep -c Candidate",
                  timeout=300)
    assert out.stdout.strip() == "1", out.stdout + out.stderr
