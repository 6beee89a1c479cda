"""What a lab cluster needs from outside, made locally and served on the lab bridge.

    with cluster_inputs() as data:      # llama.cpp repo (and the tiny model) over HTTP on the bridge
        pyinfra(inventory, "deploys/full.py", data=data)

The data sets the CPU backend (no GPU here) and points every URL at the bridge, so nothing reaches
the internet: the llama.cpp source is the tree vendored by a PyPI package (llama_source.py).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

from lab import lab
from lab.llama_source import TAG, llama_repo, serve
from lab.tiny_model import write_tiny_model

HOSTS = ["halo1:12", "halo2:12", "halo3:12"]  # one distro: llama.cpp is built once and copied


@contextmanager
def cluster_inputs():
    """Serve the inputs for the duration of the block; yields the pyinfra --data for the cluster."""
    repo = llama_repo()
    model = write_tiny_model(repo.parent / "tiny.gguf")  # served next to the repository
    bridge = f"{lab.SUBNET}.1"
    server, port = serve(repo.parent, bridge)
    try:
        yield {
            "llama_cpp_repo": f"http://{bridge}:{port}/{repo.name}",
            "llama_cpp_ref": TAG,
            "llama_cpp_backend": "cpu",
            "model_url": f"http://{bridge}:{port}/{model.name}",
            "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        }
    finally:
        server.shutdown()
        server.server_close()
