"""Verify Strix Halo hosts: read every fact, print one table per host, fail with explanations.

    pyinfra inventories/lab.py deploys/verify.py

Each row is one subject (GPU, GTT, VRAM carve-out, TTM limit, kernel, firmware, IOMMU, ROCm,
llama.cpp) with the value read and a verdict. A FAIL row stops that host with its explanation and
the fix; a WARN row is printed and does not fail. Nothing is changed on the hosts.

After the last host, a summary has one line per host (GTT, carve-out, pages_limit, kernel,
firmware, ROCm, llama.cpp build, PASS/FAIL). To keep it, name a file: `.md` gets Markdown,
anything else JSON (an environment variable, as the report is one file for the whole run):

    HALO_VERIFY_REPORT=verify.md pyinfra inventories/lab.py deploys/verify.py

This module reads the facts and wires the two others: deploys/checks.py judges (pure), and
deploys/report.py prints. The verify suite (`pytest --hosts=... tests/verify`) reads the same facts
through testinfra (`read_facts(s, get_fact)`) and judges them with the same checks.judge.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pyinfra import host, logger
from pyinfra.api import deploy, operation

from deploys import head, rpc_worker, topology
from deploys.checks import HostFacts, Report, cluster_build_row, judge, same_build_row
from deploys.common import failure
from deploys.report import REPORT_ENV, summary, summary_text, table, write_summary
from deploys.runcache import prefetch, run_store
from deploys.settings import HEAD_GROUP, Settings, settings
from facts.amdgpu import GpuMemory, KfdGpuNodes, TtmLimits
from facts.distro import Distro
from facts.firewall import RpcReach
from facts.firmware import FirmwarePackages, MesFirmware
from facts.iommu import IommuState
from facts.kernel import KernelCmdline, KernelRelease
from facts.llama_cpp import LlamaCppInstall, RunningBuilds
from facts.llama_server import HttpStatus, LlamaServerLinks
from facts.memory import MemTotal
from facts.rocm import RocmVersion
from facts.services import TcpListeners, UnitStates


def read_facts(s: Settings, get_fact: Callable | None = None, workers: list[Settings] | None = None) -> HostFacts:
    """Read every fact verify needs from one host, once each.

    `get_fact(FactClass, **kwargs)` reads one fact: pyinfra's `host.get_fact` by default; the
    verify suite passes one that runs the fact's command over testinfra and calls its process(),
    and `workers`, the Settings of group rpc_workers (else read from pyinfra's inventory).
    """
    get = get_fact or host.get_fact
    rpc = head_facts = None
    ports = {server.port: rpc_worker.UNIT.replace("@", f"@{server.port}") for server in s.rpc_servers} \
        if s.is_rpc_worker else {}
    if s.is_head and workers is None:
        workers = topology.workers_of(host.inventory)
    rpc_list = topology.rpc_list(s, workers) if s.is_head else []
    units = [*ports.values(), *([head.UNIT] if s.is_head else ())]
    # the facts that move by themselves and need no other answer first: read live, in one command
    rpc_units, listeners = (UnitStates, {"units": list(ports.values())}), (TcpListeners, {})
    head_unit, health = (UnitStates, {"units": [head.UNIT]}), (HttpStatus, {"url": head.health_url(s)})
    links, running = (LlamaServerLinks, {"unit": head.UNIT}), (RunningBuilds, {"units": units})
    if get_fact is None:
        wanted = ((rpc_units, s.is_rpc_worker), (listeners, s.is_rpc_worker), (head_unit, s.is_head),
                  (health, s.is_head), (links, rpc_list), (running, units))
        prefetch([read for read, needed in wanted if needed], live=True)

    def live(read):
        return get(read[0], **read[1])

    if s.is_rpc_worker:
        rpc = {"ports": ports, "units": live(rpc_units), "listeners": live(listeners)}
    if s.is_head:
        head_facts = {"unit": head.UNIT, "state": live(head_unit).get(head.UNIT), "url": head.health_url(s),
                      "health": live(health)}
        if rpc_list:
            serving = (head_facts["state"] or {}).get("active") == "active"  # it holds the servers: do not queue
            head_facts["reach"] = get(RpcReach, endpoints=rpc_list, user=head.USER, probe_user=not serving)
            head_facts["links"] = live(links)
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
        running=live(running) if units else {},
    )


def host_reads(s: Settings) -> list:
    """The facts of this host that verify judges and that do not move by themselves (the kernel, firmware,
    sysfs and build checks): deploys/full.py reads them in one command before its steps read them one by one.

    >>> [cls.__name__ for cls, _ in host_reads(Settings.model_construct(llama_cpp_prefix="/opt/x", llama_cpp_ref="v1"))][:3]
    ['Distro', 'KernelRelease', 'GpuMemory']
    """
    return [(Distro, {}), (KernelRelease, {}), (GpuMemory, {}), (TtmLimits, {}), (KfdGpuNodes, {}), (IommuState, {}),
            (FirmwarePackages, {}), (MesFirmware, {}), (RocmVersion, {}), (MemTotal, {}), (KernelCmdline, {}),
            (LlamaCppInstall, {"prefix": s.llama_cpp_prefix, "ref": s.llama_cpp_ref})]


# --- the step -----------------------------------------------------------------------------------
#
# Verify runs as two operations, so it reads the facts when the run reaches it, after every change an
# earlier step of deploys/full.py made: first each host reads and judges its own facts, then, once all
# hosts have, the tables and the summary are printed together and each failing host fails.


def _run_reports() -> dict[str, tuple[Report, HostFacts]]:
    """{host: (its report, its facts)} of this run."""
    return run_store("verify_reports")


@operation(is_idempotent=True)
def judge_host():
    """Read every fact of this host now and judge them; the next operation prints and fails."""
    s = settings(host)
    facts = read_facts(s)
    expected = topology.rpc_list(s, topology.workers_of(host.inventory)) if s.is_head else None
    _run_reports()[host.name] = (judge(facts, s, expected), facts)
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
        builds = {h.name: reports[h.name][1].llama_cpp for h in hosts}
        facts = {h.name: reports[h.name][1] for h in hosts}
        workers = topology.workers_of(inventory)
        for h in hosts:
            same = same_build_row(h.name, builds, heads)
            if same is not None:
                reports[h.name][0].rows.append(same)
            if h.name in heads:
                cluster = cluster_build_row(settings(h), facts, workers)
                if cluster is not None:
                    reports[h.name][0].rows.append(cluster)
        missed = [h.name for h in inventory if h.name not in reports]
        tables = [table(reports[h.name][0]) for h in hosts]
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
