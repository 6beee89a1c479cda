"""deploys.checks.judge: what a host shows, against what its settings want, row by row."""

from dataclasses import replace

import pytest

from deploys.settings import Settings
from deploys.checks import HostFacts, judge
from deploys.report import table

GIB = 1 << 30
TUNED = HostFacts(
    distro="ubuntu",
    kernel={"release": "6.18.9-061809-generic", "version": "6.18.9"},
    gpu_memory=[{"card": "card1", "vram_total": 512 << 20, "vram_used": 1, "gtt_total": 120 * GIB, "gtt_used": 1}],
    ttm={"module": "ttm", "pages_limit": 31457280, "page_pool_size": 31457280},
    kfd_nodes=[{"node": 1, "gfx_target_version": 110501, "gfx_target": "gfx1151", "simd_count": 80,
                "mem_bank_bytes": 120 * GIB}],
    iommu={"mode": "off", "groups": 0, "types": []},
    firmware={"linux-firmware": "20240318.git3b128b60-0ubuntu2.3"},
    mes=[{"dri": "0", "mes": 0x80, "mes_kiq": 0x6C}],
    rocm="7.1.1",
    mem_total=131334144 * 1024,  # 128 GiB box, 512 MiB carve-out
)


def rows(facts: HostFacts, **settings) -> dict[str, tuple[str, str]]:
    report = judge(facts, Settings(**settings))
    return {r.subject: (r.verdict, r.value + " " + r.why) for r in report.rows}


def with_card(**values) -> HostFacts:
    return replace(TUNED, gpu_memory=[{**TUNED.gpu_memory[0], **values}])


def test_a_tuned_host_passes_every_row():
    report = judge(TUNED, Settings())
    assert report.failures == []
    assert {r.verdict for r in report.rows} <= {"ok", "info"}
    assert "PASS" in table(report).splitlines()[0]


@pytest.mark.parametrize(
    ("facts", "settings", "subject", "verdict", "words"),
    [
        (replace(TUNED, kernel={"release": "6.14.0-37-generic", "version": "6.14.0"}), {}, "kernel", "FAIL",
         ["kernel_min_version 6.16.9", "15.5 GiB", "hwe"]),
        (replace(TUNED, kernel={"release": "6.17.0-14-generic", "version": "6.17.0"}), {}, "kernel", "WARN",
         ["6.18.4"]),
        (replace(TUNED, distro="fedora", kernel={"release": "6.15.9-201.fc42.x86_64", "version": "6.15.9"}),
         {}, "kernel", "FAIL", ["dnf upgrade"]),
        (with_card(gtt_total=16642998272), {}, "GTT", "FAIL", ["kernel is too old", "reboot pending"]),
        (with_card(gtt_total=96 * GIB), {}, "GTT", "FAIL", ["other ttm arguments"]),
        (with_card(gtt_total=96 * GIB), {"ttm_gib": 96}, "GTT", "ok", ["wanted 96 GiB: ttm_gib"]),
        (with_card(vram_total=96 * GIB), {}, "VRAM carve-out", "FAIL", ["96.00 GiB", "BIOS UMA"]),
        (replace(TUNED, ttm={"module": "amdttm", "pages_limit": 4063232, "page_pool_size": 4063232}), {},
         "TTM pages_limit", "FAIL", ["wanted 31457280"]),
        (replace(TUNED, ttm=None), {}, "TTM pages_limit", "FAIL", ["amdgpu is not loaded"]),
        (replace(TUNED, kfd_nodes=[]), {}, "GPU", "FAIL", ["no GPU node"]),
        (TUNED, {"gpu_targets": ["gfx1100"]}, "GPU", "FAIL", ["gfx1151"]),
        (replace(TUNED, gpu_memory=[]), {}, "GPU", "FAIL", ["amdgpu"]),
        (replace(TUNED, mes=[{"dri": "0", "mes": 0x83, "mes_kiq": 0x6C}]), {}, "MES firmware", "FAIL",
         ["0x83", "20251125"]),
        (replace(TUNED, mes=None), {}, "MES firmware", "WARN", ["not checked", "debugfs", "unverified"]),
        (replace(TUNED, distro="fedora", firmware={"linux-firmware": "20260110-1.fc43"}, mes=None), {},
         "MES firmware", "info", ["not checked", "debugfs"]),
        (replace(TUNED, distro="fedora", firmware={"linux-firmware": "20251125-1.fc43"}), {}, "firmware", "FAIL",
         ["20251125", "firmware_bad_snapshots", "dnf upgrade"]),
        (replace(TUNED, distro="fedora", firmware={"amd-gpu-firmware": "20251111-1.fc43"}), {}, "firmware", "ok",
         []),
        (replace(TUNED, distro="fedora", firmware={"linux-firmware": "20260110-1.fc43"}), {}, "firmware", "ok",
         []),
        (TUNED, {}, "firmware", "info", ["not compared"]),
        (replace(TUNED, iommu={"mode": "translated", "groups": 12, "types": ["DMA-FQ"]}), {}, "IOMMU", "FAIL",
         ["wants off"]),
        (replace(TUNED, iommu={"mode": "translated", "groups": 12, "types": ["DMA-FQ"]}), {"iommu_mode": "keep"},
         "IOMMU", "ok", []),
        (replace(TUNED, iommu={"mode": "passthrough", "groups": 12, "types": ["identity"]}), {"iommu_mode": "pt"},
         "IOMMU", "ok", []),
    ],
)
def test_each_row_says_what_is_wrong(facts, settings, subject, verdict, words):
    got_verdict, text = rows(facts, **settings)[subject]
    assert got_verdict == verdict, text
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} missing from {text!r}"


def test_without_a_gpu_memory_rows_are_not_guessed():
    got = rows(replace(TUNED, gpu_memory=[], kfd_nodes=[]))
    assert "GTT" not in got and "VRAM carve-out" not in got


# -- the head's reach to the RPC servers (facts.firewall.RpcReach) ------------------------------------

from deploys.checks import rpc_reach_row  # noqa: E402

ACTIVE = {"active": "active", "enabled": "enabled"}


def reach(**endpoints: tuple[str, str]) -> dict:
    return {"user": True, "endpoints": {ep.replace("_", ":"): {"user": u, "other": o} for ep, (u, o) in endpoints.items()}}


def test_reach_ok_when_only_llama_server_connects():
    row = rpc_reach_row(reach(a_1=("open", "closed"), b_1=("open", "closed")), ACTIVE)
    assert (row.verdict, row.value) == ("ok", "2/2 RPC servers reached by llama-server, no other user")


def test_reach_fails_when_another_user_connects():
    row = rpc_reach_row(reach(a_1=("open", "open")), ACTIVE)
    assert row.verdict == "FAIL" and "any local user of the head connects to a:1" in row.why
    assert "deploys/firewall.py" in row.why


def test_reach_fails_when_llama_server_cannot_connect_and_warns_while_it_serves():
    assert rpc_reach_row(reach(a_1=("closed", "closed")), {"active": "inactive", "enabled": "enabled"}).verdict == "FAIL"
    row = rpc_reach_row(reach(a_1=("closed", "closed")), ACTIVE)
    assert row.verdict == "WARN" and "one client at a time" in row.why


def test_reach_not_deployed_is_a_warning():
    assert rpc_reach_row({"user": False, "endpoints": {}}, None).verdict == "WARN"
    # deploys/groups.py makes llama-server's user before deploys/head.py installs its unit
    row = rpc_reach_row(reach(a_1=("closed", "closed")), {"active": "inactive", "enabled": "not-found"})
    assert (row.value, row.verdict, row.why) == ("not deployed", "WARN",
                                                 "no llama-server unit on the head: run deploys/head.py")


def test_reach_by_other_users_fails_even_before_the_head_is_deployed():
    row = rpc_reach_row({"user": False, "endpoints": {"a:1": {"user": "closed", "other": "open"}}}, None)
    assert row.verdict == "FAIL" and "any local user of the head connects to a:1" in row.why


def test_reach_while_llama_server_holds_the_servers_checks_other_users_only():
    row = rpc_reach_row(reach(a_1=("skipped", "closed")), ACTIVE)
    assert (row.verdict, row.value) == ("ok", "1 RPC servers held by the running llama-server, no other user")
    assert rpc_reach_row(reach(a_1=("skipped", "open")), ACTIVE).verdict == "FAIL"


# -- which RPC servers the running head is connected to (facts.llama_server.LlamaServerLinks) ------

from deploys.checks import cluster_build_row, rpc_links_row, running_build_row  # noqa: E402

A, B = "10.151.0.12:50052", "10.151.0.13:50052"


def links(rpc, peers, health=200, pid=4186) -> dict:
    return {"unit": "halo-llama-server.service", "health": health,
            "links": {"pid": pid, "rpc": rpc, "peers": peers}}


def test_links_ok_when_llama_server_holds_every_rpc_server_of_the_inventory():
    row = rpc_links_row(links([A, B], [B, A]), [A, B])
    assert (row.verdict, row.value) == ("ok", f"2/2 RPC servers connected: {A}, {B}")


def test_links_fail_with_the_restart_when_a_server_dropped_the_connection():
    row = rpc_links_row(links([A, B], [A]), [A, B])
    assert row.verdict == "FAIL" and row.value == f"1/2 RPC servers connected: {A}"
    assert f"not connected to {B}" in row.why and "systemctl restart halo-llama-server.service" in row.why


def test_links_fail_when_the_running_list_is_not_the_inventorys():
    row = rpc_links_row(links([A, "10.151.0.14:50052"], [A, "10.151.0.14:50052"]), [A, B])
    assert row.verdict == "FAIL" and f"started without {B}" in row.why
    assert "10.151.0.14:50052, which the inventory no longer lists" in row.why and "deploys/head.py" in row.why


def test_links_while_loading_warn_and_a_stopped_head_is_left_to_the_head_row():
    assert rpc_links_row(links([A, B], [A], health=503), [A, B]).verdict == "WARN"
    assert rpc_links_row(links(None, [], pid=None), [A, B]).value == "llama-server not running"


def test_links_with_auto_accept_the_first_servers_of_the_list():
    assert rpc_links_row(links([A], [A]), [A, B], auto=True).verdict == "ok"
    assert rpc_links_row(links([B], [B]), [A, B], auto=True).verdict == "FAIL"


# -- the build the units run, and one build and protocol across the cluster ------------------------

INSTALL = {"current": {"id": "3281634b448a-261b62d4"}, "ref_commit": None}


def run(build, protocol="7.0.0", started=None, pid=812) -> dict:
    return {"pid": pid, "exe": f"/opt/llama.cpp/builds/{build}/bin/x", "build": build,
            "stamp_protocol": protocol, "started_protocol": started}


def test_running_build_is_current_or_fails_with_the_restart():
    ok = running_build_row({"halo-rpc@50052.service": run("3281634b448a-261b62d4")}, INSTALL)
    assert (ok.verdict, ok.value) == ("ok", "3281634b448a-261b62d4 (1 unit)")
    row = running_build_row({"halo-rpc@50052.service": run("0123456789ab-1a2b3c4d")}, INSTALL)
    assert row.verdict == "FAIL" and row.value == "halo-rpc@50052.service runs 0123456789ab-1a2b3c4d"
    assert "current is 3281634b448a-261b62d4" in row.why and "deploys/rpc_worker.py" in row.why
    assert running_build_row({"halo-rpc@50052.service": run(None, pid=None)}, INSTALL) is None


def named(name: str, **data) -> Settings:
    s = Settings(**data)
    s._host_name = name
    return s


def cluster(head_run, worker_run) -> dict[str, HostFacts]:
    return {"halo1": replace(TUNED, running={"halo-llama-server.service": head_run}),
            "halo2": replace(TUNED, running={"halo-rpc@50052.service": worker_run})}


HEAD_S, WORKERS = named("halo1"), [named("halo2", rpc_bind_address="10.151.0.12")]


def test_cluster_build_ok_when_head_and_servers_run_one_build():
    row = cluster_build_row(HEAD_S, cluster(run("a" * 12 + "-1a2b3c4d"), run("a" * 12 + "-1a2b3c4d", started="7.0.0")),
                            WORKERS)
    assert row.verdict == "ok" and row.value.endswith("RPC protocol 7.0.0, same on its 1 RPC server")


def test_cluster_build_explains_a_protocol_mismatch():
    row = cluster_build_row(HEAD_S, cluster(run("a" * 12 + "-1a2b3c4d", "7.0.0"), run("b" * 12 + "-1a2b3c4d", None,
                                                                                       started="6.1.0")), WORKERS)
    assert row.verdict == "FAIL"
    assert "halo2 halo-rpc@50052.service runs build bbbbbbbbbbbb-1a2b3c4d with RPC protocol 6.1.0" in row.why
    assert "RPC server version mismatch" in row.why and "deploys/full.py" in row.why


def test_cluster_build_explains_another_build_with_the_same_protocol():
    row = cluster_build_row(HEAD_S, cluster(run("a" * 12 + "-1a2b3c4d"), run("b" * 12 + "-1a2b3c4d", started="7.0.0")),
                            WORKERS)
    assert row.verdict == "FAIL" and "(RPC protocol 7.0.0): another commit or flags" in row.why


def test_cluster_build_says_nothing_while_the_head_does_not_run():
    assert cluster_build_row(HEAD_S, cluster(run(None, pid=None), run("b" * 12 + "-1a2b3c4d")), WORKERS) is None
