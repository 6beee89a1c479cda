"""Judging a host: what its facts show against what its settings want, as rows. Pure: facts and
Settings in, rows out, so unit tests and the verify suite feed it facts; deploys/report.py prints them.

    row = kernel_row("ubuntu", {"release": "6.14.0-37-generic", "version": "6.14.0"}, Settings())
    row.verdict, row.why    # "FAIL", "older than kernel_min_version 6.16.9: ... linux-generic-hwe-24.04 ..."
    report = judge(read_facts(s), s)   # every row of one host (deploys/verify.py reads the facts)

The rule: a function here only computes verdicts; printing, failing a host and reading facts are done
by the callers (deploys/kernel.py, firmware.py and verify.py with deploys/report.py; tests/verify).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from deploys.llama_cpp import cmake_flags
from deploys.settings import GIB, TTM_PAGES_PER_GIB, Settings
from deploys.topology import servers_for
from facts.firmware import firmware_date
from facts.kernel import kernel_version, ubuntu_kernel
from facts.memory import host_installed_ram

MES_GOOD, MES_BAD = 0x80, 0x83
# Where the kernel minimums come from (their defaults are in group_data/all.py):
# - kernel_min_version 6.16.9: older mainline kernels cap GTT near 15.5 GiB whatever ttm.pages_limit says;
# - kernel_recommended_version 6.18.4: the gfx1151 stability fixes; AMD's Strix Halo support table lists
#   ROCm 7.2.x (not 7.1.x) on it;
# - kernel_oem_min_version 6.14.0-1018: AMD's Strix Halo support table lists Ubuntu 24.04's OEM kernels
#   from 6.14.0-1018-oem as supported: Canonical backports the GTT and gfx1151 fixes into that series,
#   so its upstream number (6.14) says nothing about them.
OEM_REMEDY = "apt install linux-oem-24.04c (Ubuntu 24.04's OEM kernel series) and reboot"
KERNEL_REMEDY = {
    "fedora": "dnf upgrade --refresh 'kernel*' and reboot",
    "ubuntu": "install a newer kernel (Ubuntu 24.04: apt install linux-generic-hwe-24.04; or move to 25.10+) "
    "and reboot",
    "debian": "install a newer kernel from backports (Debian 13: apt install -t trixie-backports linux-image-amd64; "
    "Debian 12: bookworm-backports stops at 6.12, so upgrade to Debian 13 first) and reboot",
}
FIRMWARE_REMEDY = {
    "fedora": "dnf upgrade --refresh linux-firmware amd-gpu-firmware",
    "ubuntu": "apt install --only-upgrade linux-firmware",
    "debian": "apt install --only-upgrade firmware-amd-graphics (from backports if needed)",
}

PAGE = 4096
# Without working ttm arguments (or on a kernel older than 6.16.9) GTT is about half of RAM,
# capped near 15.5 GiB on the older kernels; anything this far below the wanted size is that case.
GTT_STOCK_FRACTION = 0.6
IOMMU_WANTED = {"off": "off", "pt": "passthrough"}


@dataclass
class Row:
    """One judgement: subject, what was read, verdict, and the explanation when not ok."""

    subject: str
    value: str
    verdict: str = "ok"  # ok | WARN | FAIL | info
    why: str = ""


@dataclass
class HostFacts:
    """Everything verify reads from one host (each fact read once)."""

    distro: str  # family (facts.distro): debian, ubuntu, fedora, or an unknown ID
    kernel: dict | None
    gpu_memory: list[dict]
    ttm: dict | None
    kfd_nodes: list[dict]
    iommu: dict
    firmware: dict[str, str]
    mes: list[dict] | None
    rocm: str | None
    mem_total: int | None
    llama_cpp: dict | None = None  # LlamaCppInstall; None: not read
    rpc: dict | None = None  # {"ports": {port: unit}, "units": UnitStates, "listeners": TcpListeners}; None: no worker
    head: dict | None = None  # {"unit", "state" (UnitStates of it), "url", "health" (HttpStatus), "reach", "links"}; None: no head
    running: dict = field(default_factory=dict)  # RunningBuilds of its RPC servers' and llama-server's units


@dataclass
class Report:
    """The rows of one host (deploys/report.py prints them as a table)."""

    host: str
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "FAIL"]

    def add(self, subject: str, value: str, verdict: str = "ok", why: str = "") -> None:
        self.rows.append(Row(subject, value, verdict, why))


def gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.2f} GiB"


def judge(facts: HostFacts, s: Settings, expected_rpc: list[str] | None = None) -> Report:
    """Compare what a host shows with what its settings want; pure, so tests feed it facts.
    `expected_rpc`: a head's --rpc list from the inventory (deploys/topology.py rpc_list)."""
    report = Report(s.host_name)
    report.rows.append(kernel_row(facts.distro, facts.kernel, s))
    card = check_gpu(report, facts, s)
    if card is not None:
        check_memory(report, facts, s, card)
    report.rows.extend(firmware_rows(facts.distro, facts.firmware, facts.mes, s))
    check_iommu(report, facts, s)
    report.rows.append(rocm_row(facts.rocm, s))
    if facts.llama_cpp is not None:
        report.rows.append(llama_cpp_row(facts.llama_cpp, s))
        running = running_build_row(facts.running, facts.llama_cpp)
        if running is not None:
            report.rows.append(running)
    if facts.rpc is not None:
        report.rows.append(rpc_row(facts.rpc, s))
    if facts.head is not None:
        report.rows.append(head_row(facts.head))
        if facts.head.get("reach") is not None:
            report.rows.append(rpc_reach_row(facts.head["reach"], facts.head["state"]))
        if facts.head.get("links") is not None:
            report.rows.append(rpc_links_row(facts.head, expected_rpc, s.head_rpc_servers == "auto"))
    return report


def rpc_reach_row(reach: dict, state: dict | None) -> Row:
    """On a head: llama-server's user reaches every RPC server it uses; no other local user reaches any.

    A server that is busy with llama-server itself (one client at a time) may not take a second
    connection: a closed port while llama-server is active is a WARN, else a FAIL. A head without
    llama-server's unit (or user) is not deployed yet: a WARN, unless other users reach a server.
    """
    endpoints = reach["endpoints"]
    other = [ep for ep, r in endpoints.items() if r["other"] == "open"]
    unit_missing = (state or {"enabled": "not-found"})["enabled"] == "not-found"
    if not other and (not reach["user"] or unit_missing):  # llama-server's user may exist before its unit
        missing = "user" if not reach["user"] else "unit"
        return Row("RPC reach", "not deployed", "WARN", f"no llama-server {missing} on the head: run deploys/head.py")
    closed = [ep for ep, r in endpoints.items() if r["user"] == "closed"]
    shown = f"{len(endpoints) - len(closed)}/{len(endpoints)} RPC servers reached by llama-server"
    if endpoints and all(r["user"] == "skipped" for r in endpoints.values()):
        shown = f"{len(endpoints)} RPC servers held by the running llama-server"
    if other:
        return Row("RPC reach", shown, "FAIL", f"any local user of the head connects to {', '.join(other)} (the RPC "
                   "server has no authentication): run deploys/firewall.py on the head")
    if closed:
        busy = (state or {}).get("active") == "active"
        why = (f"llama-server's user cannot connect to {', '.join(closed)}"
               + (" (busy serving llama-server, one client at a time?)" if busy else "")
               + ": is the server running, and does its firewall accept the head? run deploys/rpc_worker.py")
        return Row("RPC reach", shown, "WARN" if busy else "FAIL", why)
    return Row("RPC reach", shown + ", no other user")


def rpc_links_row(head: dict, expected: list[str] | None, auto: bool = False) -> Row:
    """On a head: the RPC servers the running llama-server is connected to (its established TCP
    connections, facts.llama_server.LlamaServerLinks) against the inventory's --rpc list.

    With head_rpc_servers = "auto" the head may use the first few of that list only.
    """
    links, unit = head["links"], head["unit"]
    expected = expected or []
    if links["pid"] is None:
        return Row("RPC links", "llama-server not running", "WARN", f"see the head row: journalctl -u {unit}")
    started = links["rpc"] or []
    wanted = started if auto and started == expected[:len(started)] else expected
    connected = [ep for ep in wanted if ep in links["peers"]]
    shown = f"{len(connected)}/{len(wanted)} RPC servers connected" + (f": {', '.join(connected)}" if connected else "")
    restart = f"systemctl restart {unit}"
    unknown = [ep for ep in started if ep not in expected]
    missing = [ep for ep in wanted if ep not in started]
    if unknown or missing:
        why = []
        if missing:
            why.append(f"llama-server was started without {', '.join(missing)}")
        if unknown:
            why.append(f"it uses {', '.join(unknown)}, which the inventory no longer lists")
        return Row("RPC links", shown, "FAIL", "; ".join(why) + ": run deploys/head.py (it restarts llama-server "
                   "with the inventory's --rpc list)")
    lost = [ep for ep in wanted if ep not in links["peers"]]
    if lost and head.get("health") != 200:
        return Row("RPC links", shown, "WARN", f"llama-server is not connected to {', '.join(lost)} while it "
                   f"is not serving (/health {head.get('health') or 'no answer'}): loading, or waiting for them")
    if lost:
        return Row("RPC links", shown, "FAIL", f"llama-server is not connected to {', '.join(lost)}: that RPC server "
                   "restarted or dropped the link, and llama.cpp's RPC client does not reconnect (llama-server "
                   "aborts at its next use and systemd starts it again). To reconnect now: " + restart + "; if "
                   "the server does not accept connections, run deploys/rpc_worker.py on its host")
    return Row("RPC links", shown)


def running_build_row(running: dict, install: dict | None) -> Row | None:
    """The RPC servers and llama-server of a host run the build `current` points at (a new build is
    picked up when they restart); None when nothing of ours runs here."""
    live = {unit: r for unit, r in running.items() if r["pid"] is not None}
    if not live:
        return None
    current = build_id(install)
    other = {unit: r["build"] or r["exe"] for unit, r in live.items() if r["build"] != current}
    if not other:
        return Row("running build", f"{current} ({len(live)} unit{'s' * (len(live) > 1)})")
    fix = ("run deploys/rpc_worker.py and deploys/head.py (deploys/full.py): they restart the RPC servers, then "
           "llama-server, on the current build")
    return Row("running build", "; ".join(f"{unit} runs {b}" for unit, b in other.items()), "FAIL",
               f"current is {current or 'no build'}: {fix}")


def rpc_unit(port: int) -> str:
    return f"halo-rpc@{port}.service"


def major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def cluster_build_row(head: Settings, facts: dict[str, HostFacts], workers: list[Settings]) -> Row | None:
    """On a head: its running llama-server and every running RPC server of its --rpc list run one
    build and speak one RPC protocol version (the servers print it at start; a build's stamp records
    its source's). None when the head's llama-server does not run or was not read.

    cluster_build_row(settings(halo1), {"halo1": HostFacts, "halo2": ...}, workers_of(inventory))
    """
    from deploys.head import UNIT as HEAD_UNIT

    mine = facts[head.host_name].running.get(HEAD_UNIT) if head.host_name in facts else None
    if not mine or mine["pid"] is None:
        return None
    protocol = mine["stamp_protocol"]
    servers, problems = 0, []
    for w in workers:
        for server in servers_for(w, head.host_name):
            theirs = (facts.get(w.host_name).running if w.host_name in facts else {}).get(rpc_unit(server.port))
            if not theirs or theirs["pid"] is None:
                continue
            servers += 1
            speaks = theirs["started_protocol"] or theirs["stamp_protocol"]
            where = f"{w.host_name} {rpc_unit(server.port)} runs build {theirs['build'] or theirs['exe']}"
            if protocol and speaks and major(speaks) != major(protocol):
                problems.append(f"{where} with RPC protocol {speaks}: llama-server refuses a server whose major "
                                "version differs from its own ('RPC server version mismatch' in its journal)")
            elif theirs["build"] != mine["build"]:
                problems.append(f"{where}" + (f" (RPC protocol {speaks})" if speaks else "") + ": another commit "
                                "or flags than llama-server's; the protocol version does not follow every change of "
                                "ggml's operations, so the cluster must run one build")
    if not servers:
        return None
    shown = f"llama-server {mine['build'] or mine['exe']}" + (f", RPC protocol {protocol}" if protocol else "")
    if problems:
        return Row("cluster build", shown, "FAIL", "; ".join(problems) + f" (llama-server: {shown}). Run "
                   "deploys/full.py: it builds llama_cpp_ref once, copies it to every host, then restarts the RPC "
                   "servers and llama-server on it")
    return Row("cluster build", f"{shown}, same on its {servers} RPC server{'s' * (servers > 1)}")


def rpc_unit_problems(rpc: dict) -> list[str]:
    """Each RPC server's unit must be active and enabled."""
    states = [(unit, rpc["units"].get(unit, {"active": "inactive", "enabled": "not-found"}))
              for unit in rpc["ports"].values()]
    return [f"{unit} is {st['active']} and {st['enabled']}" for unit, st in states
            if st["active"] != "active" or st["enabled"] != "enabled"]


def rpc_listen_problems(rpc: dict, s: Settings) -> list[str]:
    """Each RPC server must listen on rpc_bind_address itself (not on every address)."""
    listening = {(entry["address"], entry["port"]) for entry in rpc["listeners"]}
    return [f"nothing listens on {s.rpc_bind_address}:{port}" for port in rpc["ports"]
            if (str(s.rpc_bind_address), port) not in listening]


def rpc_row(rpc: dict, s: Settings) -> Row:
    """The worker's RPC servers: units active, listening on rpc_bind_address; WARN when not deployed."""
    shown = f"{s.rpc_bind_address}:{','.join(map(str, rpc['ports']))}"
    if all(rpc["units"].get(u, {}).get("enabled", "not-found") == "not-found" for u in rpc["ports"].values()):
        return Row("RPC", f"{shown} not deployed", "WARN", "no RPC server unit: run deploys/rpc_worker.py")
    problems = rpc_unit_problems(rpc) + rpc_listen_problems(rpc, s)
    if problems:
        return Row("RPC", shown, "FAIL", f"{'; '.join(problems)}: run deploys/rpc_worker.py "
                                         f"(journalctl -u {next(iter(rpc['ports'].values()))} says why)")
    return Row("RPC", shown)


def head_row(head: dict) -> Row:
    """llama-server's /health must answer 200; WARN when its unit is not deployed."""
    status = head["health"]
    if status == 200:
        return Row("head", "/health 200")
    state = head["state"] or {"active": "inactive", "enabled": "not-found"}
    if state["enabled"] == "not-found":
        return Row("head", "not deployed", "WARN", f"no {head['unit']}: run deploys/head.py")
    return Row("head", f"/health {status or 'no answer'}", "FAIL",
               f"GET {head['url']} answered {status or 'nothing'} (503 while the model loads); {head['unit']} is "
               f"{state['active']}: journalctl -u {head['unit']} says why; run deploys/head.py")


def rocm_row(rocm: str | None, s: Settings) -> Row:
    """ROCm is needed by the HIP backend; from AMD's repository or a tarball it must be `rocm_version`."""
    if s.llama_cpp_backend != "hip":
        return Row("ROCm", rocm or "not installed", "info", f"not needed: llama_cpp_backend is {s.llama_cpp_backend!r}")
    if rocm is None:
        return Row("ROCm", "not installed", "WARN", "llama.cpp's HIP backend needs ROCm: run deploys/rocm.py")
    wanted = s.rocm_version.split(".")
    if s.rocm_source != "distro" and rocm.split(".")[: len(wanted)] != wanted:
        return Row("ROCm", rocm, "FAIL",
                   f"rocm_version is {s.rocm_version} (rocm_source {s.rocm_source!r}): run deploys/rocm.py")
    return Row("ROCm", rocm)


def build_id(install: dict | None) -> str | None:
    """The id (commit12-flagshash) of the llama.cpp build a host serves, from LlamaCppInstall."""
    return ((install or {}).get("current") or {}).get("id")


def llama_cpp_row(install: dict, s: Settings) -> Row:
    """The build `current` points at must be llama_cpp_ref with this host's backend and CMake flags."""
    current = install.get("current")
    if current is None:
        return Row("llama.cpp", "not built", "WARN",
                   f"no build under {s.llama_cpp_prefix}/current: run deploys/llama_cpp.py")
    shown = f"{current['id']} ({current['ref']}, {current['backend']})"
    wanted = {"ref": s.llama_cpp_ref, "backend": s.llama_cpp_backend, "flags": cmake_flags(s)}
    differs = [f"{key} {current[key]!r}, wanted {value!r}" for key, value in wanted.items() if current[key] != value]
    if differs:
        return Row("llama.cpp", shown, "FAIL", f"the build that serves has {'; '.join(differs)}: run deploys/llama_cpp.py")
    return Row("llama.cpp", shown)


def same_build_row(name: str, builds: dict[str, dict | None], heads: list[str]) -> Row | None:
    """FAIL when `name` serves another llama.cpp build than the head (or than most hosts).

    RPC client and servers must speak one protocol, so the whole cluster runs one build. None
    when there is nothing to compare (this host or all others not built).

    >>> same_build_row("halo2", {"halo1": {"current": {"id": "a"}}, "halo2": {"current": {"id": "b"}}}, ["halo1"]).why
    'halo1 (head) serves build a: RPC needs one llama.cpp build on every host; run deploys/llama_cpp.py'
    """
    ids = {n: build_id(b) for n, b in builds.items() if build_id(b)}
    if name not in ids or len(ids) < 2:
        return None
    head = next((h for h in heads if h in ids), None)
    reference = ids[head] if head else Counter(ids.values()).most_common(1)[0][0]
    if ids[name] == reference:
        return Row("same build", f"same on {len([i for i in ids.values() if i == reference])} of {len(ids)} hosts")
    owner = f"{head} (head)" if head else ", ".join(sorted(n for n, i in ids.items() if i == reference))
    return Row("same build", ids[name], "FAIL",
               f"{owner} serves build {reference}: RPC needs one llama.cpp build on every host; run deploys/llama_cpp.py")


def check_gpu(report: Report, facts: HostFacts, s: Settings) -> dict | None:
    """The amdgpu card and its KFD node; returns the card whose memory the other rows judge."""
    if not facts.gpu_memory:
        report.add("GPU", "no amdgpu card", "FAIL",
                   "no card in /sys/class/drm is driven by amdgpu: is amdgpu loaded (lsmod | grep amdgpu)?")
        return None
    targets = [n["gfx_target"] for n in facts.kfd_nodes]
    cards = ", ".join(c["card"] for c in facts.gpu_memory)
    if not targets:
        report.add("GPU", f"{cards}; no KFD GPU node", "FAIL",
                   "ROCm cannot see the GPU: /sys/class/kfd has no GPU node (amdgpu without KFD/HSA support?)")
    elif not set(targets) & set(s.gpu_targets):
        report.add("GPU", f"{cards}; {', '.join(targets)}", "FAIL",
                   f"gpu_targets is {s.gpu_targets}: builds for it would not run on this GPU; "
                   f"set gpu_targets to {targets}")
    else:
        simds = sum(n["simd_count"] or 0 for n in facts.kfd_nodes)
        report.add("GPU", f"{cards}; {', '.join(targets)} ({simds} SIMDs)")
    return facts.gpu_memory[0]


def check_memory(report: Report, facts: HostFacts, s: Settings, card: dict) -> None:
    vram, gtt = card["vram_total"], card["gtt_total"]
    carve_max = s.vram_carveout_max_gib * GIB
    if vram is None:
        report.add("VRAM carve-out", "?", "FAIL", f"{card['card']}: mem_info_vram_total is unreadable")
    elif vram > carve_max:
        report.add("VRAM carve-out", gib(vram), "FAIL",
                   f"above vram_carveout_max_gib {s.vram_carveout_max_gib}: the carve-out is taken from the "
                   "OS; lower the BIOS UMA frame buffer setting (\"iGPU memory size\") to 512 MiB or Auto, "
                   "the GPU gets the memory through GTT instead")
    else:
        report.add("VRAM carve-out", gib(vram))

    if facts.mem_total is None:
        report.add("GTT", gib(gtt), "FAIL", "cannot read MemTotal from /proc/meminfo to size ttm_gib")
        return
    installed = host_installed_ram(facts.mem_total, facts.gpu_memory)
    wanted_gib = s.wanted_ttm_gib(installed)
    wanted = wanted_gib * GIB
    source = "ttm_gib" if s.ttm_gib is not None else f"{installed // GIB} GiB RAM - os_reserve_gib"
    shown = f"{gib(gtt)} (wanted {wanted_gib} GiB: {source})"
    if gtt is None:
        report.add("GTT", shown, "FAIL", f"{card['card']}: mem_info_gtt_total is unreadable")
    elif abs(gtt - wanted) <= PAGE:
        report.add("GTT", shown)
    elif gtt < wanted * GTT_STOCK_FRACTION:
        report.add("GTT", shown, "FAIL",
                   f"far below the wanted size: the kernel is too old (< {s.kernel_min_version}) or the ttm "
                   "kernel arguments are not active yet (reboot pending after deploys/grub.py?)")
    else:
        report.add("GTT", shown, "FAIL",
                   "differs from the wanted size: the running kernel was booted with other ttm arguments; "
                   "run deploys/grub.py and reboot")

    pages = (facts.ttm or {}).get("pages_limit")
    module = (facts.ttm or {}).get("module", "ttm")
    wanted_pages = wanted_gib * TTM_PAGES_PER_GIB
    if pages == wanted_pages:
        report.add("TTM pages_limit", f"{pages} ({module})")
    elif facts.ttm is None:
        report.add("TTM pages_limit", "no ttm module", "FAIL", "/sys/module/ttm is missing: amdgpu is not loaded")
    else:
        report.add("TTM pages_limit", f"{pages} ({module})", "FAIL",
                   f"wanted {wanted_pages} ({wanted_gib} GiB x {TTM_PAGES_PER_GIB}); run deploys/grub.py and "
                   "reboot")


def check_iommu(report: Report, facts: HostFacts, s: Settings) -> None:
    mode = facts.iommu["mode"]
    wanted = IOMMU_WANTED.get(s.iommu_mode)
    shown = f"{mode} ({facts.iommu['groups']} groups)"
    if wanted is None or mode == wanted:
        report.add("IOMMU", shown)
    else:
        report.add("IOMMU", shown, "FAIL",
                   f"iommu_mode {s.iommu_mode!r} wants {wanted}; run deploys/grub.py and reboot")





def kernel_row(distro: str, kernel: dict | None, s: Settings) -> Row:
    """FAIL below kernel_min_version, WARN below kernel_recommended_version; the fix for the distro.

    An Ubuntu OEM kernel (flavour ``-oem``) has its own minimum, kernel_oem_min_version (version and
    ABI number), and no warning above it: AMD supports gfx1151 on that series.

    >>> kernel_row("ubuntu", {"release": "6.14.0-1018-oem"}, Settings()).verdict
    'ok'
    """
    release = (kernel or {}).get("release", "?")
    version = kernel_version(release) if kernel else None
    remedy = KERNEL_REMEDY.get(distro, "install a newer kernel and reboot")
    if version is None:
        return Row("kernel", release, "FAIL", "cannot read the kernel release (uname -r)")
    ubuntu = ubuntu_kernel(release) if distro == "ubuntu" else None
    if ubuntu is not None and ubuntu[2] == "oem":
        if ubuntu[:2] < s.kernel_oem_min:
            return Row("kernel", release, "FAIL",
                       f"an Ubuntu OEM kernel older than kernel_oem_min_version {s.kernel_oem_min_version} "
                       f"(AMD supports gfx1151 on OEM kernels from {s.kernel_oem_min_version}-oem); "
                       f"{OEM_REMEDY}")
        return Row("kernel", f"{release} (Ubuntu OEM, at least {s.kernel_oem_min_version})")
    if version < s.kernel_min:
        return Row("kernel", release, "FAIL",
                   f"older than kernel_min_version {s.kernel_min_version}: ROCm sees only about 15.5 GiB "
                   f"of GTT on it; {remedy}")
    if version < s.kernel_recommended:
        return Row("kernel", release, "WARN",
                   f"older than {s.kernel_recommended_version}, which has the gfx1151 stability fixes "
                   f"ROCm 7.2 needs; {remedy}")
    return Row("kernel", release)


def firmware_rows(distro: str, packages: dict[str, str], mes: list[dict] | None, s: Settings) -> list[Row]:
    """The firmware package (snapshot compared on Fedora only) and the loaded MES version (where readable).

    Fedora's packages are upstream snapshots: one in firmware_bad_snapshots fails (20251125 ships MES
    0x83); any other passes, including 20251111, the rollback AMD engineers advise. Where debugfs is
    readable, the MES version the GPU runs is judged too (``mes_row``).

    >>> [r.verdict for r in firmware_rows("fedora", {"amd-gpu-firmware": "20251111-1.fc43"}, None, Settings())]
    ['ok', 'info']
    """
    shown = ", ".join(f"{n} {v}" for n, v in sorted(packages.items())) or "no firmware package"
    remedy = FIRMWARE_REMEDY.get(distro, "update the linux-firmware package")
    date_checked = distro == "fedora"
    if date_checked:
        dates = [d for d in (firmware_date(v) for v in packages.values()) if d]
        bad = sorted({d for d in dates if d in s.firmware_bad_snapshots})
        if not dates:
            package = Row("firmware", shown, "FAIL", f"no linux-firmware / amd-gpu-firmware package: {remedy}")
        elif bad:
            package = Row("firmware", shown, "FAIL",
                          f"snapshot {', '.join(map(str, bad))} is known bad (firmware_bad_snapshots): 20251125 "
                          f"ships MES 0x{MES_BAD:x}, which hangs gfx1151; {remedy} to a later snapshot, or roll "
                          "back to 20251111 as AMD engineers advise (dnf downgrade linux-firmware amd-gpu-firmware)")
        else:
            package = Row("firmware", f"{shown} (not a known-bad snapshot)")
    else:
        package = Row("firmware", shown, "info",
                      "package date not compared: Debian and Ubuntu backport fixes into old snapshot dates")
    return [package, mes_row(mes, remedy, date_checked)]


def mes_row(mes: list[dict] | None, remedy: str, date_checked: bool) -> Row:
    """FAIL on MES 0x83, WARN below 0x80; unreadable is a WARN where the package date was not compared either."""
    if mes is None:
        why = "debugfs not readable (/sys/kernel/debug/dri/*/amdgpu_firmware_info needs root and debugfs)"
        if date_checked:
            return Row("MES firmware", "not checked", "info", why)
        return Row("MES firmware", "not checked", "WARN",
                   f"{why}; the package date is not compared here either, so the GPU firmware is unverified: "
                   "run as root with debugfs mounted (mount -t debugfs none /sys/kernel/debug)")
    versions = sorted({m["mes"] for m in mes if m["mes"] is not None})
    shown = ", ".join(f"0x{v:x}" for v in versions) or "?"
    if MES_BAD in versions:
        return Row("MES firmware", shown, "FAIL",
                   f"MES 0x{MES_BAD:x} (linux-firmware 20251125) hangs gfx1151 under load; {remedy}")
    if versions and min(versions) < MES_GOOD:
        return Row("MES firmware", shown, "WARN", f"older than 0x{MES_GOOD:x}, the version known good; {remedy}")
    return Row("MES firmware", shown)
