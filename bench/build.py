"""What deploys/llama_cpp.py costs: nothing to do, a new ref, a clean build, build once versus on each host.

    .venv/bin/python -m bench.build [--repeats 3] [--skip-clean] [--keep]

On the first 3 Debian 12 hosts of the lab (HALO_LAB_ID, default 9; a larger running lab is reused
with --limit) with the lab cluster's data (CPU backend, llama.cpp served on the bridge, the lab's
shared ccache per Debian release). Each figure is the wall time of one pyinfra CLI run of the step:

- baseline: an empty deploy on 1 host (Python start, inventory, SSH connect): what any run costs;
- no change: 1 host and 3 hosts, median of --repeats (target: under 2 s per host);
- new ref: a copy of the served repository with one more commit (a one-line change in
  ggml/src/ggml-rpc/ggml-rpc.cpp, unique per run so no earlier build matches), built once into the
  existing build tree and copied to the other 2; then back to the pinned ref (a kept build);
- fresh hosts: /opt/llama.cpp removed on all 3, the shared ccache warm: llama_cpp_build_once=True
  (one build, two copies) versus False (three builds at once), after one False run that installs
  the build tools on the hosts that so far only took copies (timed too);
- clean build: 1 host, /opt/llama.cpp removed and an empty tmpfs over its ccache directory (the lab
  binds the shared cache there): clone, configure and compile from nothing, as on a new machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import (
    LAB_INVENTORY,
    finish,
    lab_hosts,
    machine_note,
    median,
    refused_note,
    run_ok,
    table,
    verdict,
)
from lab import lab
from lab.cluster import cluster_inputs
from lab.llama_source import git, llama_repo, serve

STEP = "deploys/llama_cpp.py"
NO_CHANGE_TARGET_S = 2.0
PREFIX = "/opt/llama.cpp"
CCACHE = "/root/.cache/ccache"  # where the lab binds the shared compiler cache in each host


def new_ref_repo(directory: Path) -> tuple[Path, str]:
    """A bare copy of the served repository with one more commit and tag; returns (repo, tag)."""
    work = directory / "work"
    git("clone", "-q", str(llama_repo()), str(work), cwd=directory)
    tag = f"bench-{int(time.time())}"
    source = work / "ggml/src/ggml-rpc/ggml-rpc.cpp"
    source.write_text(source.read_text() + f'\n[[maybe_unused]] static const char halo_bench_tag[] = "{tag}";\n')
    git("commit", "-q", "-am", f"bench: one-line change ({tag})", cwd=work)
    git("tag", tag, cwd=work)
    bare = directory / "llama.cpp-bench.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=directory)
    git("update-server-info", cwd=bare)
    return bare, tag


def on_hosts(hosts: list[lab.LabHost], command: str) -> None:
    for host in hosts:
        lab.ssh(host, command, timeout=120)


def serving_commits(hosts: list[lab.LabHost]) -> set[str]:
    out = [lab.ssh(h, f"grep -o '\"commit\": \"[0-9a-f]*' {PREFIX}/current/halo-build.json").stdout for h in hosts]
    return {text.strip().split('"')[-1] for text in out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed no-change runs per size (default 3)")
    parser.add_argument("--skip-clean", action="store_true", help="leave out the clean build (the slow one)")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args()
    hosts = lab_hosts(3)
    one = hosts[:1]
    rows: list[list[object]] = []

    def timed(what: str, hosts_: list[lab.LabHost], data: dict[str, str], deploy: str = STEP):
        run = run_ok(what, LAB_INVENTORY, deploy, data, limit=hosts_)
        print(f"  {what}: {run.seconds:.1f} s" + (f" (changed: {len(run.changed)} operations)" if run.changed else ""),
              flush=True)
        return run

    try:
        with cluster_inputs() as data, tempfile.TemporaryDirectory() as tmp:
            timed("converge", hosts, data)

            empty = Path(tmp) / "empty_deploy.py"
            empty.write_text('"""Nothing: what any pyinfra run costs."""\n')
            base = [timed("baseline: empty deploy, 1 host", one, data, deploy=str(empty)).seconds
                    for _ in range(args.repeats)]
            rows.append(["baseline: empty deploy (start, connect)", 1, median(base)])

            nochange = {}
            for group in (one, hosts):
                times = []
                for _ in range(args.repeats):
                    run = timed(f"no change, {len(group)} hosts", group, data)
                    if run.changed:
                        print(f"  NOT a no-change run: {run.changed}")
                    times.append(run.seconds)
                nochange[len(group)] = median(times)
                rows.append(["no change", len(group), median(times)])

            repo, tag = new_ref_repo(Path(tmp))
            server, port = serve(Path(tmp), f"{lab.SUBNET}.1")
            try:
                moved = dict(data, llama_cpp_repo=f"http://{lab.SUBNET}.1:{port}/{repo.name}", llama_cpp_ref=tag)
                run = timed(f"new ref {tag}: incremental build once + 2 copies", hosts, moved)
                rows.append(["new ref: one-line change, incremental build once, 2 copies", 3, run.seconds])
                assert serving_commits(hosts) == {git("rev-parse", f"{tag}^{{commit}}", cwd=repo).strip()}
            finally:
                server.shutdown()
                server.server_close()
            run = timed("back to the pinned ref (kept build, 2 copies)", hosts, data)
            rows.append(["back to the pinned ref: kept build, 2 copies", 3, run.seconds])

            # First a build on each host, which installs the build tools on the hosts that only took copies
            # so far; then the two compared from the same start (no /opt/llama.cpp, tools installed).
            cases = ((False, "a build on each host, at once, warm-up (installs the build tools where missing)"),
                     (True, "build once + 2 copies"), (False, "a build on each host, at once"))
            for once, label in cases:
                on_hosts(hosts, f"rm -rf {PREFIX}")
                run = timed(f"fresh hosts, warm ccache, {label}", hosts, dict(data, llama_cpp_build_once=str(once)))
                rows.append([f"fresh hosts, warm shared ccache: {label} (llama_cpp_build_once={once})", 3,
                             run.seconds])

            if not args.skip_clean:
                on_hosts(one, f"rm -rf {PREFIX} && mount -t tmpfs -o size=4g halo-bench-ccache {CCACHE}")
                try:
                    run = timed("clean build: no build tree, empty ccache", one, data)
                    stats = lab.ssh(one[0], "ccache -s 2>&1 | grep -iE 'hits|misses' | head -n 4").stdout
                    print("  ccache in the empty cache afterwards:\n    " + stats.strip().replace("\n", "\n    "))
                    rows.append(["clean build: clone, configure, compile, no ccache", 1, run.seconds])
                finally:
                    on_hosts(one, f"umount {CCACHE}")
            timed("converge again (pinned ref, build once)", hosts, data)
    finally:
        finish(args.keep)

    print(f"\n### deploys/llama_cpp.py ({machine_note()})\n")
    print(table(["case", "hosts", "wall s"], rows))
    print(refused_note())
    print(f"\nno change: {nochange[1]:.2f} s on 1 host, {nochange[3]:.2f} s on 3 hosts "
          f"({nochange[3] / 3:.2f} s per host); target < {NO_CHANGE_TARGET_S:.0f} s per host: "
          f"{verdict(nochange[1] < NO_CHANGE_TARGET_S)} (1 host), "
          f"{verdict(nochange[3] / 3 < NO_CHANGE_TARGET_S)} (3 hosts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
