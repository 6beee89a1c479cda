"""The whole sequence for a cluster, in order; each step is also runnable on its own.

    pyinfra inventories/lab.py deploys/full.py

Steps so far: verify (the host steps, llama.cpp and the services come in front of it).
"""

from pyinfra import host

from deploys.settings import settings
from deploys.verify import verify_host

if __name__ in ("builtins", "__main__"):
    settings(host)  # every host's data is valid before any step adds an operation
    verify_host()
