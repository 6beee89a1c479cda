"""The cold path: bare lab hosts to a serving cluster, against the floor (a plain compile), cold and warm cache.

    .venv/bin/python -m bench.provision [--hosts 3] [--keep]

Each case boots fresh Debian 12 lab hosts (halo1 head and worker, the rest workers: just booted, nothing
of ours on them) and times `pyinfra deploys/full.py` with the lab cluster's data (lab/cluster.py: CPU
backend, llama.cpp and the tiny model served on the bridge) until it exits 0 and the head completes a
request. pyinfra's output is read as it comes, so each operation's share is known (pyinfra runs one
operation at a time on every host): packages, the build, the copies to the workers, the model, the
wait for the head.

- cold: an empty tmpfs hides the lab's shared compiler cache (/root/.cache/ccache, per Debian release)
  on every host first, as bench/build.py's clean build does: clone, configure, compile from nothing;
- warm: the lab's shared compiler cache as it is (other runs have filled it).

The floor of each: on the host that built, a plain `cmake` configure and `cmake --build` of the same
targets with the same flags, -j, source and build tree as the deploy's build, read from what that build
left (its stamp halo-build.json: commit and CMake flags; the `==> compile` line of its log: targets
and jobs; the tree is <prefix>/trees/<flags hash>, deleted first), with the same compiler cache state:
a new empty tmpfs for cold, the shared cache for warm. ccache has no base_dir here (nor does the
deploy), so it hashes absolute paths: the same paths are what makes the warm floor hit what the warm
deploy hit. ccache's hits and misses of each build come from its stats log (`stats_log` in
/etc/ccache.conf on the build host), not from the shared cache's counters, which other labs move.
The .debs come from the lab's apt cache in every case (`apt-get update` reaches the Debian archive).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import time

from bench.build import CCACHE, PREFIX
from bench.common import LAB_INVENTORY, finish, machine_note, require, table, watched_run
from bench.worker_restart import HEAD_PORT, completion
from deploys.llama_cpp import BUILD_WORK, flags_hash
from deploys.progress import run_dir
from lab import lab
from lab.cluster import cluster_inputs

FULL = "deploys/full.py"
STATS_LOG = "/var/tmp/halo-bench-ccache-stats.log"
CCACHE_CONF = "/etc/ccache.conf"  # the system configuration: read before the (shared) cache's own
FLOOR_LOG = "/var/tmp/halo-bench-floor.log"
SHOWN_S = 1.0  # operations shorter than this in both cases are summed in one row
_COMPILE_LINE = re.compile(r"^==> compile (.+) \((\d+) jobs\)$")


def compile_line(log: str) -> tuple[list[str], int]:
    """(targets, jobs) from the `==> compile` line deploys/scripts/llama-build.sh writes to its log.

    >>> compile_line("==> configure (cmake)\\n==> compile llama-server, ggml-rpc-server and llama-fit-params (2 jobs)\\n")
    (['llama-server', 'ggml-rpc-server', 'llama-fit-params'], 2)
    >>> compile_line("==> compile llama-server, rpc-server (16 jobs)")
    (['llama-server', 'rpc-server'], 16)
    """
    for line in log.splitlines():
        found = _COMPILE_LINE.match(line.strip())
        if found:
            return re.split(r", | and ", found.group(1)), int(found.group(2))
    raise SystemExit(f"bench: no `==> compile` line in the build log:\n{log[-2000:]}")


def ccache_counts(stats_log: str) -> dict[str, int]:
    """Compiler calls by ccache's result, from its stats log (each call: a `# <source>` line, then its
    result ids): {"hits", "misses", "other"} (other: links, checks, calls ccache cannot cache).

    >>> ccache_counts("# /s/a.c\\ndirect_cache_hit\\n# /s/b.c\\ndirect_cache_miss\\npreprocessed_cache_miss\\n"
    ...               "cache_miss\\n# /s/c.c\\ndirect_cache_miss\\npreprocessed_cache_hit\\n# \\ncalled_for_link\\n")
    {'hits': 2, 'misses': 1, 'other': 1}
    """
    calls = [set(block.split("\n")[1:]) for block in ("\n" + stats_log).split("\n#")[1:]]
    hits = sum(1 for ids in calls if ids & {"direct_cache_hit", "preprocessed_cache_hit"})
    misses = sum(1 for ids in calls if "cache_miss" in ids)
    return {"hits": hits, "misses": misses, "other": len(calls) - hits - misses}


def hit_rate(counts: dict[str, int]) -> str:
    """The hits among the cacheable calls: "hits/calls (percent)".

    >>> hit_rate({"hits": 3, "misses": 1, "other": 5}), hit_rate({"hits": 0, "misses": 0, "other": 0})
    ('3/4 (75%)', '0/0')
    """
    calls = counts["hits"] + counts["misses"]
    return f"{counts['hits']}/{calls}" + (f" ({100 * counts['hits'] / calls:.0f}%)" if calls else "")


def durations(starts: list[tuple[float, str]], total: float) -> list[tuple[str, float]]:
    """[(operation, seconds)] from each operation's start to the next one's (the last: to the run's end),
    with the time before the first operation (Python start, inventory, connect, facts) first.

    >>> durations([(2.0, "a | x"), (5.0, "b | y"), (5.5, "a | x")], 9.0)
    [('before the first operation (start, connect, facts)', 2.0), ('a | x', 3.0), ('b | y', 0.5), ('a | x', 3.5)]
    """
    rows = [("before the first operation (start, connect, facts)", starts[0][0] if starts else total)]
    ends = [when for when, _ in starts[1:]] + [total]
    return rows + [(operation, end - when) for (when, operation), end in zip(starts, ends)]


def summed(rows: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds per operation name, in order of first appearance (an operation may start twice)."""
    out: dict[str, float] = {}
    for name, seconds in rows:
        out[name] = out.get(name, 0.0) + seconds
    return out


def fresh_hosts(count: int) -> tuple[list[lab.LabHost], float]:
    """A new lab of `count` just booted Debian 12 hosts (any running lab of this id is stopped first)."""
    start = time.monotonic()
    hosts = lab.start(lab.parse_host_args([f"halo{i}:12" for i in range(1, count + 1)]))
    return hosts, time.monotonic() - start


def on_host(host: lab.LabHost, command: str, timeout: float = 120) -> str:
    return lab.ssh(host, command, timeout=timeout).stdout


def empty_ccache(host: lab.LabHost) -> None:
    """A new empty tmpfs over the host's compiler cache directory (an earlier one is unmounted first)."""
    on_host(host, f"while mountpoint -q {CCACHE} && [ \"$(stat -f -c %T {CCACHE})\" = tmpfs ]; do umount {CCACHE}; "
                  f"done; mount -t tmpfs -o size=4g halo-bench-ccache {CCACHE}")


def log_ccache(hosts: list[lab.LabHost]) -> None:
    """From now on ccache writes each call's result to STATS_LOG on these hosts (an empty one)."""
    for host in hosts:
        on_host(host, f"echo 'stats_log = {STATS_LOG}' > {CCACHE_CONF} && rm -f {STATS_LOG}")


def logged_ccache(host: lab.LabHost) -> dict[str, int]:
    """What ccache logged since log_ccache(), then an empty log again."""
    return ccache_counts(on_host(host, f"cat {STATS_LOG} 2>/dev/null; rm -f {STATS_LOG}"))


def provision(hosts: list[lab.LabHost], data: dict[str, str], what: str) -> dict:
    """deploys/full.py on the fresh hosts until it exits 0 and the head completes a request."""
    load = os.getloadavg()[0]
    print(f"{what}: deploys/full.py on {len(hosts)} fresh hosts (load average {load:.1f})", flush=True)
    run, starts = watched_run(LAB_INVENTORY, FULL, data)
    require(run, f"{what}: deploys/full.py")
    url = f"http://{hosts[0].address}:{HEAD_PORT}/completion"
    if not completion(url):
        raise SystemExit(f"bench: {what}: deploys/full.py exited 0 but the head does not complete a request at {url}")
    builders = [h for h in hosts if on_host(h, f"test -f {run_dir(BUILD_WORK)}/log && echo yes || true").strip()]
    if len(builders) != 1:
        raise SystemExit(f"bench: {what}: expected one host to build llama.cpp, found {[h.name for h in builders]}")
    builder = builders[0]
    print(f"  {run.seconds:.1f} s, serving; {builder.name} built", flush=True)
    return {"seconds": run.seconds, "ops": durations(starts, run.seconds), "builder": builder,
            "ccache": logged_ccache(builder), "load": (load, os.getloadavg()[0])}


def floor(builder: lab.LabHost, what: str) -> dict:
    """The plain configure and compile of the deploy's build again, in its paths; (configure s, compile s)."""
    stamp = json.loads(on_host(builder, f"cat {PREFIX}/current/halo-build.json"))
    targets, jobs = compile_line(on_host(builder, f"cat {run_dir(BUILD_WORK)}/log"))
    src, tree = f"{PREFIX}/src", f"{PREFIX}/trees/{flags_hash(stamp['flags'])}"
    head = on_host(builder, f"git -C {src} rev-parse HEAD").strip()
    if head != stamp["commit"]:
        raise SystemExit(f"bench: {what}: {src} is at {head}, the build at {stamp['commit']}")
    on_host(builder, f"rm -rf {tree} {FLOOR_LOG}")
    load = os.getloadavg()[0]
    print(f"{what}: cmake on {builder.name}, targets {' '.join(targets)}, -j {jobs}, flags "
          f"{' '.join(stamp['flags'])} (load average {load:.1f})", flush=True)
    times = []
    # the generator (-G Ninja) and the source and tree paths as deploys/scripts/llama-build.sh has them
    for command in (f"cd {src} && cmake -S . -B {tree} -G Ninja {shlex.join(stamp['flags'])}",
                    f"cd {src} && cmake --build {tree} --target {shlex.join(targets)} -j {jobs}"):
        start = time.monotonic()
        on_host(builder, f"{command} >> {FLOOR_LOG} 2>&1", timeout=3600)
        times.append(time.monotonic() - start)
    print(f"  configure {times[0]:.1f} s, compile {times[1]:.1f} s", flush=True)
    return {"configure": times[0], "compile": times[1], "seconds": sum(times), "ccache": logged_ccache(builder),
            "load": (load, os.getloadavg()[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts of the cluster (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the lab (the warm case's cluster) running")
    args = parser.parse_args()
    cases: dict[str, tuple[dict, dict, float]] = {}
    try:
        for case in ("cold", "warm"):
            hosts, boot = fresh_hosts(args.hosts)  # a new bridge too: the inputs are served on it below
            print(f"{case}: {args.hosts} fresh lab hosts booted in {boot:.1f} s (the stop of a running lab "
                  "included; not counted)", flush=True)
            if case == "cold":
                for host in hosts:
                    empty_ccache(host)
            log_ccache(hosts)
            with cluster_inputs() as data:
                deploy = provision(hosts, data, f"{case} provisioning")
            if case == "cold":
                empty_ccache(deploy["builder"])
            plain = floor(deploy["builder"], f"{case} floor")
            cases[case] = (deploy, plain, boot)
            for host in hosts:
                on_host(host, f"rm -f {CCACHE_CONF} {STATS_LOG}")
    finally:
        finish(args.keep)

    print(f"\n### bench/provision: bare lab hosts to a serving cluster against the floor ({machine_note()})\n")
    rows = []
    for case, (deploy, plain, _) in cases.items():
        rows.append([case, deploy["seconds"], plain["configure"], plain["compile"], plain["seconds"],
                     deploy["seconds"] / plain["seconds"], deploy["seconds"] - plain["seconds"],
                     hit_rate(deploy["ccache"]), hit_rate(plain["ccache"]),
                     f"{deploy['load'][0]:.1f}-{deploy['load'][1]:.1f} / {plain['load'][0]:.1f}-{plain['load'][1]:.1f}"])
    print(table(["ccache", "provisioning s", "floor configure s", "floor compile s", "floor s", "x floor",
                 "over the floor s", "ccache hits, deploy", "ccache hits, floor", "load provisioning / floor"], rows))
    ops = {case: summed(deploy["ops"]) for case, (deploy, _, _) in cases.items()}
    names = list(dict.fromkeys(name for per_case in ops.values() for name in per_case))
    shown = [n for n in names if any(per_case.get(n, 0.0) >= SHOWN_S for per_case in ops.values())]
    rest = [n for n in names if n not in shown]
    print(f"\nWhere the provisioning time goes (s; an operation lasts from its start to the next one's, on every host):\n")
    phase_rows = [[name] + [ops[case].get(name, 0.0) for case in ops] for name in shown]
    phase_rows.append([f"{len(rest)} other operations (each under {SHOWN_S:.0f} s)"]
                      + [sum(ops[case].get(n, 0.0) for n in rest) for case in ops])
    phase_rows.append(["total"] + [cases[case][0]["seconds"] for case in ops])
    print(table(["operation"] + [f"{case} s" for case in ops], phase_rows))
    print("\nBoot of the fresh lab hosts, the stop of a running lab included (not counted): "
          + ", ".join(f"{case} {boot:.1f} s" for case, (_, _, boot) in cases.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
