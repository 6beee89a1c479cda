"""What the benchmarks share: a lab of Debian 12 hosts, timed pyinfra runs, result checks, tables.

    hosts = lab_hosts(4)                        # reuses a running lab of >= 4 Debian 12 hosts
    run = run_ok("full.py", INVENTORY, "deploys/full.py", data, limit=hosts[:2])
    print(run.seconds, run.changed)              # wall time of the CLI; operations that changed
"""

from __future__ import annotations

import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab import lab
from lab.pyinfra_cli import ENV, REPO, results

LAB_INVENTORY = lab.STATE / "inventory.py"


def lab_hosts(count: int) -> list[lab.LabHost]:
    """halo1..haloN on Debian 12: the running lab when it has at least `count` such hosts, else a new one."""
    running = lab.load_hosts()
    usable = (
        len(running) >= count
        and all(h.release == "12" and lab.is_alive(h) for h in running)
        and [h.name for h in running[:count]] == [f"halo{i}" for i in range(1, count + 1)]
    )
    if not usable:
        print(f"bench: starting a lab of {count} Debian 12 hosts (HALO_LAB_ID={lab.LAB_ID})", flush=True)
        lab.start(lab.parse_host_args([f"halo{i}:12" for i in range(1, count + 1)]))
        running = lab.load_hosts()
    return sorted(running, key=lambda h: int(h.name.removeprefix("halo")))[:count]


@dataclass
class Run:
    """One pyinfra CLI run: its wall time, exit code and output."""

    seconds: float
    proc: subprocess.CompletedProcess

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    @property
    def ok(self) -> bool:
        return self.proc.returncode == 0

    @property
    def changed(self) -> dict[str, dict[str, int]]:
        """Operations that changed something (or failed), from pyinfra's Results table."""
        return {op: r for op, r in results(self.proc).items() if r["success"] or r["error"]}


def pyinfra(inventory: str | Path, deploy: str, data: dict[str, str] | None = None,
            limit: list[lab.LabHost] | None = None, trace: Path | None = None,
            timeout: float = 3600) -> Run:
    """Run the pyinfra CLI (-y, as the tests and unattended users do) and time it from start to exit.

    With `trace`, the CLI runs under bench.traced_pyinfra, which records every remote command there.
    """
    cmd = cli_command(inventory, deploy, data, limit, trace)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **ENV))
    return Run(time.monotonic() - start, proc)


def cli_command(inventory: str | Path, deploy: str, data: dict[str, str] | None = None,
                limit: list[lab.LabHost] | None = None, trace: Path | None = None) -> list[str]:
    """The pyinfra command line of a run (-y), optionally under bench.traced_pyinfra."""
    cmd = [sys.executable, "-m", "bench.traced_pyinfra", str(trace)] if trace else [sys.executable, "-m", "pyinfra"]
    cmd += ["-y", str(inventory), deploy]
    for key, value in (data or {}).items():
        cmd += ["--data", f"{key}={value}"]
    for host in limit or []:
        cmd += ["--limit", host.name]
    return cmd


# pyinfra prints "--> Starting operation: <deploy> | <operation> [(args)]" (or "Starting serial operation:")
_OPERATION_START = re.compile(r"^--> Starting (?:[\w ,]+ )?operation: (.+?)\s*$")


def operation_started(line: str) -> str | None:
    """The operation (with its step) whose start a line of pyinfra's output announces, else None.

    >>> operation_started("--> Starting operation: Build llama.cpp | Build llama.cpp lab-0.3.36 (cpu)")
    'Build llama.cpp | Build llama.cpp lab-0.3.36 (cpu)'
    >>> operation_started("    [halo1] Success") is None
    True
    """
    found = _OPERATION_START.match(line.strip())
    return found.group(1) if found else None


def watched_run(inventory: str | Path, deploy: str, data: dict[str, str] | None = None,
                timeout: float = 3600) -> tuple[Run, list[tuple[float, str]]]:
    """pyinfra(...) with its output read as it comes: (the Run, [(seconds from the start, operation)] for
    each operation's start, in order). pyinfra runs one operation at a time on all hosts, so an
    operation lasts from its start to the next one's."""
    cmd = cli_command(inventory, deploy, data)
    starts, lines = [], []
    start = time.monotonic()
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, **ENV)) as proc:
        killer = threading.Timer(timeout, proc.kill)  # a hung run ends the benchmark, not the machine's day
        killer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                operation = operation_started(line)
                if operation:
                    starts.append((time.monotonic() - start, operation))
        finally:
            killer.cancel()
    seconds = time.monotonic() - start
    return Run(seconds, subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines), "")), starts


def require(run: Run, what: str) -> Run:
    """Stop the benchmark with pyinfra's output when a run that must succeed failed (or ran on no host)."""
    if not run.ok or "No host matches found" in run.output:
        log = Path(tempfile.gettempdir()) / f"bench-failed-{os.getpid()}.log"
        log.write_text(run.output)
        tail = "\n".join(run.output.splitlines()[-60:])
        raise SystemExit(f"bench: {what} failed (exit {run.proc.returncode}), whole output in {log}:\n{tail}")
    return run


# sshd refused to open one more channel on a connection: more than its MaxSessions (10) at once
CHANNEL_REFUSED = "open failed: Connect failed"
refused: list[str] = []  # runs that failed that way (and were run again)


def run_ok(what: str, *args, attempts: int = 3, **kwargs) -> Run:
    """pyinfra(*args, **kwargs), which must succeed; a run that failed only because sshd refused an SSH
    channel is noted in `refused` and run again (at most `attempts` runs)."""
    for attempt in range(1, attempts + 1):
        run = pyinfra(*args, **kwargs)
        if run.ok or CHANNEL_REFUSED not in run.output or attempt == attempts:
            return require(run, what)
        refused.append(what)
        print(f"  {what}: failed, sshd refused an SSH channel (MaxSessions); running it again", flush=True)
    raise AssertionError("unreachable")


def failure_cause(run: Run, lines: int = 3) -> str:
    """Why a pyinfra run failed, in a few of its own lines (errors first, else its last lines).

    >>> import subprocess
    >>> out = "\\n".join(["--> Preparing operations...", "[halo3] Error: could not load fact: facts.x.Y", "Results"])
    >>> failure_cause(Run(1.0, subprocess.CompletedProcess([], 1, out, "")))
    'exit 1: [halo3] Error: could not load fact: facts.x.Y'
    """
    text = [line.strip() for line in run.output.splitlines() if line.strip()]
    errors = [line for line in text if any(word in line for word in ("Error", "error:", "FAILED", "failed", "Traceback"))]
    return f"exit {run.proc.returncode}: " + " / ".join((errors or text)[-lines:])[:600]


def refused_note() -> str:
    if not refused:
        return ""
    return (f"\n{len(refused)} run(s) failed because sshd refused an SSH channel (more than MaxSessions = 10 "
            f"sessions at once on one connection) and were run again: {', '.join(sorted(set(refused)))}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    def cell(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine_note() -> str:
    """When and where the figures were taken (the load matters: the machine is shared)."""
    load = os.getloadavg()
    return (f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, load average "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end, lab HALO_LAB_ID={lab.LAB_ID}")


def finish(keep: bool) -> None:
    """Stop the lab unless asked to keep it for the next benchmark."""
    if keep:
        print(f"bench: the lab keeps running (HALO_LAB_ID={lab.LAB_ID}); stop it with "
              f"HALO_LAB_ID={lab.LAB_ID} .venv/bin/python -m lab stop")
    else:
        lab.stop()
