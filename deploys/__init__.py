"""The steps of halo-provision, one module each (see deploys/full.py).

Importing this package masks secrets in pyinfra's output and turns on file diffs in a dry run
(deploys/plan.py), and removes two of pyinfra's per-operation costs (deploys/speedups.py): every
deploy file imports it before it adds an operation.
"""

from deploys.plan import set_up
from deploys.speedups import install

set_up()
install()
