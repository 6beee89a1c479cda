"""The main job on the built-in lab: boot three hosts, provision them with deploys/full.py, verify.

    python -m lab.demo              # (scripts/demo runs this after setup)

Three Debian 12 lab hosts with a fake Strix Halo GPU (halo1 head and worker, halo2 and halo3 workers)
are provisioned through pyinfra over SSH exactly as real boxes would be, with the CPU backend and
the llama.cpp source and model served on the lab bridge. Then deploys/verify.py prints the verified
result. The lab keeps running; `python -m lab stop` ends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from lab import lab
from lab.cluster import HOSTS, cluster_inputs
from lab.pyinfra_cli import REPO


def pyinfra(inventory: str, deploy: str, data: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "pyinfra", "-y", inventory, deploy]
    for key, value in data.items():
        cmd += ["--data", f"{key}={value}"]
    print(f"\n$ pyinfra {Path(inventory).name} {deploy} " + " ".join(f"--data {k}=..." for k in data), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode


def show_completion(head: lab.LabHost) -> None:
    """Ask the head's llama-server for a few tokens and show where the model's layers live."""
    request = urllib.request.Request(
        f"http://{head.address}:8080/completion", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"prompt": "Strix Halo", "n_predict": 8}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.load(response)
    print(f"\n$ curl http://{head.address}:8080/completion  (the tiny model has random weights: garbage text)")
    print(f"{reply.get('tokens_predicted')} tokens: {reply.get('content')!r}")
    buffers = lab.ssh(head, "journalctl -u halo-llama-server -b --no-pager | grep 'model buffer size' | tail -n 3")
    print("model buffers:\n" + buffers.stdout.rstrip())


def main() -> int:
    hosts = lab.ensure(lab.parse_host_args(HOSTS))
    for host in hosts:
        print(f"lab host {host.name}\t{host.address}\tDebian {host.release}")
    inventory = str(lab.STATE / "inventory.py")
    with cluster_inputs() as data:
        if pyinfra(inventory, "deploys/full.py", data) != 0:
            print("demo: deploys/full.py failed (see above)", file=sys.stderr)
            return 1
        status = pyinfra(inventory, "deploys/verify.py", data)
    head = hosts[0]
    show_completion(head)
    print(next_steps(head, inventory))
    return status


def next_steps(head: lab.LabHost, inventory: str) -> str:
    """What a newcomer does next: ask the cluster, verify it, look inside, stop the lab.

    >>> print(next_steps(lab.LabHost("halo1", "10.151.0.11"), "/lab/inventory.py"))  # doctest: +ELLIPSIS
    <BLANKLINE>
    Next:
      The cluster answers at http://10.151.0.11:8080 (OpenAI-compatible API, llama-server's web UI):
        curl -s http://10.151.0.11:8080/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}'
    ...
    """
    state = Path(inventory).parent
    url = f"http://{head.address}:8080"
    return f"""
Next:
  The cluster answers at {url} (OpenAI-compatible API, llama-server's web UI):
    curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{{"messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 16}}'
  Verify it again (one table per host):   .venv/bin/pyinfra -y {inventory} deploys/verify.py
  The testinfra suite:                    .venv/bin/pytest tests/verify --hosts=$(cat {state}/hosts.txt) \\
                                            --ssh-config={state}/ssh_config --inventory={inventory}
  A shell on the head:                    ssh -F {state}/ssh_config {head.name}
  Stop the lab (nothing is left behind):  .venv/bin/python -m lab stop"""


if __name__ == "__main__":
    sys.exit(main())
