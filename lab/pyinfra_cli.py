"""The pyinfra CLI run from the repository root, as a user runs it, and what its output says.

    proc = pyinfra(str(lab.STATE / "inventory.py"), "deploys/full.py", data={"llama_cpp_ref": "b4000"})
    results(proc)["Install llama-server"]   # {"success": 1, "error": 0, "no_change": 0}
    pyinfra_facts(inventory, "server.Os")   # {"server.Os": {"halo1": "Linux", ...}}

Used by the integration tests, the benchmarks and the demo alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {"PYTHONUNBUFFERED": "1", "TERM": "dumb", "NO_COLOR": "1"}  # plain, unbuffered output to parse


def pyinfra(*args: str, data: dict[str, str] | None = None, check: bool = False,
            timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the pyinfra CLI from the repo root, as a user would; returns its output and exit code."""
    cmd = [sys.executable, "-m", "pyinfra", "-y"]
    for key, value in (data or {}).items():
        cmd += ["--data", f"{key}={value}"]
    proc = subprocess.run(cmd + list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **ENV))
    if check and proc.returncode != 0:
        raise AssertionError(f"pyinfra {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pyinfra_facts(inventory: str, *fact_names: str, limit: str | None = None) -> dict[str, dict]:
    """`pyinfra INVENTORY fact ...` through the CLI: {fact name: {host: value}}."""
    args = [inventory, "fact", *fact_names] + (["--limit", limit] if limit else [])
    proc = pyinfra(*args, check=True)
    output = proc.stdout + proc.stderr
    found = {}
    for chunk in output.split("--> Fact data for: ")[1:]:
        name, _, body = chunk.partition("\n")
        found[name.strip()] = json.JSONDecoder().raw_decode(body.lstrip())[0]
    return found


def results(proc: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """pyinfra's closing Results table: {operation: {"success": n, "error": n, "no_change": n}}.

    >>> out = ("--> Results:\\n    Operation  Hosts  Success  Error  No Change\\n    Start x  1  1  -  -\\n"
    ...        "    Grand total  1  1  -  -\\n")
    >>> results(subprocess.CompletedProcess([], 0, out, ""))
    {'Start x': {'success': 1, 'error': 0, 'no_change': 0}}
    """
    output = proc.stdout + proc.stderr
    table = output.split("--> Results:")[-1].split("--> Disconnecting")[0].splitlines()[2:]
    found = {}
    for line in table:
        cells = line.split()
        if len(cells) < 4:
            continue
        if cells[:2] == ["Grand", "total"]:  # the sum of the rows above, not an operation
            continue
        counts = [0 if c == "-" else int(c) for c in cells[-3:]]
        found[" ".join(cells[:-4])] = dict(zip(("success", "error", "no_change"), counts))
    return found
