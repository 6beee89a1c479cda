"""What the lab's CPU cluster delivers: tokens/s of the tiny model on the head alone and through 1-3 RPC
workers, with added latency on the links, and a least-squares fit of per-token time.

    .venv/bin/python -m bench.cluster [--workers 0,1,2,3] [--delays 0,5,10,20] [--tokens 32] [--keep]

On the first 4 Debian 12 hosts of the lab (HALO_LAB_ID, default 9): deploys/full.py converges
halo1 (head) and halo1-halo4 (RPC workers) with the lab cluster's data (CPU backend, the tiny
model of lab/tiny_model.py). Then, for k = 0..3, deploys/head.py runs with an
inventory whose group rpc_workers is halo1 plus k other hosts, so llama-server on halo1 serves the
model alone (k = 0: on its own CPU) or with every layer on the k workers (--rpc). For each k and
each added one-way delay d, --requests POST /completion requests (--tokens tokens, ignore_eos,
temperature 0) go from this machine to the head on the lab bridge, after one warm-up request; the
per-token time is llama-server's own `timings.predicted_ms / predicted_n` (so this machine's HTTP
path is not in it); the best of the requests is kept for the fit (the least disturbed by other work
on this shared 2-core machine), the median is shown beside it. Requests are bounded: at most
--requests per point, no new one after --point-budget-s, each with a 120 s timeout.

Added latency: every cluster host's packets to the other lab hosts leave d ms late. With netem in
the kernel that is `tc qdisc replace dev hl<id>-haloN root netem delay d ms` on each host's veth
(bridge side); this machine's kernel has no netem (CONFIG_NET_SCH_NETEM unset), so there an
iptables NFQUEUE rule in each host's network namespace hands them to bench/delay.py, which releases
them d ms later. Either way a round trip head <-> worker gains 2 d. The "none" column has neither.

Fit: per-token time t = compute + (N - 1) x latency, N = hosts serving (head + k workers), over all
points: latency = a + b x d, so t = c + k a + k b d (least squares on c, a, b); b / 2 estimates the
round trips per worker per token. Per delay too: t = c_d + k L_d. Residuals say how close it is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.common import REPO, finish, lab_hosts, machine_note, refused_note, run_ok, table
from lab import lab
from lab.cluster import cluster_inputs

HEAD_PORT = 8080
CHAIN = "HALO_BENCH_DELAY"


class Latency:
    """Adds a one-way delay to the packets between the cluster's lab hosts (netem, else NFQUEUE)."""

    def __init__(self, hosts: list[lab.LabHost]):
        self.hosts = hosts
        self.delayers: list[subprocess.Popen] = []
        probe = subprocess.run(["tc", "qdisc", "replace", "dev", hosts[0].veth, "root", "netem", "delay", "0ms"],
                               capture_output=True, text=True)
        self.netem = probe.returncode == 0
        if not self.netem and shutil.which("iptables") is None:
            raise SystemExit("bench: this kernel has no netem, and the NFQUEUE way needs iptables: "
                             "run `bash scripts/setup` (it installs iptables) or apt-get install iptables")
        self.method = "tc netem on the veths" if self.netem else "iptables NFQUEUE + bench/delay.py (no netem)"
        self.clear()

    def set(self, delay_ms: float | None) -> None:
        """Every host's packets to the other lab hosts leave `delay_ms` late; None: nothing in the path."""
        self.clear()
        if delay_ms is None:
            return
        for host in self.hosts:
            if self.netem:
                subprocess.run(["tc", "qdisc", "replace", "dev", host.veth, "root", "netem", "delay",
                                f"{delay_ms}ms"], check=True)
                continue
            ns = ["ip", "netns", "exec", host.netns]
            delayer = subprocess.Popen([*ns, sys.executable, "-m", "bench.delay", str(delay_ms)], cwd=REPO,
                                       stdout=subprocess.PIPE, text=True)
            self.delayers.append(delayer)
            if not delayer.stdout.readline().startswith("delay:"):
                raise SystemExit(f"bench: bench/delay.py did not start in {host.netns}")
            for rule in ([CHAIN, "-d", f"{lab.SUBNET}.1", "-j", "RETURN"],
                         [CHAIN, "-d", f"{lab.SUBNET}.0/24", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]):
                subprocess.run([*ns, "iptables", "-A", *rule], check=True)
            subprocess.run([*ns, "iptables", "-I", "OUTPUT", "-j", CHAIN], check=True)

    def clear(self, remove: bool = False) -> None:
        """No added delay (the NFQUEUE chain stays, empty, unless `remove`)."""
        for host in self.hosts:
            if self.netem:
                subprocess.run(["tc", "qdisc", "del", "dev", host.veth, "root"], capture_output=True)
                continue
            ns = ["ip", "netns", "exec", host.netns, "iptables"]
            subprocess.run([*ns, "-D", "OUTPUT", "-j", CHAIN], capture_output=True)
            subprocess.run([*ns, "-F", CHAIN], capture_output=True)
            subprocess.run([*ns, "-X" if remove else "-N", CHAIN], capture_output=True)
        time.sleep(0.2)  # packets already queued leave before their delayer does
        for delayer in self.delayers:
            delayer.terminate()
            delayer.wait(timeout=10)
        self.delayers = []


def completion(address: str, tokens: int) -> dict:
    body = json.dumps({"prompt": "The cluster says", "n_predict": tokens, "temperature": 0,
                       "ignore_eos": True}).encode()
    request = urllib.request.Request(f"http://{address}:{HEAD_PORT}/completion", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())["timings"]


def per_token_ms(address: str, tokens: int, requests: int, budget_s: float) -> tuple[float, float, int]:
    """(best, median, count) of the generation time per token (llama-server's timings) over at most
    `requests` requests. The best is the least disturbed by other work on this shared machine."""
    completion(address, 4)  # warm-up
    times, deadline = [], time.monotonic() + budget_s
    while len(times) < requests and (not times or time.monotonic() < deadline):
        t = completion(address, tokens)
        times.append(t["predicted_ms"] / t["predicted_n"])
    return min(times), statistics.median(times), len(times)


def fit(points: list[tuple[int, float, float]]) -> dict:
    """Least squares of t = c + k a + k b d over (k, d, t); with the residuals."""
    k, d, t = (np.array(column, dtype=float) for column in zip(*points))
    design = np.column_stack([np.ones_like(k), k, k * d])
    (c, a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
    predicted = design @ np.array([c, a, b])
    residual = t - predicted
    r2 = 1 - float(residual @ residual) / float(((t - t.mean()) ** 2).sum())
    delayed = (k > 0) & (d > 0)  # the points where the links carry the delay
    return {"c": c, "a": a, "b": b, "r2": r2, "max_abs": float(np.abs(residual).max()),
            "max_rel": float(np.abs(residual / t).max()),
            "max_rel_delayed": float(np.abs(residual / t)[delayed].max()) if delayed.any() else float("nan")}


def fit_per_delay(points: list[tuple[int, float, float]], delay: float) -> tuple[float, float, float]:
    """t = c_d + k L_d for one delay: (c_d, L_d, largest |residual|)."""
    k, t = (np.array(c, dtype=float) for c in zip(*[(p[0], p[2]) for p in points if p[1] == delay]))
    design = np.column_stack([np.ones_like(k), k])
    (c, slope), *_ = np.linalg.lstsq(design, t, rcond=None)
    return c, slope, float(np.abs(t - design @ np.array([c, slope])).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="0,1,2,3", help="numbers of RPC workers (default 0,1,2,3)")
    parser.add_argument("--delays", default="0,5,10,20", help="added one-way delays in ms (default 0,5,10,20)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per request (default 32)")
    parser.add_argument("--requests", type=int, default=3, help="measured requests per point (default 3)")
    parser.add_argument("--point-budget-s", type=float, default=60, help="no new request after this (default 60)")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    counts = [int(k) for k in args.workers.split(",")]
    delays = [float(d) for d in args.delays.split(",")]
    hosts = lab_hosts(max(counts) + 1)
    head = hosts[0]
    measured: dict[tuple[int, float | None], float] = {}  # best per-token ms of each point
    medians: dict[tuple[int, float | None], float] = {}
    latency = Latency(hosts)
    try:
        with cluster_inputs() as data, tempfile.TemporaryDirectory() as tmp:
            def inventory(members: list[lab.LabHost]) -> Path:
                path = Path(tmp) / f"cluster-{len(members)}.py"
                path.write_text(lab.inventory_text(members))  # head: the first; rpc_workers: all of them
                return path

            everything = inventory(hosts)
            run = run_ok("deploys/full.py on the cluster", everything, "deploys/full.py", data)
            print(f"deploys/full.py on {len(hosts)} hosts: {run.seconds:.1f} s", flush=True)
            print(f"added latency through {latency.method}", flush=True)
            for k in counts:
                run = run_ok(f"deploys/head.py with {k} RPC workers", inventory(hosts[:k + 1]), "deploys/head.py",
                             data)
                rpc = lab.ssh(head, "grep -s ^LLAMA_ARG_RPC= /etc/halo-provision/llama-server.env || true").stdout
                print(f"{k} workers: head.py {run.seconds:.1f} s, {rpc.strip() or 'no --rpc: the head alone'}",
                      flush=True)
                for delay in [None, *delays]:
                    latency.set(delay)
                    ms, mid, n = per_token_ms(head.address, args.tokens, args.requests, args.point_budget_s)
                    measured[(k, delay)], medians[(k, delay)] = ms, mid
                    shown = "none" if delay is None else f"{delay:g} ms"
                    print(f"  delay {shown}: best {ms:.2f} ms/token ({1000 / ms:.1f} tokens/s), median {mid:.2f}, "
                          f"{n} requests", flush=True)
                latency.clear()
            run_ok("deploys/head.py back to all workers", everything, "deploys/head.py", data)
    finally:
        latency.clear(remove=True)
        finish(args.keep)

    points = [(k, d, measured[(k, d)]) for k in counts for d in delays]
    result = fit(points)
    header = ["RPC workers (N-1)", "none"] + [f"{d:g} ms" for d in delays]
    rows = [[k] + [f"{measured[(k, d)]:.2f} ({1000 / measured[(k, d)]:.0f}/s; {medians[(k, d)]:.2f})"
                   for d in [None, *delays]] for k in counts]
    print(f"\n### Tiny model on the lab CPU cluster ({machine_note()})\n")
    print(f"ms per generated token, best of {args.requests} requests (tokens/s; median ms), by added one-way "
          f"delay ({latency.method}; 'none': nothing in the path); the fits use the best:\n")
    print(table(header, rows))
    print("\nPer delay, t = c_d + (N-1) L_d:\n")
    print(table(["delay ms", "c_d ms", "L_d ms per worker", "largest residual ms"],
                [[f"{d:g}", *fit_per_delay(points, d)] for d in delays]))
    print(f"\nAll points, t = c + (N-1) (a + b d): c = {result['c']:.2f} ms, a = {result['a']:.2f} ms per worker, "
          f"b = {result['b']:.2f} ms per worker per ms of one-way delay (about {result['b'] / 2:.1f} round trips "
          f"per worker per token); R^2 = {result['r2']:.4f}; largest residual {result['max_abs']:.2f} ms; "
          f"largest relative residual {100 * result['max_rel_delayed']:.1f}% among the points with workers and "
          f"added delay, {100 * result['max_rel']:.0f}% over all points (the sub-millisecond ones are noise)")
    print(refused_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
