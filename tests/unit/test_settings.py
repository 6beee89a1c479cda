"""Unit tests of deploys/settings/: host data validation, messages, TTM sizing."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from deploys.settings import (
    Settings,
    SettingsError,
    inventory_warnings,
    settings,
    validate_inventory,
)
from deploys.topology import endpoints_for

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3
RAM_128 = 137438953472  # 128 GiB

FIX_HINT = "Fix "


def lab_inventory(halo2: dict | None = None, all_data: dict | None = None, **groups) -> Inventory:
    """halo1 head + worker, halo2/halo3 workers on 10.151.0.0/24; halo2 gets extra data."""
    halo1 = {"ssh_hostname": "10.151.0.11", "ssh_user": "root", "rpc_bind_address": "10.151.0.11"}
    h2 = {"ssh_hostname": "10.151.0.12", "ssh_user": "root", "rpc_bind_address": "10.151.0.12"}
    h3 = {"ssh_hostname": "10.151.0.13", "ssh_user": "root", "rpc_bind_address": "10.151.0.13"}
    h2.update(halo2 or {})
    h2 = {k: v for k, v in h2.items() if v is not _DROP}
    groups.setdefault("head", (["halo1"], {}))
    groups.setdefault("rpc_workers", (["halo1", "halo2", "halo3"], {}))
    return Inventory(
        ([("halo1", halo1), ("halo2", h2), ("halo3", h3)], dict(all_data or {})),
        **groups,
    )


_DROP = object()  # marks a key to remove from halo2's data


def problems_of(inventory: Inventory) -> list[str]:
    with pytest.raises(SettingsError) as info:
        validate_inventory(inventory)
    message = str(info.value)
    assert message.splitlines() == info.value.problems
    return info.value.problems


# --- valid data ------------------------------------------------------------


def test_defaults_are_valid():
    s = Settings()
    assert s.kernel_min_version == "6.16.9"
    assert s.ttm_gib is None
    assert s.gpu_targets == ["gfx1151"]
    assert s.head_listen_address == ipaddress.IPv4Address("127.0.0.1")


def test_lab_like_inventory_is_valid():
    result = validate_inventory(lab_inventory())
    assert set(result) == {"halo1", "halo2", "halo3"}
    halo1 = result["halo1"]
    assert halo1.host_name == "halo1"
    assert halo1.is_head and halo1.is_rpc_worker
    assert halo1.rpc_bind_address == ipaddress.IPv4Address("10.151.0.11")
    assert halo1.rpc_endpoint == "10.151.0.11:50052"
    # head_bind_address None: llama-server binds the cluster-link address.
    assert halo1.head_listen_address == ipaddress.IPv4Address("10.151.0.11")
    assert not result["halo2"].is_head


def test_pyinfra_keys_are_ignored():
    result = validate_inventory(
        lab_inventory({"ssh_key": "/k", "_sudo": True, "ssh_port": 2222, "my_own_thing": 1})
    )
    assert result["halo2"].rpc_port == 50052


def test_ipv6_and_valid_overrides():
    s = validate_inventory(
        lab_inventory(
            {
                "rpc_bind_address": "10.151.0.22",
                "rpc_port": 50053,
                "ttm_gib": 100,
                "iommu_mode": "pt",
                "gpu_users": ["alice", "_svc", "llama-runner"],
                "gpu_targets": ["gfx1151", "gfx1100"],
                "head_bind_address": "127.0.0.1",
                "kernel_min_version": "6.17",
                "vram_carveout_max_gib": 0,
            }
        )
    )["halo2"]
    assert s.rpc_endpoint == "10.151.0.22:50053"
    assert s.iommu_mode == "pt"
    assert Settings(rpc_bind_address="fd51::12", rpc_port=50053).rpc_endpoint == "[fd51::12]:50053"


# --- bad values --------------------------------------------------------------

BAD_VALUES = [
    # (variable, value, words the problem must contain)
    ("ttm_gib", 0, ["1 to 1024"]),
    ("ttm_gib", 5000, ["1 to 1024"]),
    ("ttm_gib", "lots", ["1 to 1024"]),
    ("ttm_gib", 120.0, ["whole number"]),
    ("ttm_gib", True, ["whole number"]),
    ("os_reserve_gib", 0, ["1 to 64"]),
    ("os_reserve_gib", "8", ["1 to 64"]),
    ("vram_carveout_max_gib", 129, ["0 to 128"]),
    ("iommu_mode", "on", ["'off'", "'pt'", "'keep'"]),
    ("iommu_mode", False, ["'off'"]),
    ("gpu_targets", ["gfx1151", "rdna3"], ["entry 'rdna3'", "gfx"]),
    ("gpu_targets", "gfx1151", ["list"]),
    ("gpu_targets", [], ["non-empty"]),
    ("gpu_users", ["Alice"], ["entry 'Alice'", "user names"]),
    ("gpu_users", ["bob smith"], ["entry 'bob smith'"]),
    ("rpc_port", 0, ["1024 to 65535"]),
    ("rpc_port", 70000, ["1024 to 65535"]),
    ("rpc_port", -1, ["1024 to 65535"]),
    ("rpc_port", "50052", ["1024 to 65535"]),
    ("rpc_port", 22, ["1024 to 65535", "cannot bind a lower one"]),
    ("rpc_port", 443, ["1024 to 65535"]),
    ("head_port", 65536, ["1 to 65535"]),
    ("rpc_bind_address", "halo2.lan", ["not a host name"]),
    ("rpc_bind_address", 167772172, ["IPv4 or IPv6"]),
    ("rpc_bind_address", "224.0.0.1", ["IPv4 or IPv6"]),
    ("head_bind_address", "10.151.0.300", ["IPv4 or IPv6"]),
    ("rpc_allow_any_address", "yes", ["True or False"]),
    ("kernel_min_version", "6.16.9-200.fc43", ["kernel version"]),
    ("kernel_min_version", 6.16, ["kernel version"]),
    ("kernel_recommended_version", "6.12", ["older than kernel_min_version"]),
    ("firmware_bad_snapshots", [20261399], ["entry 20261399", "YYYYMMDD"]),
    ("firmware_bad_snapshots", ["20251125"], ["YYYYMMDD"]),
    ("firmware_bad_snapshots", 20251125, ["a list"]),
    ("kernel_oem_min_version", "6.14.0", ["'6.14.0-1018'"]),
    ("kernel_oem_min_version", "6.14.0-1018-oem", ["ABI number"]),
]


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    BAD_VALUES,
    ids=[f"{v}={x!r}" for v, x, _ in BAD_VALUES],
)
def test_bad_value_is_rejected(variable, value, words):
    problems = problems_of(lab_inventory({variable: value}))
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith(f"halo2: {variable} = {value!r} is invalid: ")
    for word in words:
        assert word in problem
    assert "Fix it in the inventory's host data or group_data/all.py." in problem


def test_exact_message_format():
    (problem,) = problems_of(lab_inventory({"ttm_gib": "lots"}))
    assert problem == (
        "halo2: ttm_gib = 'lots' is invalid: expected a whole number of GiB from 1 to 1024, "
        "or None for installed RAM minus os_reserve_gib. "
        "Fix it in the inventory's host data or group_data/all.py."
    )


def test_typo_names_the_closest_variable():
    (problem,) = problems_of(lab_inventory({"ttm_gb": 120}))
    assert problem.startswith("halo2: ttm_gb = 120 is not a halo-provision variable")
    assert "did you mean ttm_gib?" in problem
    assert FIX_HINT in problem


@pytest.mark.parametrize("name", ["firmware_min_date", "firmware_min_dat", "firmware_mindate"])
def test_the_retired_firmware_min_date_says_what_replaced_it(name):
    (problem,) = problems_of(lab_inventory({name: 20260110}))
    assert problem.startswith(f"halo2: {name} = 20260110 is no longer a halo-provision variable")
    assert "replaced by firmware_bad_snapshots" in problem and "20251111" in problem
    assert ("did you mean firmware_min_date?" in problem) == (name != "firmware_min_date")
    assert problem.endswith("Remove it from the inventory's host data or group_data/all.py.")


def test_typo_without_close_match_lists_names_with_that_prefix():
    (problem,) = problems_of(lab_inventory({"rpc_zzzz": 1}))
    assert "rpc_port" in problem and "rpc_bind_address" in problem


def test_group_data_value_points_to_group_file():
    inventory = lab_inventory(rpc_workers=(["halo1", "halo2", "halo3"], {"rpc_port": 0}))
    problems = problems_of(inventory)
    assert len(problems) == 3
    assert all("group_data/rpc_workers.py" in p for p in problems)


def test_override_data_points_to_command_line():
    inventory = lab_inventory()
    inventory.override_data = {"iommu_mode": "bogus"}
    problems = problems_of(inventory)
    assert len(problems) == 3
    assert all("--data" in p for p in problems)


def test_errors_of_two_hosts_are_both_reported():
    inventory = Inventory(
        (
            [
                ("halo1", {"rpc_bind_address": "10.151.0.11", "ttm_gib": 0}),
                ("halo2", {"rpc_bind_address": "10.151.0.12", "rpc_port": 70000, "gpu_usrs": []}),
            ],
            {},
        ),
        head=(["halo1"], {}),
        rpc_workers=(["halo1", "halo2"], {}),
    )
    problems = problems_of(inventory)
    assert any(p.startswith("halo1: ttm_gib = 0 ") for p in problems)
    assert any(p.startswith("halo2: rpc_port = 70000 ") for p in problems)
    assert any(p.startswith("halo2: gpu_usrs = [] ") and "gpu_users" in p for p in problems)
    assert len(problems) == 3


# --- cross-host checks -------------------------------------------------------


def test_worker_without_rpc_bind_address():
    (problem,) = problems_of(lab_inventory({"rpc_bind_address": _DROP}))
    assert problem.startswith("halo2: rpc_bind_address = None is invalid: ")
    assert "rpc_workers" in problem and "Fix it in" in problem


def test_non_worker_needs_no_rpc_bind_address():
    inventory = Inventory(
        (["solo"], {}),
        head=(["solo"], {}),
    )
    assert validate_inventory(inventory)["solo"].head_listen_address == ipaddress.IPv4Address(
        "127.0.0.1"
    )


def test_duplicate_address_and_port():
    (problem,) = problems_of(lab_inventory({"rpc_bind_address": "10.151.0.11"}))
    assert problem.startswith("halo2: rpc_bind_address = '10.151.0.11' is invalid: ")
    assert "halo1 already runs an RPC server on 10.151.0.11:50052" in problem


def test_same_address_other_port_is_fine():
    validate_inventory(lab_inventory({"rpc_bind_address": "10.151.0.11", "rpc_port": 50053}))


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "8.8.8.8", "2001:4860:4860::8888"])
def test_any_or_public_address_needs_opt_in(address):
    (problem,) = problems_of(lab_inventory({"rpc_bind_address": address}))
    assert problem.startswith(f"halo2: rpc_bind_address = {address!r} is invalid: ")
    assert "rpc_allow_any_address = True" in problem
    opted_in = lab_inventory({"rpc_bind_address": address, "rpc_allow_any_address": True})
    if ":" in address:  # the opt-in is taken, but the head's RPC client connects over IPv4 only
        (problem,) = problems_of(opted_in)
        assert problem.startswith("halo2: rpc_bind_address = ") and ("IPv4 only" in problem or "need one of" in problem)
        return
    result = validate_inventory(opted_in)  # the opt-in makes it pass
    assert str(result["halo2"].rpc_bind_address) == address


def test_workers_without_head():
    inventory = lab_inventory(head=([], {}))
    (problem,) = problems_of(inventory)
    assert "group head is empty" in problem and "Fix it in the inventory" in problem


def test_head_port_clashing_with_rpc_port_on_one_host():
    inventory = lab_inventory(head=(["halo1"], {"head_port": 50052}))
    (problem,) = problems_of(inventory)
    assert problem.startswith("halo1: head_port = 50052 is invalid: ")
    assert "group_data/head.py" in problem


# --- settings(host) and the State cache --------------------------------------


def test_settings_caches_on_state():
    inventory = lab_inventory()
    State(inventory, Config())  # gives the hosts their state, where settings() keeps its cache
    halo2 = inventory.get_host("halo2")
    first = settings(halo2)
    assert first.host_name == "halo2"
    assert settings(halo2) is first
    assert settings(inventory.get_host("halo1")).is_head


def test_settings_stops_on_any_bad_host():
    inventory = lab_inventory({"ttm_gib": "lots"})
    State(inventory, Config())
    # halo1 is fine, but a bad value anywhere stops the run.
    with pytest.raises(SettingsError, match=r"halo2: ttm_gib = 'lots'"):
        settings(inventory.get_host("halo1"))
    with pytest.raises(SettingsError, match=r"halo2: ttm_gib = 'lots'"):
        settings(inventory.get_host("halo2"))


def test_settings_error_is_a_pyinfra_error():
    from pyinfra.api.exceptions import PyinfraError

    assert issubclass(SettingsError, PyinfraError)


# --- TTM sizing ------------------------------------------------------------------


def test_wanted_ttm_gib_default_on_128_gib():
    s = validate_inventory(lab_inventory())["halo2"]
    assert s.wanted_ttm_gib(RAM_128) == 120
    assert s.ttm_pages(RAM_128) == 31457280


def test_wanted_ttm_gib_floors_installed_ram():
    s = Settings(os_reserve_gib=4)
    assert s.wanted_ttm_gib(RAM_128 - 1) == 127 - 4


def test_wanted_ttm_gib_explicit():
    s = Settings(ttm_gib=100)
    assert s.wanted_ttm_gib(RAM_128) == 100
    assert s.ttm_pages(RAM_128) == 100 * 262144


def test_ttm_gib_above_installed_ram_is_rejected():
    s = validate_inventory(lab_inventory({"ttm_gib": 200}))["halo2"]
    with pytest.raises(SettingsError) as info:
        s.wanted_ttm_gib(RAM_128)
    message = str(info.value)
    assert message.startswith("halo2: ttm_gib = 200 is invalid: ")
    assert "128.0 GiB" in message and "Fix it in" in message


def test_reserve_leaving_nothing_is_rejected():
    s = validate_inventory(lab_inventory({"os_reserve_gib": 16}))["halo2"]
    with pytest.raises(SettingsError, match=r"^halo2: os_reserve_gib = 16 is invalid: "):
        s.wanted_ttm_gib(16 * GIB)


# --- the shipped inventory + group_data, loaded like the pyinfra CLI ----------------


@pytest.mark.parametrize("lab_env", [False, True])
def test_lab_inventory_loads_and_validates(monkeypatch, lab_env):
    monkeypatch.chdir(REPO)
    if lab_env:
        monkeypatch.setenv("HALO_LAB_SSH_KEY", "/tmp/lab_key")
        monkeypatch.setenv("HALO_LAB_KNOWN_HOSTS", "/tmp/lab_known_hosts")
    else:
        monkeypatch.delenv("HALO_LAB_SSH_KEY", raising=False)
        monkeypatch.delenv("HALO_LAB_KNOWN_HOSTS", raising=False)

    # As pyinfra_cli.cli does: a State in context while the files are executed.
    state = State()
    state.cwd = str(REPO)
    with ctx_state.use(state):
        inventory = make_inventory("inventories/lab.py", cwd=str(REPO))
    state.init(inventory, Config())
    result = validate_inventory(inventory)
    assert settings(inventory.get_host("halo3")).rpc_endpoint == "10.151.0.13:50052"

    assert set(result) == {"halo1", "halo2", "halo3"}
    assert [h.name for h in inventory.get_group("head")] == ["halo1"]
    assert [h.name for h in inventory.get_group("rpc_workers")] == ["halo1", "halo2", "halo3"]
    for n, name in enumerate(["halo1", "halo2", "halo3"], start=11):
        host = inventory.get_host(name)
        assert host.data.ssh_hostname == f"10.151.0.{n}"
        assert host.data.ssh_user == "root"
        assert result[name].rpc_bind_address == ipaddress.IPv4Address(f"10.151.0.{n}")
        # group_data/all.py was loaded as the defaults of every host.
        assert host.data.kernel_min_version == "6.16.9"
        if lab_env:
            assert host.data.ssh_key == "/tmp/lab_key"
            assert host.data.ssh_known_hosts_file == "/tmp/lab_known_hosts"
            assert host.data.ssh_strict_host_key_checking == "off"
        else:
            assert host.data.get("ssh_key") is None


# --- issue 13: what real users write --------------------------------------------------------------


def test_cgnat_and_tailscale_addresses_are_a_private_link():
    assert str(validate_inventory(lab_inventory({"rpc_bind_address": "100.64.7.12"}))["halo2"].rpc_bind_address) \
        == "100.64.7.12"


def test_ipv4_mapped_addresses_are_their_ipv4_address():
    s = Settings(rpc_bind_address="::ffff:10.151.0.12")
    assert str(s.rpc_bind_address) == "10.151.0.12" and s.rpc_endpoint == "10.151.0.12:50052"


def test_a_scoped_link_local_address_is_accepted_and_compared_without_its_scope():
    assert str(Settings(rpc_bind_address="fe80::12%eth1").rpc_bind_address) == "fe80::12%eth1"
    from deploys.settings.fields import unscoped as _unscoped
    assert _unscoped(Settings(rpc_bind_address="fe80::12%eth1").rpc_bind_address) == \
        _unscoped(Settings(rpc_bind_address="fe80::12%eth0").rpc_bind_address)


def test_any_address_puts_the_ssh_address_into_the_heads_rpc_list_never_0_0_0_0():
    valid = validate_inventory(lab_inventory({"rpc_bind_address": "0.0.0.0", "rpc_allow_any_address": True}))
    assert endpoints_for(valid["halo2"], "halo1") == ["10.151.0.12:50052"]


def test_two_heads_with_a_server_each_on_every_worker_are_valid():
    per_head = {"rpc_instances": [{"port": 50052, "head": "halo1"}, {"port": 50053, "head": "halo3"}]}
    inventory = lab_inventory(per_head, head=(["halo1", "halo3"], {}), rpc_workers=(["halo2"], {}))
    valid = validate_inventory(inventory)
    assert endpoints_for(valid["halo2"], "halo1") == ["10.151.0.12:50052"]
    assert endpoints_for(valid["halo2"], "halo3") == ["10.151.0.12:50053"]


def test_a_model_under_home_is_allowed_the_head_unit_reads_it_read_only():
    Settings(model_path="/home/alice/models/m.gguf", model_dir="/home/alice/models")


@pytest.mark.parametrize("arg", ["nomodeset", "init=/bin/sh", "modprobe.blacklist=amdgpu", "systemd.unit=rescue.target"])
def test_risky_kernel_arguments_pass_with_the_opt_in(arg):
    Settings(kernel_extra_args=[arg], kernel_allow_risky_args=True)
    with pytest.raises(ValueError, match="kernel_allow_risky_args = True"):
        Settings(kernel_extra_args=[arg])


@pytest.mark.parametrize("arg", ["modprobe.blacklist=nouveau", "amdgpu.modeset=1", "quiet", "panic=10", "ip6tables=1"])
def test_harmless_kernel_arguments_need_no_opt_in(arg):
    Settings(kernel_extra_args=[arg])


def test_pyinfra_and_user_data_are_neither_errors_nor_warnings():
    data = {"ssh_port": 22, "ssh_key": "/k", "_sudo": True, "_sudo_user": "root", "winrm_port": 5986,
            "rack": "a1", "owner": "lab team", "location": "room 2", "hostname_alias": "gpu2"}
    inventory = lab_inventory(data)
    validate_inventory(inventory)
    assert inventory_warnings(inventory) == []


def test_names_that_may_be_the_users_own_data_are_warnings():
    inventory = lab_inventory({"model": "Framework Desktop", "llama_ref": "b9000"})
    valid = validate_inventory(inventory)
    assert inventory_warnings(inventory, valid) == [
        "halo2: model = 'Framework Desktop' is not a halo-provision variable (it would be ignored): did you mean "
        "model_path? Rename it in the inventory's host data or group_data/all.py, or ignore this if model is your "
        "own data.",
        "halo2: llama_ref = 'b9000' is not a halo-provision variable (it would be ignored): did you mean "
        "llama_cpp_ref? Rename it in the inventory's host data or group_data/all.py, or ignore this if llama_ref is "
        "your own data.",
    ]


def test_a_head_variable_on_a_host_that_is_no_head_is_a_warning_but_not_from_group_data_all():
    inventory = lab_inventory({"head_port": 8081}, all_data={"head_ctx_size": 8192})
    valid = validate_inventory(inventory)
    assert inventory_warnings(inventory, valid) == [
        "halo2: head_port = 8081 has no effect: halo2 is not in group head, and only heads run llama-server. Add "
        "halo2 to group head, or remove head_port from the inventory's host data or group_data/all.py."]


def test_a_group_almost_ours_whose_hosts_are_in_ours_too_is_left_alone():
    validate_inventory(lab_inventory(heads=(["halo1"], {})))  # e.g. the user's own group of the same hosts


def test_secrets_are_masked_in_every_message():
    from deploys.settings import masked
    assert masked("git clone https://oauth2:glpat-abc@gitlab.example/x.git") == \
        "git clone https://oauth2:***@gitlab.example/x.git"
    assert masked("https://example.org/m.gguf?X-Amz-Signature=abc&X-Amz-Credential=def&part=1") == \
        "https://example.org/m.gguf?X-Amz-Signature=***&X-Amz-Credential=***&part=1"
    assert masked("ssh://git@github.com/ggml-org/llama.cpp") == "ssh://git@github.com/ggml-org/llama.cpp"


def test_a_head_on_another_network_than_the_workers_is_a_warning():
    hosts = [("halo2", {"rpc_bind_address": "10.151.0.12"}),
             ("head", {"ssh_hostname": "192.168.1.4", "head_bind_address": "127.0.0.1"})]
    inventory = Inventory((hosts, {}), head=(["head"], {}), rpc_workers=(["halo2"], {}))
    valid = validate_inventory(inventory)
    (warning,) = inventory_warnings(inventory, valid)
    assert warning.startswith("head: the RPC workers' firewalls accept head head from 192.168.1.4 (ssh_hostname), "
                              "but no worker is on its network (192.168.1.0/24)")
    assert "Set rpc_bind_address of head to its cluster-link address" in warning
    # on the workers' network: no warning
    hosts[1] = ("head", {"ssh_hostname": "10.151.0.4"})
    inventory = Inventory((hosts, {}), head=(["head"], {}), rpc_workers=(["halo2"], {}))
    assert inventory_warnings(inventory, validate_inventory(inventory)) == []


@pytest.mark.parametrize("scope", ["eth1;reboot", "eth1$(id)", "a\nb", "eth1 x", "x" * 16, "'"])
def test_an_ipv6_scope_that_is_no_interface_name_is_refused(scope):
    # Python's ipaddress takes any text after '%'; the address reaches units, env files and firewall rules
    problems = problems_of(lab_inventory({"rpc_bind_address": f"fe80::12%{scope}", "rpc_allow_any_address": False}))
    assert len(problems) == 1 and problems[0].startswith(f"halo2: rpc_bind_address = {f'fe80::12%{scope}'!r} is "
                                                         "invalid: expected the IPv4 or IPv6 address"), problems
    assert "'fe80::12%eth1'" in problems[0]


# --- issue 13 class 5: addresses judged as the network sees them ------------------------------------


def test_an_ipv4_mapped_address_duplicates_the_ipv4_address():
    # '::ffff:10.151.0.13' is halo3's 10.151.0.13: two RPC servers on one address:port
    (problem,) = problems_of(lab_inventory({"rpc_bind_address": "::ffff:10.151.0.13"}))
    assert problem.startswith("halo3: rpc_bind_address = '10.151.0.13' is invalid: halo2 already runs an RPC "
                              "server on 10.151.0.13:50052"), problem


def test_one_link_local_address_with_two_scopes_is_one_address_on_the_link():
    hosts = [("w1", {"rpc_bind_address": "fe80::12%eth0"}), ("w2", {"rpc_bind_address": "fe80::12%eth1"})]
    problems = problems_of(Inventory((hosts, {}), rpc_workers=(["w1", "w2"], {}), head=(["w1"], {})))
    assert any(p.startswith("w2: rpc_bind_address = 'fe80::12%eth1' is invalid: w1 already runs an RPC server "
                            "on [fe80::12]:50052") for p in problems), problems


@pytest.mark.parametrize("variable", ["rpc_bind_address", "head_bind_address"])
def test_a_link_local_address_without_its_interface_is_refused(variable):
    (problem,) = problems_of(lab_inventory({variable: "fe80::12"}))
    assert problem.startswith(f"halo2: {variable} = 'fe80::12' is invalid: a link-local IPv6 address means "
                              "something only on one interface; expected it with its interface, such as "
                              "'fe80::12%eth1'"), problem


@pytest.mark.parametrize("address, private", [
    ("100.64.0.1", True), ("100.127.255.254", True), ("100.100.100.100", True),  # CGNAT, Tailscale's range
    ("100.63.255.254", False), ("100.128.0.1", False), ("::ffff:100.64.0.1", True), ("::ffff:100.128.0.1", False),
])
def test_cgnat_is_a_private_link_and_its_neighbours_are_public(address, private):
    inventory = lab_inventory({"rpc_bind_address": address})
    if private:
        assert validate_inventory(inventory)["halo2"].rpc_bind_address.is_global is False
    else:
        (problem,) = problems_of(inventory)
        assert "it listens on a public address" in problem and "rpc_allow_any_address = True" in problem
