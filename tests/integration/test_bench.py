"""bench/llama_bench.py on the lab cluster: llama-bench on the head with 0, 1 and 2 RPC workers, one
table; llama-server serves again afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

from lab.pyinfra_cli import REPO
from tests.integration.test_head import UNIT, address, http, sh


def test_the_cluster_benchmark_prints_one_row_per_node_count(cluster, tmp_path):
    data = [arg for key, value in cluster.data.items() for arg in ("--data", f"{key}={value}")]
    out = tmp_path / "scaling.json"
    proc = subprocess.run([sys.executable, "-m", "bench.llama_bench", cluster.inventory, *data, "-p", "32", "-n", "8",
                           "-r", "1", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    workers = [f"{address(name)}:50052" for name in ("halo2", "halo3")]
    assert [(r["nodes"], r["rpc"]) for r in rows] == [(1, []), (2, workers[:1]), (3, workers)]
    assert all(r["pp"] > 0 and r["tg"] > 0 for r in rows), rows
    lines = proc.stdout.splitlines()
    assert lines[0] == "| nodes | RPC servers | pp32 t/s | tg8 t/s | pp vs 1 node | tg vs 1 node |"
    assert lines[2].startswith("| 1 | - | ") and lines[2].endswith(" | 1.00x | 1.00x |")
    assert lines[4].startswith(f"| 3 | {workers[0]}, {workers[1]} | ")
    assert sh(f"systemctl is-active {UNIT}") in ("active", "activating")
    for _ in range(60):
        if http("/health")[0] == 200:
            break
        sh("sleep 2")
    assert http("/health")[0] == 200
