"""Verify Strix Halo hosts: read every fact, print one table per host, fail with explanations.

    pyinfra inventories/lab.py deploys/verify.py

Each row is one subject (GPU, GTT, VRAM carve-out, TTM limit, kernel, firmware, IOMMU, ROCm,
llama.cpp) with the value read and a verdict. A FAIL row stops that host with its explanation and
the fix; a WARN row is printed and does not fail. Nothing is changed on the hosts.

After the last host, a summary has one line per host (GTT, carve-out, pages_limit, kernel,
firmware, ROCm, llama.cpp build, PASS/FAIL). To keep it, name a file: `.md` gets Markdown,
anything else JSON (an environment variable, as the report is one file for the whole run):

    HALO_VERIFY_REPORT=verify.md pyinfra inventories/lab.py deploys/verify.py

The verify suite (`pytest --hosts=... tests/verify`) reads the same facts through testinfra and
judges them with the same functions: `read_facts(s, get_fact)`, `judge`, `same_build_row`.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy, operation

from deploys import topology
from deploys.checks import Row, firmware_rows, kernel_row
from deploys.common import failure
from deploys.llama_cpp import cmake_flags
from deploys.runcache import run_store
from deploys.settings import GIB, HEAD_GROUP, TTM_PAGES_PER_GIB, Settings, settings
from facts.amdgpu import GpuMemory, KfdGpuNodes, TtmLimits
from facts.distro import Distro
from facts.firmware import FirmwarePackages, MesFirmware
from facts.iommu import IommuState
from facts.kernel import KernelRelease
from facts.llama_cpp import LlamaCppInstall
from facts.memory import MemTotal, host_installed_ram
from facts.rocm import RocmVersion
from facts.services import TcpListeners, UnitStates

PAGE = 4096
# Without working ttm arguments (or on a kernel older than 6.16.9) GTT is about half of RAM,
# capped near 15.5 GiB on the older kernels; anything this far below the wanted size is that case.
GTT_STOCK_FRACTION = 0.6
IOMMU_WANTED = {"off": "off", "pt": "passthrough"}


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
    head: dict | None = None  # {"unit", "state" (UnitStates of it), "url", "health" (HttpStatus), "reach"}; None: no head


@dataclass
class Report:
    host: str
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "FAIL"]

    def add(self, subject: str, value: str, verdict: str = "ok", why: str = "") -> None:
        self.rows.append(Row(subject, value, verdict, why))

    def table(self) -> str:
        width = max(len(r.subject) for r in self.rows)
        lines = [f"{self.host}: {'PASS' if not self.failures else 'FAIL'}"]
        for r in self.rows:
            lines.append(f"  {r.subject:<{width}}  {r.verdict:<4}  {r.value}")
            if r.why:
                lines.append(f"  {'':<{width}}        -> {r.why}")
        return "\n".join(lines)


def gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.2f} GiB"


def read_facts(s: Settings, get_fact: Callable | None = None, workers: list[Settings] | None = None) -> HostFacts:
    """Read every fact verify needs from one host, once each.

    `get_fact(FactClass, **kwargs)` reads one fact: pyinfra's `host.get_fact` by default; the
    verify suite passes one that runs the fact's command over testinfra and calls its process(),
    and `workers`, the Settings of group rpc_workers (else read from pyinfra's inventory).
    """
    get = get_fact or host.get_fact
    rpc_worker, head = step("rpc_worker"), step("head")
    rpc = head_facts = None
    if s.is_rpc_worker and rpc_worker is not None:
        ports = {server.port: rpc_worker.UNIT.replace("@", f"@{server.port}") for server in s.rpc_servers}
        rpc = {"ports": ports, "units": get(UnitStates, units=list(ports.values())), "listeners": get(TcpListeners)}
    if s.is_head and head is not None:
        from facts.llama_server import HttpStatus  # comes with deploys/head.py

        from facts.firewall import RpcReach

        head_facts = {"unit": head.UNIT, "state": get(UnitStates, units=[head.UNIT]).get(head.UNIT),
                      "url": head.health_url(s), "health": get(HttpStatus, url=head.health_url(s))}
        if workers is None:
            workers = topology.workers_of(host.inventory)
        if topology.rpc_list(s, workers):
            serving = (head_facts["state"] or {}).get("active") == "active"  # it holds the servers: do not queue
            head_facts["reach"] = get(RpcReach, endpoints=topology.rpc_list(s, workers), user=head.USER,
                                      probe_user=not serving)
    return HostFacts(
        distro=get(Distro)["family"],
        kernel=get(KernelRelease),
        gpu_memory=get(GpuMemory),
        ttm=get(TtmLimits),
        kfd_nodes=get(KfdGpuNodes),
        iommu=get(IommuState),
        firmware=get(FirmwarePackages),
        mes=get(MesFirmware),
        rocm=get(RocmVersion),
        mem_total=get(MemTotal),
        llama_cpp=get(LlamaCppInstall, prefix=s.llama_cpp_prefix, ref=s.llama_cpp_ref),
        rpc=rpc,
        head=head_facts,
    )


def step(name: str):
    """The module deploys/<name>.py, or None while that step does not exist."""
    try:
        return importlib.import_module(f"deploys.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"deploys.{name}":
            return None
        raise


def judge(facts: HostFacts, s: Settings) -> Report:
    """Compare what a host shows with what its settings want; pure, so tests feed it facts."""
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
    if facts.rpc is not None:
        report.rows.append(rpc_row(facts.rpc, s))
    if facts.head is not None:
        report.rows.append(head_row(facts.head))
        if facts.head.get("reach") is not None:
            report.rows.append(rpc_reach_row(facts.head["reach"], facts.head["state"]))
    return report


def rpc_reach_row(reach: dict, state: dict | None) -> Row:
    """On a head: llama-server's user reaches every RPC server it uses; no other local user reaches any.

    A server that is busy with llama-server itself (one client at a time) may not take a second
    connection: a closed port while llama-server is active is a WARN, else a FAIL.
    """
    endpoints = reach["endpoints"]
    if not reach["user"]:
        return Row("RPC reach", "not deployed", "WARN", "no llama-server user on the head: run deploys/head.py")
    other = [ep for ep, r in endpoints.items() if r["other"] == "open"]
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


# --- the summary: one line per host ------------------------------------------------------------

REPORT_ENV = "HALO_VERIFY_REPORT"
# Summary columns: heading, and the row subjects whose values (up to any " (") and verdicts it shows.
SUMMARY_COLUMNS = (
    ("GTT", ("GTT",)),
    ("VRAM carve-out", ("VRAM carve-out",)),
    ("pages_limit", ("TTM pages_limit",)),
    ("kernel", ("kernel",)),
    ("firmware", ("firmware", "MES firmware")),
    ("ROCm", ("ROCm",)),
    ("llama.cpp build", ("llama.cpp", "same build")),
    ("RPC ports", ("RPC",)),
    ("head health", ("head",)),
)
_VERDICT_ORDER = ("ok", "info", "WARN", "FAIL")


def summary(reports: list[Report], results: dict[str, str] | None = None) -> list[dict]:
    """One entry per host: host, result (PASS/FAIL; `results` overrides it), a cell per column, all rows.

    >>> summary([Report("halo1", [Row("GTT", "120.00 GiB (wanted 120 GiB: ttm_gib)")])])[0]["cells"]["GTT"]
    {'value': '120.00 GiB', 'verdict': 'ok'}
    """
    entries = []
    for report in reports:
        cells = {}
        for heading, subjects in SUMMARY_COLUMNS:
            rows = [r for r in report.rows if r.subject in subjects]
            cells[heading] = {
                "value": "; ".join(r.value.split(" (")[0] for r in rows) or "-",
                "verdict": max((r.verdict for r in rows), key=_VERDICT_ORDER.index, default="-"),
            }
        result = (results or {}).get(report.host) or ("FAIL" if report.failures else "PASS")
        entries.append({"host": report.host, "result": result, "cells": cells,
                        "rows": [asdict(r) for r in report.rows]})
    return entries


def _cell(cell: dict) -> str:
    return cell["value"] + (f" {cell['verdict']}" if cell["verdict"] in ("WARN", "FAIL") else "")


def summary_text(entries: list[dict]) -> str:
    """The summary as a plain table, for a terminal."""
    table = [["host", *(h for h, _ in SUMMARY_COLUMNS), "result"]]
    table += [[e["host"], *(_cell(e["cells"][h]) for h, _ in SUMMARY_COLUMNS), e["result"]] for e in entries]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def summary_markdown(entries: list[dict]) -> str:
    """The summary as a Markdown table, then each host's rows that are not ok, with the fix."""
    lines = ["| host | " + " | ".join(h for h, _ in SUMMARY_COLUMNS) + " | result |",
             "|---" * (len(SUMMARY_COLUMNS) + 2) + "|"]
    for e in entries:
        cells = " | ".join(_cell(e["cells"][h]) for h, _ in SUMMARY_COLUMNS)
        lines.append(f"| {e['host']} | {cells} | **{e['result']}** |")
    notes = [f"- {e['host']}: {r['subject']} {r['verdict']} {r['value']}: {r['why']}"
             for e in entries for r in e["rows"] if r["verdict"] in ("WARN", "FAIL")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_summary(path: str, entries: list[dict]) -> None:
    """Markdown when `path` ends in .md, else JSON."""
    text = summary_markdown(entries) if path.endswith(".md") else json.dumps({"hosts": entries}, indent=1) + "\n"
    Path(path).write_text(text)


# --- the step -----------------------------------------------------------------------------------
#
# Verify runs as two operations, so it reads the facts when the run reaches it, after every change an
# earlier step of deploys/full.py made: first each host reads and judges its own facts, then, once all
# hosts have, the tables and the summary are printed together and each failing host fails.


def _run_reports() -> dict[str, tuple[Report, dict | None]]:
    """{host: (its report, its LlamaCppInstall)} of this run."""
    return run_store("verify_reports")


@operation(is_idempotent=True)
def judge_host():
    """Read every fact of this host now and judge them; the next operation prints and fails."""
    s = settings(host)
    facts = read_facts(s)
    _run_reports()[host.name] = (judge(facts, s), facts.llama_cpp)
    host.noop("facts read and judged")
    yield from ()


@operation(is_idempotent=True)
def report_hosts():
    """Print every host's table and the summary (once, by the first host here); fail this host on a FAIL."""
    reports = _run_reports()
    inventory = host.state.inventory
    hosts = [h for h in inventory if h.name in reports]  # in inventory order
    if not reports.get("_printed"):
        reports["_printed"] = True  # no I/O since the check: no other host gets in between
        heads = [h.name for h in hosts if HEAD_GROUP in h.groups]
        builds = {h.name: reports[h.name][1] for h in hosts}
        for h in hosts:
            same = same_build_row(h.name, builds, heads)
            if same is not None:
                reports[h.name][0].rows.append(same)
        missed = [h.name for h in inventory if h.name not in reports]
        tables = [reports[h.name][0].table() for h in hosts]
        entries = summary([reports[h.name][0] for h in hosts])
        logger.info("\n".join(tables) + "\nVerify summary:\n" + summary_text(entries)
                    + "".join(f"\n{name}: not verified (an earlier operation failed on it)" for name in missed))
        if os.environ.get(REPORT_ENV):
            write_summary(os.environ[REPORT_ENV], entries)
            logger.info(f"Verify report written to {os.environ[REPORT_ENV]}")
    failures = reports[host.name][0].failures
    if not failures:
        host.noop("verify: PASS")
        return
    yield failure("verify FAIL: " + "; ".join(f"{r.subject} {r.value}: {r.why}" for r in failures))


@deploy("Verify")
def verify_host() -> None:
    """Judge the host from facts read when the run gets here (in deploys/full.py: after the changes)."""
    settings(host)
    judge_host(name="Read and judge the host's facts")
    report_hosts(name="Show the verify tables and fail the hosts that do not pass")


if __name__ in ("builtins", "__main__"):
    verify_host()
