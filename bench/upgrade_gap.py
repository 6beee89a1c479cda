"""How long a serving cluster stops serving while deploys/full.py upgrades llama_cpp_ref, and how long it takes.

    .venv/bin/python -m bench.upgrade_gap [--keep]

On the lab cluster of lab/cluster.py (halo1 head and worker, halo2 and halo3 workers, CPU
backend, the tiny model), converged on the lab's tag: a poller POSTs /completion (8 tokens) to the
head from this machine every 0.5 s while `pyinfra deploys/full.py` runs with llama_cpp_ref = the
lab's next tag (one commit later, lab/llama_source.upgrade_repo: the builder compiles it
incrementally, the other hosts get a copy), then again back to the lab's tag (its build is still on
every host: nothing is compiled). The pyinfra output is read line by line as it comes, so the start
of each step is timed: the build, the switch of `current` on every host, the RPC servers' restart,
llama-server's restart. Printed per upgrade: the run's wall time, when the switch came, the
serving gap (from the last request completed before the first failure to the first completed
after it; no failure: 0), the requests that failed, how often llama-server started, and that every
host's `current` and every running server is the new build afterwards. For scale: the head's model
reload time, `systemctl restart halo-llama-server` to the first completed request, 3 times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.common import finish, machine_note, run_ok, table, watched_run
from bench.worker_restart import HEAD, HEAD_PORT, HEAD_UNIT, completion, head_restarts
from lab import lab
from lab.cluster import HOSTS, cluster_inputs
from lab.llama_source import NEXT_TAG, TAG, serve, upgrade_repo

POLL_S = 0.5
# operations whose first start is timed (pyinfra prints "--> Starting operation: <step> | <name>")
MARKS = {"build": "Build llama.cpp", "switch": "Serve the new build on every host at once",
         "workers": "Restart halo-rpc@", "head": "Run llama-server with the current settings and build"}


class Poller(threading.Thread):
    """Requests a completion every POLL_S until stopped; records (time, ok) of each answer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.stopping = url, [], threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            ok = completion(self.url)
            self.answers.append((time.monotonic(), ok))
            self.stopping.wait(POLL_S)

    def gap(self) -> tuple[float, int]:
        """(longest stretch from the last success before a failure to the next success, failed requests)."""
        longest, last_ok, failing = 0.0, None, False
        for when, ok in self.answers:
            if ok:
                if failing and last_ok is not None:
                    longest = max(longest, when - last_ok)
                last_ok, failing = when, False
            else:
                failing = True
        return longest, sum(1 for _, ok in self.answers if not ok)


def timed_run(inventory: Path, data: dict[str, str]) -> tuple[float, dict[str, float], str, int]:
    """pyinfra deploys/full.py, its output read as it comes: (seconds, {mark: seconds from start}, output, rc)."""
    run, starts = watched_run(inventory, "deploys/full.py", data)
    marks = {}
    for when, operation in starts:
        for mark, name in MARKS.items():
            if mark not in marks and name in operation:
                marks[mark] = when
    return run.seconds, marks, run.output, run.proc.returncode


def builds_now() -> dict[str, set[str]]:
    """{host: ids of `current` and of every running halo-rpc@ and llama-server executable's build}."""
    found = {}
    for name in ("halo1", "halo2", "halo3"):
        out = lab.ssh(name, "basename $(readlink -f /opt/llama.cpp/current); for u in $(systemctl list-units "
                            "--plain --no-legend 'halo-rpc@*' halo-llama-server.service | awk '{print $1}'); do "
                            "pid=$(systemctl show -p MainPID --value $u); readlink /proc/$pid/exe | "
                            "sed -n 's|.*/builds/\\([^/]*\\)/bin/.*|\\1|p'; done").stdout
        found[name] = set(out.split())
    return found


def reload_time(url: str) -> float:
    """`systemctl restart` of llama-server to its first completed request."""
    start = time.monotonic()
    lab.ssh(HEAD, f"systemctl restart {HEAD_UNIT}")
    while not completion(url):
        if time.monotonic() - start > 300:
            raise SystemExit("bench: the head did not serve within 300 s of its restart")
        time.sleep(0.2)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    args = parser.parse_args()

    lab.ensure(lab.parse_host_args(HOSTS))
    inventory = lab.STATE / "inventory.py"
    url = f"http://{lab.running_host(HEAD).address}:{HEAD_PORT}/completion"
    rows = []
    with cluster_inputs() as data, tempfile.TemporaryDirectory(prefix="halo-upgrade-") as tmp:
        run_ok("deploys/full.py", inventory, "deploys/full.py", data)
        repo = upgrade_repo(Path(tmp))
        server, port = serve(Path(tmp), f"{lab.SUBNET}.1")
        try:
            reloads = [reload_time(url) for _ in range(3)]
            print(f"model reload (restart to first completion): {', '.join(f'{r:.1f}' for r in reloads)} s", flush=True)
            for ref in (NEXT_TAG, TAG):
                upgrade = {**data, "llama_cpp_repo": f"http://{lab.SUBNET}.1:{port}/{repo.name}", "llama_cpp_ref": ref}
                if not completion(url):
                    raise SystemExit("bench: the head does not complete a request before the upgrade")
                starts, poller = head_restarts(), Poller(url)
                poller.start()
                seconds, marks, output, rc = timed_run(inventory, upgrade)
                time.sleep(3)  # requests after the run: the gap may end after it
                poller.stopping.set()
                poller.join()
                if rc != 0:
                    log = Path(tempfile.gettempdir()) / f"bench-upgrade-{os.getpid()}.log"
                    log.write_text(output)
                    raise SystemExit(f"bench: deploys/full.py to {ref} failed ({rc}); output in {log}")
                gap, failed = poller.gap()
                ids = builds_now()
                one = len(set().union(*ids.values())) == 1
                print(f"  to {ref}: {seconds:.1f} s; marks {', '.join(f'{k} {v:.1f}' for k, v in marks.items())}; "
                      f"gap {gap:.1f} s, {failed} failed of {len(poller.answers)} requests; builds {ids}", flush=True)
                rows.append([ref, seconds, marks.get("switch", float("nan")),
                             marks.get("head", float("nan")) - marks.get("workers", float("nan")), gap, failed,
                             len(poller.answers), head_restarts() - starts, "yes" if one else f"no: {ids}"])
        finally:
            server.shutdown()
            server.server_close()
    print(f"\nllama_cpp_ref changed on the serving lab cluster by deploys/full.py; requests every {POLL_S} s:\n")
    print(table(["to ref", "run s", "switch at s", "workers to head s", "gap s", "failed", "requests",
                 "llama-server starts", "one build after"], rows))
    print(f"\nmodel reload for scale: median {sorted(reloads)[1]:.1f} s of 3 ({machine_note()})")
    finish(args.keep)


if __name__ == "__main__":
    main()
