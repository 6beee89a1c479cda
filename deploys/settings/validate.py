"""Validating the host data of a whole inventory, once per pyinfra run, before any operation is added.

    from deploys.settings import settings
    s = settings(host)          # raises SettingsError naming host, variable, value, fix

The first call validates every host (its own rules, deploys/settings/rules.py) and the rules across
hosts (deploys/topology.py); a bad value anywhere stops the run on every host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pyinfra import logger

from deploys.runcache import FactMemo, run_store
from deploys.settings.fields import PREFIXES
from deploys.settings.messages import SettingsError, command_line_list_hint, masked, message, shown_value
from deploys.settings.model import HEAD_GROUP, LIST_VARIABLES, VALID, VARIABLES, Settings
from deploys.settings.names import group_problems, near_miss, near_miss_message, unknown_key_problem
from deploys.settings.provenance import COMMAND_LINE_FIX, fix_hint, host_data
from deploys.settings.rules import service_port_problems

if TYPE_CHECKING:
    from pyinfra.api import Host, Inventory


def _validation_problems(
    host: str, error: ValidationError, raw: dict[str, Any], fix: Callable[[str], str]
) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for err in error.errors():
        ctx = err.get("ctx") or {}
        if err["type"] == "halo_cross_field":
            for variable, detail in ctx["issues"]:
                value = raw.get(variable, Settings.model_fields[variable].default)
                problems.append(message(host, variable, value, detail, fix(variable)))
            continue
        variable = str(err["loc"][0])
        items = [part for part in err["loc"][1:] if isinstance(part, int)]
        detail = "expected " + VALID[variable]
        keys = [part for part in err["loc"][1:] if isinstance(part, str)]
        if items and isinstance(raw.get(variable), (list, tuple)):
            bad = raw[variable][items[0]]
            detail = f"entry {bad!r} is not allowed; " + detail
        elif keys and isinstance(raw.get(variable), dict) and keys[0] in raw[variable]:
            part = "name" if "[key]" in err["loc"] else "value"
            detail = f"the {part} of entry {keys[0]!r}: {raw[variable][keys[0]]!r} is not allowed; " + detail
        if variable in seen:  # one line per variable (unions report several errors)
            continue
        seen.add(variable)
        value = raw.get(variable, Settings.model_fields[variable].default)
        if variable in LIST_VARIABLES and not isinstance(value, list) and fix(variable) == COMMAND_LINE_FIX:
            detail += command_line_list_hint(variable, value)
        problems.append(message(host, variable, value, detail, fix(variable)))
    return problems




def _validate_host(host: Host) -> tuple[Settings | None, list[str]]:
    data = host_data(host)
    raw = {key: data[key] for key in VARIABLES if key in data}

    def fix(variable: str) -> str:
        return fix_hint(host, variable)

    problems = [
        unknown_key_problem(host.name, key, value, fix(key))
        for key, value in data.items()
        if isinstance(key, str) and key.startswith(PREFIXES) and key not in Settings.model_fields
    ]
    for key, value in data.items():
        near = near_miss(key) if isinstance(key, str) else None
        if near is not None and near[1]:
            problems.append(near_miss_message(host.name, key, value, near[0], True, fix(key)))
    try:
        result = Settings.model_validate(raw)
    except ValidationError as e:
        problems.extend(_validation_problems(host.name, e, raw, fix))
        return None, problems
    result._host_name = host.name
    result._groups = tuple(host.groups)
    result._raw = raw
    result._fix = {variable: fix(variable) for variable in VARIABLES}
    result._ssh_hostname = data.get("ssh_hostname")
    result._ssh_port = data.get("ssh_port") or 22
    problems.extend(service_port_problems(result))
    return result, problems


def _warnings_of(host: Host, s: Settings | None) -> list[tuple[str, str]]:
    """(key, warning) for names of this host that look like ours and are ignored."""
    found = []
    data = host_data(host)
    for key, value in data.items():
        near = near_miss(key) if isinstance(key, str) else None
        if near is not None and not near[1]:
            found.append((key, near_miss_message(host.name, key, value, near[0], False, fix_hint(host, key))))
    if s is not None and not s.is_head:
        # head_* and model_* act on heads only: set for this host itself, it likely meant a head
        inventory = host.inventory
        own = dict(inventory.get_host_data(host.name))
        for group in host.groups:
            if not any(HEAD_GROUP in member.groups for member in inventory.get_group(group, [])):
                own.update(inventory.get_group_data(group))
        for key, value in own.items():
            if isinstance(key, str) and key.startswith(("head_", "model_")) and key in Settings.model_fields:
                found.append((key, masked(
                    f"{host.name}: {key} = {shown_value(key, value)} has no effect: {host.name} is not in group "
                    f"{HEAD_GROUP}, and only heads run llama-server. Add {host.name} to group {HEAD_GROUP}, or "
                    f"remove {key} from {fix_hint(host, key)}.")))
    return found



def inventory_warnings(inventory: Inventory, valid: dict[str, Settings] | None = None) -> list[str]:
    """Things that look wrong but may be meant, once each: a name close to one of our variables (but
    maybe the user's own data), a head_* / model_* variable set for a host that is not a head, a head
    whose address for the workers' firewalls is on another network than the workers."""
    valid = valid or {}
    seen: dict[str, str] = {}
    for host in inventory:
        for key, warning in _warnings_of(host, valid.get(host.name)):
            where = warning.split(" = ", 1)[1]
            seen.setdefault(f"{key}={where}", warning)
    from deploys.topology import head_source_warnings  # topology reads settings: imported when used

    return list(seen.values()) + head_source_warnings(valid)


def validate_inventory(inventory: Inventory) -> dict[str, Settings]:
    """Validate every host of `inventory` plus the cross-host checks.

    Returns {host name: Settings}; raises SettingsError listing every problem of
    every host, one per line.
    """
    valid: dict[str, Settings] = {}
    problems: list[str] = []
    for host in inventory:
        result, host_problems = _validate_host(host)
        problems.extend(host_problems)
        if result is not None:
            valid[host.name] = result
    problems.extend(group_problems(inventory))
    from deploys.topology import cross_host_problems  # topology reads settings: imported when used

    problems.extend(cross_host_problems(inventory, valid))
    if problems:
        raise SettingsError(problems)
    for warning in inventory_warnings(inventory, valid):
        logger.warning(warning)
    return valid


def settings(host: Host) -> Settings:
    """The validated settings of `host`.

    The first call in a pyinfra run validates all hosts of the inventory and
    caches the result (or the error) on the State, so a bad value anywhere
    stops the run before any operation is added.
    """
    state = getattr(host, "state", None)
    if state is None:  # host not attached to a State (plain API use): no cache
        return validate_inventory(host.inventory)[host.name]

    FactMemo.install(state)  # every step asks for its settings first: from here, each fact is read once per run
    store = run_store("settings", state)  # validation reads no facts: the first host asking computes it
    cached = store.get("valid")
    if cached is None or (isinstance(cached, dict) and host.name not in cached):
        try:
            cached = validate_inventory(state.inventory)
        except SettingsError as e:
            cached = e
        store["valid"] = cached
    if isinstance(cached, SettingsError):
        raise SettingsError(cached.problems)
    return cached[host.name]
