"""How long the head stops serving when an RPC worker restarts, with no action of ours.

    .venv/bin/python -m bench.worker_restart [--repeat 3] [--worker halo2] [--keep]

On the lab cluster of lab/cluster.py (halo1 head and worker, halo2 and halo3 workers, CPU
backend, the tiny model), converged by deploys/full.py: `systemctl restart halo-rpc@50052` on the
worker, then POST /completion (8 tokens) from this machine to the head every 0.5 s until one
answers 200. llama.cpp's RPC client does not reconnect: the first request after the restart makes
llama-server abort; systemd starts it again (Restart=always) once the unit's ExecStartPre sees every
RPC server accept connections, and the model loads again over RPC. The gap is from the restart of
the worker to the first completed request; also printed: the requests that failed meanwhile and how
often systemd started llama-server again.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request

from bench.common import finish, machine_note, run_ok, table
from lab import lab
from lab.cluster import HOSTS, cluster_inputs

HEAD, HEAD_PORT, RPC_PORT = "halo1", 8080, 50052
HEAD_UNIT = "halo-llama-server.service"


def completion(url: str) -> bool:
    """One request of 8 tokens; True when it answered 200 with them."""
    body = json.dumps({"prompt": "Strix Halo", "n_predict": 8, "ignore_eos": True}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status == 200 and json.loads(answer.read())["tokens_predicted"] == 8
    except (OSError, ValueError, KeyError):
        return False


def head_restarts() -> int:
    return int(lab.ssh(HEAD, f"systemctl show -p NRestarts --value {HEAD_UNIT}").stdout)


def gap_after_restart(worker: str, url: str, limit_s: float = 300) -> tuple[float, int, int]:
    """Restart the worker's RPC server; (seconds until a completion works again, failed requests,
    automatic starts of llama-server meanwhile)."""
    if not completion(url):
        raise SystemExit(f"bench: the head does not complete at {url} before the worker restart")
    restarts = head_restarts()
    start = time.monotonic()
    lab.ssh(worker, f"systemctl restart halo-rpc@{RPC_PORT}.service")
    failed = 0
    while not completion(url):
        failed += 1
        if time.monotonic() - start > limit_s:
            raise SystemExit(f"bench: the head did not complete a request within {limit_s:.0f} s of the restart")
        time.sleep(0.5)
    return time.monotonic() - start, failed, head_restarts() - restarts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", default="halo2")
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    args = parser.parse_args()

    lab.ensure(lab.parse_host_args(HOSTS))
    url = f"http://{lab.running_host(HEAD).address}:{HEAD_PORT}/completion"
    with cluster_inputs() as data:
        run_ok("deploys/full.py", lab.STATE / "inventory.py", "deploys/full.py", data)
    rows = []
    for i in range(1, args.repeat + 1):
        seconds, failed, restarts = gap_after_restart(args.worker, url)
        print(f"  restart {i}: served again after {seconds:.1f} s ({failed} failed requests, "
              f"llama-server started {restarts} time(s))", flush=True)
        rows.append([i, seconds, failed, restarts])
    print(f"\nhalo-rpc@{RPC_PORT} on {args.worker} restarted; gap until the head completes a request again:\n")
    print(table(["restart", "gap s", "failed requests", "llama-server starts"], rows))
    gaps = sorted(row[1] for row in rows)
    print(f"\nmedian {gaps[len(gaps) // 2]:.1f} s, max {gaps[-1]:.1f} s ({machine_note()})")
    finish(args.keep)


if __name__ == "__main__":
    main()
