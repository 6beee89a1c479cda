"""Benchmarks of halo-provision on the test lab: scripts that print figures, not tests.

    .venv/bin/python -m bench.noop_run     # a no-change run of deploys/full.py on 1, 2, 4, 8 hosts
    .venv/bin/python -m bench.build        # deploys/llama_cpp.py: no change, new ref, clean, build once
    .venv/bin/python -m bench.cluster      # tokens/s through 0..3 RPC workers, with added link latency
    .venv/bin/python -m bench.provision    # fresh hosts to a serving cluster against a plain compile, cold and warm

They use the lab HALO_LAB_ID (default 9 here, so a benchmark never takes over the tests' lab 0).
"""

import os

os.environ.setdefault("HALO_LAB_ID", "9")  # before lab.lab reads it
