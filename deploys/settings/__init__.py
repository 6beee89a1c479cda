"""Validated host settings of halo-provision.

Every variable a deploy reads comes from pyinfra host data (the inventory's host data,
``group_data/<group>.py``, ``group_data/all.py`` or ``--data``). The first call checks all of them,
for all hosts, once per pyinfra run, before any operation is added, and gives deploys a typed view::

    from deploys.settings import settings
    s = settings(host)          # raises SettingsError naming host, variable, value, fix
    s.rpc_port, s.rpc_bind_address, s.ttm_pages(installed_ram_bytes)

One concern per module:

    fields.py      the types of single values (patterns, ranges, addresses) and the nested models
    model.py       Settings: every variable with its default, description, summary and what is valid
    rules.py       rules across the variables of one host
    names.py       which keys and groups are ours; retired and almost-right names
    provenance.py  where a host's value came from (pyinfra's data precedence), for "Fix it in ..."
    messages.py    the error sentence, secrets masked, SettingsError
    validate.py    validating the inventory once per run: settings(host), validate_inventory()
    docs.py        group_data/all.py's comments and README's table from the model

The rules across hosts are the cluster topology's: deploys/topology.py.
"""

from deploys.settings.fields import (
    GIB,
    HEAD_MANAGED_ENV,
    PREFIXES,
    RPC_MANAGED_ENV,
    TTM_PAGES_PER_GIB,
    IPAddress,
    ModelFile,
    RpcInstance,
)
from deploys.settings.messages import SettingsError, masked
from deploys.settings.model import HEAD_GROUP, RPC_WORKERS_GROUP, VALID, VARIABLES, Settings
from deploys.settings.validate import inventory_warnings, settings, validate_inventory

__all__ = [
    "GIB",
    "HEAD_GROUP",
    "HEAD_MANAGED_ENV",
    "IPAddress",
    "ModelFile",
    "PREFIXES",
    "RPC_MANAGED_ENV",
    "RPC_WORKERS_GROUP",
    "RpcInstance",
    "TTM_PAGES_PER_GIB",
    "VALID",
    "VARIABLES",
    "Settings",
    "SettingsError",
    "inventory_warnings",
    "masked",
    "settings",
    "validate_inventory",
]
