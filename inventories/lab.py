"""Example inventory: three Strix Halo hosts on the private cluster link 10.151.0.0/24.

Use it with:

    pyinfra inventories/lab.py deploys/full.py

Copy this file (e.g. to inventories/mycluster.py) and change the names and
addresses for your cluster. Defaults for every variable are in
group_data/all.py and README.md; override any of them per host below.

halo1 runs llama-server (group head) and also an RPC server for its own GPU;
halo2 and halo3 only run RPC servers (group rpc_workers).

The test lab starts hosts with exactly these names and addresses. It sets
HALO_LAB_SSH_KEY (and optionally HALO_LAB_KNOWN_HOSTS) so this same file
connects with the lab's own key; without them pyinfra uses your usual SSH
setup (agent, ~/.ssh/config, ~/.ssh/known_hosts).
"""

import os

# SSH settings added to every host when the test lab provides its key.
_lab_ssh = {}
if os.environ.get("HALO_LAB_SSH_KEY"):
    # Private key file pyinfra logs in with.
    _lab_ssh["ssh_key"] = os.environ["HALO_LAB_SSH_KEY"]
    # Lab hosts get new host keys every run: do not refuse or prompt for unknown keys.
    _lab_ssh["ssh_strict_host_key_checking"] = "off"
    if os.environ.get("HALO_LAB_KNOWN_HOSTS"):
        # known_hosts file of the lab instead of ~/.ssh/known_hosts.
        _lab_ssh["ssh_known_hosts_file"] = os.environ["HALO_LAB_KNOWN_HOSTS"]

_halo1 = {
    # Address (or DNS name) pyinfra connects to over SSH; here the cluster link.
    "ssh_hostname": "10.151.0.11",
    # User pyinfra logs in as; provisioning needs root (or set _sudo=True for another user).
    "ssh_user": "root",
    # This host's cluster-link address: its RPC server listens here, and so does
    # llama-server unless head_bind_address is set.
    "rpc_bind_address": "10.151.0.11",
    **_lab_ssh,
}

_halo2 = {
    # Address (or DNS name) pyinfra connects to over SSH.
    "ssh_hostname": "10.151.0.12",
    # User pyinfra logs in as.
    "ssh_user": "root",
    # This host's cluster-link address, where its RPC server listens.
    "rpc_bind_address": "10.151.0.12",
    **_lab_ssh,
}

_halo3 = {
    # Address (or DNS name) pyinfra connects to over SSH.
    "ssh_hostname": "10.151.0.13",
    # User pyinfra logs in as.
    "ssh_user": "root",
    # This host's cluster-link address, where its RPC server listens.
    "rpc_bind_address": "10.151.0.13",
    **_lab_ssh,
}

# The host that runs llama-server and uses the RPC servers of all workers.
head = [("halo1", _halo1)]

# Hosts that run the llama.cpp RPC server (the head may be one of them too).
rpc_workers = [("halo1", _halo1), ("halo2", _halo2), ("halo3", _halo3)]
