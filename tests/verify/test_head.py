"""llama-server on the head: healthy, serving the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploys.checks import Row
from tests.verify.halo import check, step_module

pytestmark = pytest.mark.hosts_in("head")

# GET a URL on the head itself; prints the status code, then the body (python3 is on every supported distro).
GET = ("python3 -c 'import sys, urllib.request as u, urllib.error as e\n"
       "try: r = u.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode())\n"
       "except e.HTTPError as x: print(x.code); print(x.read().decode())\n"
       "except Exception as x: print(0); print(x)' ")


def get(halo, path: str) -> tuple[int, str]:
    step_module("head")
    s = halo.settings
    address = s.head_listen_address
    host = f"[{address}]" if address.version == 6 else str(address)
    out = halo.host.run(GET + f"http://{host}:{s.head_port}{path}").stdout
    status, _, body = out.partition("\n")
    return int(status or 0), body


def test_head_health_is_200(halo):
    status, body = get(halo, "/health")
    halo.record(Row("head", f"/health {status}", "ok" if status == 200 else "FAIL"))
    check(status == 200, f"{halo.name}: GET /health on port {halo.settings.head_port} answered {status}: {body[:300]} "
                         "(503: still loading the model; 0: llama-server is not running: run deploys/head.py)")


def test_head_lists_the_model(halo):
    status, body = get(halo, "/v1/models")
    check(status == 200, f"{halo.name}: GET /v1/models answered {status}: {body[:300]}")
    ids = [m.get("id", "") for m in json.loads(body).get("data", [])]
    s = halo.settings
    wanted = Path(s.model_path or s.model_url or "").name
    check(wanted and any(wanted in i or Path(i).name == wanted for i in ids),
          f"{halo.name}: /v1/models lists {ids}, not the model {wanted or '(no model_path / model_url set)'}")
