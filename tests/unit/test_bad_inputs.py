"""The bad-input corpus (tests/integration/bad_inputs.py) without the lab, and the checks it found
missing: a worker the heads cannot reach (loopback) and a worker bound to a head's own address."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import parse_cli_arg

from deploys.settings import SettingsError, validate_inventory
from tests.integration.bad_inputs import CASES, UNIT_CASES, fill, write_inventory
from lab import lab

REPO = Path(__file__).resolve().parents[2]
FIX = "Fix it in the inventory's host data or group_data/all.py."
FACT_FREE = [case for case in CASES + UNIT_CASES if not case.needs_facts]


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 25 and len(UNIT_CASES) >= 25
    assert len({case.id for case in CASES + UNIT_CASES}) == len(CASES + UNIT_CASES)
    assert not any(case.needs_facts for case in UNIT_CASES)  # the lab corpus does not run them


@pytest.mark.parametrize("case", FACT_FREE, ids=[case.id for case in FACT_FREE])
def test_corpus_case_is_refused_by_validation(case, tmp_path):
    hosts = lab.default_hosts(3)
    lab_inventory = tmp_path / "lab.py"
    lab_inventory.write_text(lab.inventory_text(hosts))
    addresses = {h.name: h.address for h in hosts}
    (tmp_path / "case").mkdir()
    path = write_inventory(tmp_path / "case", case, str(lab_inventory), addresses)
    pairs = [case.cli_args[i + 1].split("=", 1) for i, arg in enumerate(case.cli_args) if arg == "--data"]
    override = {key: parse_cli_arg(value) for key, value in pairs}  # as the CLI parses --data

    state = State()  # as the pyinfra CLI loads an inventory and its group data
    with ctx_state.use(state):
        inventory = make_inventory(str(path), override_data=override, cwd=str(REPO))
    state.init(inventory, Config())
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory)
    message = str(info.value)
    assert fill(case.who, addresses) in message
    assert fill(case.fix, addresses) in message
    assert "Fix " in message
    assert not case.absent or case.absent not in message  # no secret of the input is shown


def cluster(halo3: dict, head_is_worker: bool = True, halo1: dict | None = None) -> Inventory:
    """halo1 head (and worker unless told), halo2 and halo3 workers on 10.151.0.0/24; halo3 gets `halo3`."""
    hosts = [
        ("halo1", {"ssh_hostname": "10.151.0.11", "rpc_bind_address": "10.151.0.11", **(halo1 or {})}),
        ("halo2", {"ssh_hostname": "10.151.0.12", "rpc_bind_address": "10.151.0.12"}),
        ("halo3", {"ssh_hostname": "10.151.0.13", "rpc_bind_address": "10.151.0.13", **halo3}),
    ]
    workers = ["halo1", "halo2", "halo3"] if head_is_worker else ["halo2", "halo3"]
    return Inventory((hosts, {}), head=(["halo1"], {}), rpc_workers=(workers, {}))


def problems_of(inventory: Inventory) -> list[str]:
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory)
    return info.value.problems


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.1.1", "::1"])
def test_a_worker_on_loopback_is_refused_when_a_head_elsewhere_connects(address):
    (problem,) = problems_of(cluster({"rpc_bind_address": address}))
    assert problem == (
        f"halo3: rpc_bind_address = {address!r} is invalid: a loopback address is reachable from halo3 only, "
        "and head halo1 connects to it from another host; expected the address of halo3's cluster-link "
        f"interface, e.g. '10.151.0.12'. {FIX}"
    )


def test_a_single_host_that_is_head_and_worker_may_bind_loopback():
    inventory = Inventory(([("solo", {"rpc_bind_address": "127.0.0.1"})], {}),
                          head=(["solo"], {"head_bind_address": "10.151.0.11"}), rpc_workers=(["solo"], {}))
    assert str(validate_inventory(inventory)["solo"].rpc_bind_address) == "127.0.0.1"


def test_a_worker_on_the_address_of_a_head_that_is_no_worker_is_refused():
    # halo1's --rpc list would hold 10.151.0.11:50052: itself, where no RPC server listens
    (problem,) = problems_of(cluster({"rpc_bind_address": "10.151.0.11"}, head_is_worker=False))
    assert problem == (
        "halo3: rpc_bind_address = '10.151.0.11' is invalid: it is an address of head halo1, which is not "
        "an RPC worker there, so halo1's --rpc list would name halo1 itself; expected halo3's own "
        f"cluster-link address. {FIX}"
    )


def test_a_worker_on_any_address_of_a_head_is_refused():
    halo1 = {"head_bind_address": "10.152.0.11"}  # llama-server on another network than the RPC link
    for address in ("10.152.0.11", "10.151.0.11"):
        problems = problems_of(cluster({"rpc_bind_address": address}, head_is_worker=False, halo1=halo1))
        assert [p.split(":")[0] for p in problems] == ["halo3"], problems
        assert "it is an address of head halo1" in problems[0]


def test_a_worker_sharing_a_worker_heads_address_is_left_to_the_port_check():
    # same address as halo1's own RPC server: the duplicate check speaks when the port is the same too
    (problem,) = problems_of(cluster({"rpc_bind_address": "10.151.0.11"}))
    assert "halo1 already runs an RPC server on 10.151.0.11:50052" in problem
    validate_inventory(cluster({"rpc_bind_address": "10.151.0.11", "rpc_port": 50053}))
