"""The bad-input corpus (bad_inputs.py) through `pyinfra INV deploys/full.py` against the lab hosts.

Every case must exit non-zero while the run is prepared, with a message naming host, variable,
value and fix, before "Beginning operation run"; the hosts' /etc, /opt, /usr/local and
/var/lib/halo-provision are byte-for-byte the same after the whole corpus as before it.
"""

from __future__ import annotations

import pytest

from lab import lab
from lab.pyinfra_cli import pyinfra
from tests.integration.bad_inputs import CASES, HEAD, MODEL_PATH, fill, write_inventory
from tests.integration.conftest import LAB_HOSTS

WATCHED = "/etc /opt /usr/local /var/lib/halo-provision"
# type, mode, owner, size, path, link target; then the sha256 of every regular file
FINGERPRINT = (
    f"find {WATCHED} -xdev -printf '%y %m %u:%g %s %p -> %l\\n' 2>/dev/null | sort; "
    f"find {WATCHED} -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum; true"
)


def fingerprints(hosts) -> dict[str, list[str]]:
    """{host: the lines of FINGERPRINT}, over SSH."""
    return {h.name: lab.ssh(h, FINGERPRINT, timeout=120).stdout.splitlines() for h in hosts}


@pytest.fixture(scope="module")
def corpus(lab_session, tmp_path_factory):
    """The lab with the base's model file on the head; the valid base passes `--dry`; fingerprints before."""
    hosts = lab.ensure(lab.parse_host_args(LAB_HOSTS))
    lab.ssh(HEAD, f"mkdir -p $(dirname {MODEL_PATH}) && touch {MODEL_PATH}")
    inventory = str(lab.STATE / "inventory.py")
    addresses = {h.name: h.address for h in hosts}
    before = fingerprints(hosts)
    for name, lines in before.items():  # the fingerprint sees the files: it would see a change
        assert any(line.endswith("  /etc/passwd") for line in lines), (name, lines[:5])
    base = write_inventory(tmp_path_factory.mktemp("base"), None, inventory, addresses)
    control = pyinfra(str(base), "deploys/full.py", "--dry")
    assert control.returncode == 0, f"the corpus' base inventory must be valid:\n{control.stdout}\n{control.stderr}"
    yield {"hosts": hosts, "inventory": inventory, "addresses": addresses, "before": before}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_stops_the_run_before_any_operation(corpus, case, tmp_path):
    inventory = write_inventory(tmp_path, case, corpus["inventory"], corpus["addresses"])
    proc = pyinfra(str(inventory), "deploys/full.py", *case.cli_args)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Beginning operation run" not in output, output
    assert fill(case.who, corpus["addresses"]) in output, output  # host, variable, value
    assert fill(case.fix, corpus["addresses"]) in output, output
    assert "Fix " in output, output
    assert not case.absent or case.absent not in output, output


def test_hosts_are_unchanged_by_the_corpus(corpus):
    after = fingerprints(corpus["hosts"])
    for name, lines in corpus["before"].items():
        gone, new = sorted(set(lines) - set(after[name])), sorted(set(after[name]) - set(lines))
        assert not gone and not new, f"{name} changed: gone {gone[:20]}, new {new[:20]}"
