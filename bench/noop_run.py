"""What a no-change run of deploys/full.py costs, and how it grows with the number of hosts.

    .venv/bin/python -m bench.noop_run [--sizes 1,8,16] [--repeats 3] [--keep]

On a lab of 16 Debian 12 hosts (the largest size) (HALO_LAB_ID, default 9) with the lab cluster's data (CPU backend,
llama.cpp and the tiny model served on the bridge): deploys/full.py once on all hosts to converge,
then timed no-change runs on the first 1, 8 and 16 hosts (`--limit`: pyinfra connects to those
hosts only, the rest of the inventory is data), sizes interleaved, median of --repeats. Time is the
wall time of the pyinfra CLI from start to exit (Python start, inventory, connect, prepare, execute).
A timed run that fails is not run again: it is counted and reported with its cause (pyinfra's own
error lines; the whole output is kept in a log file), and its time is left out of the table.
Beside each timed run's wall time, the CPU it cost: the pyinfra CLI's (its rusage) and each lab
host's (lab.host_cpu_seconds: its processes, reaped children included), as all of them share this
machine's cores.

Remote commands are counted twice in one extra run on all hosts, which is not timed:
- on each host, by sshd: with `LogLevel DEBUG1` (a drop-in, removed afterwards) sshd logs every
  channel request; the count is the `exec` and `subsystem` (SFTP) requests in its journal;
- in pyinfra, by bench.traced_pyinfra, which records each command with its step and fact.
The two must agree; the second says where the commands go.

Targets: the largest size takes at most 1.5x the time of 1 host, with no failed run; at most 25
remote commands per host.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import (
    LAB_INVENTORY,
    failure_cause,
    finish,
    lab_hosts,
    machine_note,
    median,
    pyinfra,
    refused_note,
    require,
    run_ok,
    table,
    verdict,
)
from lab import lab
from lab.cluster import cluster_inputs

FULL = "deploys/full.py"
MAX_RATIO = 1.5
MAX_COMMANDS = 25
SSHD_DEBUG = "/etc/ssh/sshd_config.d/halo-bench-debug.conf"


def sshd_debug(hosts: list[lab.LabHost], on: bool) -> None:
    """Turn sshd's DEBUG1 log (one line per channel request) on or off on each host."""
    command = (f"echo 'LogLevel DEBUG1' > {SSHD_DEBUG}" if on else f"rm -f {SSHD_DEBUG}") + " && systemctl reload ssh"
    for host in hosts:
        lab.ssh(host, command)
    for host in hosts:  # sshd re-executes itself on reload: wait until it accepts connections again
        deadline = time.monotonic() + 20
        while lab.ssh(host, "true", check=False, timeout=5).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)


def sshd_requests(host: lab.LabHost, since: int, until: int) -> Counter:
    """Channel requests sshd served on `host` between two times: Counter({"exec": n, "subsystem": n, ...})."""
    out = lab.ssh(host, f"journalctl -u ssh --since @{since} --until @{until} -o cat --no-pager "
                        "| grep -oE 'session_input_channel_req: session [0-9]+ req [a-z@.-]+' || true").stdout
    return Counter(line.split()[-1] for line in out.splitlines())


def count_commands(hosts: list[lab.LabHost], data: dict[str, str], trace: Path) -> tuple[dict, list[dict]]:
    """One traced no-change run on `hosts`: ({host: sshd's Counter}, the trace's records).

    A failed run stops the benchmark with its output (it is not run again)."""
    time.sleep(1.2)  # whole seconds for journalctl: nothing of ours in the first one
    since = int(time.time())
    run = pyinfra(LAB_INVENTORY, FULL, data, limit=hosts, trace=trace)
    until = int(time.time()) + 1
    require(run, f"the traced run of deploys/full.py on {len(hosts)} hosts")
    time.sleep(2)
    served = {h.name: sshd_requests(h, since, until) for h in hosts}
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    return served, records


def where_commands_go(records: list[dict], host: str) -> list[list[object]]:
    """Rows (step, commands, biggest sources) for one host, the step with most commands first."""
    mine = [r for r in records if r["host"] == host]
    by_step = Counter(r["step"] for r in mine)
    rows = []
    for step, count in by_step.most_common():
        sources = Counter(r["by"] for r in mine if r["step"] == step)
        rows.append([step, count, ", ".join(f"{name} x{n}" for name, n in sources.most_common(4))])
    return rows


def cpu_used(n: int, run_it) -> tuple[object, float, dict[str, float]]:
    """run_it()'s result, with the CPU seconds its pyinfra CLI used and each lab host's (hosts that used some)."""
    hosts_before, mine_before = lab.host_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_it()
    hosts_after, mine_after = lab.host_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    pyinfra_cpu = (mine_after.ru_utime - mine_before.ru_utime) + (mine_after.ru_stime - mine_before.ru_stime)
    return result, pyinfra_cpu, {h: hosts_after[h] - hosts_before.get(h, 0.0) for h in hosts_after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,16", help="numbers of hosts to time (default 1,8,16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    hosts = lab_hosts(max(sizes))
    try:
        with cluster_inputs() as data, tempfile.TemporaryDirectory() as tmp:
            converge = run_ok("the converging run of deploys/full.py", LAB_INVENTORY, FULL, data)
            print(f"converging run of {FULL} on {len(hosts)} hosts: {converge.seconds:.1f} s", flush=True)
            times: dict[int, list[float]] = {n: [] for n in sizes}
            changed: dict[int, dict] = {}
            failures: dict[int, list[str]] = {n: [] for n in sizes}
            cpu: dict[int, list[tuple[float, float, float]]] = {n: [] for n in sizes}  # pyinfra, all hosts, busiest
            for repeat in range(args.repeats):
                for n in sizes:
                    run, pyinfra_cpu, host_cpu = cpu_used(n, lambda: pyinfra(LAB_INVENTORY, FULL, data,
                                                                             limit=hosts[:n]))
                    if not run.ok or "No host matches found" in run.output:
                        log = Path(tempfile.gettempdir()) / f"bench-noop-{n}-hosts-run-{repeat + 1}.log"
                        log.write_text(run.output)
                        failures[n].append(f"run {repeat + 1}: {failure_cause(run)} (whole output: {log})")
                        print(f"  run {repeat + 1}, {n} hosts: FAILED after {run.seconds:.2f} s: "
                              f"{failures[n][-1]}", flush=True)
                        continue
                    times[n].append(run.seconds)
                    cpu[n].append((pyinfra_cpu, sum(host_cpu.values()), max(host_cpu.values(), default=0.0)))
                    if run.changed:
                        changed[n] = run.changed
                    print(f"  run {repeat + 1}, {n} hosts: {run.seconds:.2f} s", flush=True)
            counted: dict[int, tuple[dict, list[dict]]] = {}
            sshd_debug(hosts, True)
            try:
                for n in sizes:
                    counted[n] = count_commands(hosts[:n], data, Path(tmp) / f"trace-{n}.jsonl")
            finally:
                sshd_debug(hosts, False)
    finally:
        finish(args.keep)

    if not all(times.values()):
        raise SystemExit(f"bench: every timed run failed on some size: {failures}")
    base = median(times[sizes[0]])
    rows = [[n, len(times[n]) + len(failures[n]), len(failures[n]), median(times[n]), min(times[n]),
             max(times[n]), median(times[n]) / base] for n in sizes]
    print(f"\n### No-change run of {FULL} ({machine_note()})\n")
    print(table(["hosts", "runs", "failed", "median s", "min s", "max s", f"x {sizes[0]} host"], rows))
    print(f"\nCPU seconds of a timed run (medians), beside its wall time: the pyinfra CLI on this machine, "
          f"and the lab hosts' processes (sshd, the commands, systemd), which share this machine's "
          f"{os.cpu_count()} cores with it; on real machines each host has its own:\n")
    print(table(["hosts", "wall s", "pyinfra CPU s", "all hosts' CPU s", "busiest host's CPU s", "CPU s per wall s"],
                [[n, median(times[n]), median([c[0] for c in cpu[n]]), median([c[1] for c in cpu[n]]),
                  median([c[2] for c in cpu[n]]), median([(c[0] + c[1]) / t for c, t in zip(cpu[n], times[n])])]
                 for n in sizes]))
    for n in sizes:
        for failure in failures[n]:
            print(f"\nFAILED on {n} hosts, {failure}")
    for n, ops in changed.items():
        print(f"\nNOT a no-change run on {n} hosts: these operations changed something: {ops}")

    print("\nRemote commands per host in a no-change run (sshd: exec + SFTP subsystem requests in each "
          "host's journal; pyinfra: commands the traced CLI sent; they must agree):\n")
    count_rows, worst = [], 0
    for n in sizes:
        served, records = counted[n]
        traced = Counter(r["host"] for r in records)
        per_host = {h.name: served[h.name]["exec"] + served[h.name]["subsystem"] for h in hosts[:n]}
        worst = max(worst, *per_host.values())
        workers = [per_host[h.name] for h in hosts[1:n]]
        count_rows.append([n, per_host[hosts[0].name], f"{min(workers)}-{max(workers)}" if workers else "-",
                           sum(per_host.values()), "yes" if all(per_host[x] == traced[x] for x in per_host) else "NO"])
    print(table(["hosts", "head (halo1)", "each other host", "all hosts", "sshd = traced"], count_rows))

    for n, name in ((sizes[0], hosts[0].name), (sizes[-1], hosts[0].name), (sizes[-1], hosts[sizes[-1] - 1].name)):
        role = "head and worker" if name == hosts[0].name else "worker"
        print(f"\nWhere the commands of {name} ({role}) go in the run on {n} hosts, per step:\n")
        print(table(["step", "commands", "biggest sources"], where_commands_go(counted[n][1], name)))
    n = sizes[-1]
    mine = [r for r in counted[n][1] if r["host"] == hosts[0].name]
    by_op = Counter((r["op"] or f"{r['step']} | (deploy code, prepare)") for r in mine)
    print(f"\nOn {hosts[0].name} in the run on {n} hosts, per operation (and deploy code), most first:\n")
    print(table(["operation", "commands", "by"], [
        [op, count, ", ".join(f"{k} x{v}" for k, v in Counter(
            r["by"] for r in mine if (r["op"] or f"{r['step']} | (deploy code, prepare)") == op).most_common())]
        for op, count in by_op.most_common()]))

    print(refused_note())
    ratio = median(times[sizes[-1]]) / base
    print(f"\n{sizes[-1]} hosts / {sizes[0]} host: {ratio:.2f}x (target <= {MAX_RATIO}x): "
          f"{verdict(ratio <= MAX_RATIO)}")
    failed = sum(len(f) for f in failures.values())
    print(f"failed timed runs: {failed} of {sum(len(t) for t in times.values()) + failed} (target 0): "
          f"{verdict(failed == 0)}")
    print(f"remote commands per host: at most {worst} (target <= {MAX_COMMANDS}): {verdict(worst <= MAX_COMMANDS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
