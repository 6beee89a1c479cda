"""Does the model fit the cluster? An estimate before llama-server (re)starts, and the fewest RPC servers.

What the model needs: its weights (the sizes of its GGUF files), the KV cache (from the GGUF metadata:
2 x layers x KV heads x head dim x context x bytes per value, K and V with their own cache types) and a
compute margin (the batch's activations and logits: 4 bytes x ubatch x (vocabulary + 4 x embedding)).
What the cluster offers: per device (the head's own GPU and each RPC server in --rpc order) the amdgpu
GTT plus the VRAM carve-out from sysfs (facts/amdgpu.py), less `head_fit_reserve_mib` for the runtime.
llama.cpp spreads the layers in proportion to the devices' free memory, or by `head_tensor_split`.

Every node added costs token speed (about 10-20 % of generation per RPC node in public Strix Halo
measurements), so the report says how few RPC servers the model needs, and `head_rpc_servers = "auto"`
serves with that many, in inventory order.

Where the build has llama.cpp's own fitter (`llama-fit-params`), the check runs it on the head with
llama-server's settings and reports its estimate per device and its fit beside ours, with where the two
differ (compare_with_llama_cpp); ours decides pass or fail.

The estimate counts every layer with full attention: it overestimates models with sliding-window or MLA
(DeepSeek) attention, and tensors that `head_override_tensor` keeps in RAM (then "does not fit" is a
warning, not a failure).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pyinfra import host, logger
from pyinfra.api import operation

from deploys.common import failure
from deploys.settings import GIB, Settings
from facts.gguf import GgufModel
from facts.llama_fit import LlamaFitParams

MIB = 1 << 20
NEAR = 0.9  # above this share of what the devices offer: a warning
# Bytes per value of each KV cache type (ggml block sizes: q8_0 keeps 34 bytes per 32 values).
KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
            "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}
DEFAULT_UBATCH = 512  # llama.cpp's default -ub


@dataclass(frozen=True)
class Device:
    """One device llama-server puts layers on: its name as messages show it, and its memory (bytes)."""

    name: str
    gtt: int | None  # None: not known (no amdgpu card, or the host is not in this run)
    vram: int = 0
    unknown: str = "no amdgpu card seen"

    def offers(self, reserve: int) -> int | None:
        return None if self.gtt is None else max(self.gtt + self.vram - reserve, 0)

    def describe(self, reserve: int) -> str:
        if self.gtt is None:
            return f"{self.name}: {self.unknown}, not counted"
        return (f"{self.name} {gib(self.offers(reserve))} (GTT {gib(self.gtt)} + VRAM {gib(self.vram)} "
                f"- reserve {gib(reserve)})")


@dataclass(frozen=True)
class Need:
    weights: int
    kv: int
    compute: int
    context: int
    files: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def gib(n: float) -> str:
    """Bytes for messages: GiB, or MiB below 1 GiB.

    >>> gib(245 * GIB), gib(25165824), gib(20 * MIB), gib(0)
    ('245.0 GiB', '24.0 MiB', '20.0 MiB', '0 MiB')
    """
    if not n:
        return "0 MiB"
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def context_of(s: Settings, model: dict) -> int:
    """Tokens of KV cache: head_ctx_size, or the model's own context when it is 0."""
    return s.head_ctx_size or model.get("context") or 0


def kv_cache_bytes(model: dict, context: int, type_k: str, type_v: str) -> int:
    """The KV cache of `context` tokens: per layer, KV heads x (head dim K x bytes K + head dim V x bytes V).

    The lab's tiny model (6 layers, 2 KV heads of 32) with 16384 tokens of f16: 24 MiB, as llama.cpp logs.

    >>> kv_cache_bytes({"layers": 6, "kv_heads": [2], "heads": [4], "embedding": 128}, 16384, "f16", "f16") // (1 << 20)
    24
    >>> kv_cache_bytes({"layers": 94, "kv_heads": [4], "key_length": 128, "value_length": 128}, 131072, "q8_0", "q8_0") / (1 << 30)
    12.484375
    """
    layers, kv_heads = model["layers"], model["kv_heads"]
    per_layer = kv_heads if len(kv_heads) == layers else [kv_heads[0]] * layers
    default_dim = (model.get("embedding") or 0) // max((model.get("heads") or [1])[0], 1)
    dim_k = model.get("key_length") or default_dim
    dim_v = model.get("value_length") or default_dim
    return math.ceil(sum(per_layer) * context * (dim_k * KV_BYTES[type_k] + dim_v * KV_BYTES[type_v]))


def need_of(s: Settings, model: dict) -> Need:
    """Weights + KV cache + compute margin of `model` (the GgufModel fact) with these settings."""
    context = context_of(s, model)
    ubatch = s.head_ubatch_size or min(s.head_batch_size or DEFAULT_UBATCH, DEFAULT_UBATCH)
    compute = 4 * ubatch * ((model.get("vocab") or 0) + 4 * (model.get("embedding") or 0))
    files = [f["size"] or 0 for f in model["files"]]
    return Need(sum(files), kv_cache_bytes(model, context, s.head_cache_type_k, s.head_cache_type_v), compute,
                context, len(files))


@dataclass
class Verdict:
    fits: bool | None  # None: some device's memory is unknown
    near: bool
    offered: int
    shares: list[int]  # what each device would hold, in device order


def judge(need: int, devices: list[Device], reserve: int, split: list[float] | None = None) -> Verdict:
    """Whether `need` bytes fit on `devices`: by free memory (llama.cpp's default) or by `split`.

    >>> d = [Device("a", 10 * GIB), Device("b", 10 * GIB)]
    >>> v = judge(15 * GIB, d, 0); (v.fits, v.near, v.offered // GIB)
    (True, False, 20)
    >>> judge(19 * GIB, d, 0).near, judge(21 * GIB, d, 0).fits, judge(15 * GIB, d, 0, [1, 3]).fits
    (True, False, False)
    """
    offers = [d.offers(reserve) for d in devices]
    if any(o is None for o in offers):
        return Verdict(None, False, sum(o or 0 for o in offers), [0] * len(devices))
    offered = sum(offers)
    if split:
        weights = list(split) + [0] * (len(devices) - len(split))
        shares = [math.ceil(need * w / sum(weights)) for w in weights]
        fits = all(share <= offer for share, offer in zip(shares, offers))
        near = fits and any(share > NEAR * offer for share, offer in zip(shares, offers))
    else:
        shares = [math.ceil(need * o / offered) if offered else need for o in offers]
        fits = need <= offered
        near = fits and need > NEAR * offered
    return Verdict(fits, near, offered, shares)


def fewest_rpc(need: int, head: list[Device], rpc: list[Device], reserve: int) -> int | None:
    """How many RPC servers (the first ones, in order) the model needs beside the head's own GPU(s).

    >>> g = [Device("head", 100 * GIB)]
    >>> fewest_rpc(80 * GIB, g, [Device("w1", 100 * GIB)] * 2, GIB), fewest_rpc(150 * GIB, g, [Device("w1", 100 * GIB)] * 2, GIB)
    (0, 1)
    >>> fewest_rpc(500 * GIB, g, [Device("w1", 100 * GIB)], 0) is None
    True
    """
    for count in range(len(rpc) + 1):
        if judge(need, head + rpc[:count], reserve).fits:
            return count
    return None


def report(s: Settings, model: dict, head: list[Device], rpc: list[Device], endpoints: list[str]) -> tuple[str, str]:
    """("ok" | "warn" | "fail" | "unknown", the sentence saying why) for this head's model and devices.

    Devices in llama.cpp's order: the --rpc servers, then the head's own GPU(s).
    """
    reserve = s.head_fit_reserve_mib * MIB
    need = need_of(s, model)
    devices = rpc + head
    verdict = judge(need.total, devices, reserve, s.head_tensor_split)
    what = (f"it needs {gib(need.total)} (weights {gib(need.weights)} in {need.files} file(s) + KV cache "
            f"{gib(need.kv)} for {need.context} tokens of {s.head_cache_type_k}/{s.head_cache_type_v} + compute "
            f"{gib(need.compute)})")
    per_device = "; ".join(d.describe(reserve) + (f", would hold {gib(share)}" if verdict.fits is not None else "")
                           for d, share in zip(devices, verdict.shares))
    if verdict.fits is None:
        return "unknown", f"the fit was not checked: {what}; devices: {per_device}"
    fewest = fewest_rpc(need.total, head, rpc, reserve) if not s.head_tensor_split else None
    used = f"{fewest} of {len(rpc)} RPC servers" if fewest is not None else f"all {len(rpc)} RPC servers"
    if verdict.fits:
        sentence = (f"the model fits: {what}, of {gib(verdict.offered)} on {len(devices)} device(s) "
                    f"({per_device}); it needs the head and {used}"
                    + (f" ({', '.join(endpoints[:fewest])})" if fewest else ""))
        if verdict.near:
            return "warn", sentence + f"; that is above {NEAR:.0%} of what they offer: it may fail to load"
        return "ok", sentence
    fixes = [f"a smaller head_ctx_size (the KV cache is {gib(need.kv)} at {need.context} tokens)"]
    for cache in ("q8_0", "q4_0"):
        kv = kv_cache_bytes(model, need.context, cache, cache)
        if kv < need.kv:
            fixes.append(f"head_cache_type_k/v = '{cache}' (KV cache {gib(kv)})")
    fixes += ["another RPC worker", "a bigger ttm_gib on the hosts (more GTT)"]
    if s.head_tensor_split:
        fixes.append("a head_tensor_split that gives each device what it can hold")
    sentence = (f"the model does not fit: {what}, but the {len(devices)} device(s) offer {gib(verdict.offered)} "
                f"after head_fit_reserve_mib = {s.head_fit_reserve_mib} each ({per_device}). Fixes: "
                + ", ".join(fixes))
    partly_in_ram = any(o.endswith("=CPU") for o in s.head_override_tensor) or isinstance(s.head_gpu_layers, int)
    if partly_in_ram:
        return "warn", sentence + ". Not failing: head_override_tensor or head_gpu_layers keep some of it in RAM"
    return "fail", sentence


def _differs(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) > max(1.0, 0.1 * max(ours, theirs))


def compare_with_llama_cpp(s: Settings, model: dict, verdict: str, fitter: dict) -> tuple[str, list[str]]:
    """(llama.cpp's own answer as a sentence, where it and ours disagree) from the LlamaFitParams fact:
    its estimate per device in MiB (model, context, compute; "Host" = system memory) and its fit.

    >>> fitter = {"state": "ran", "estimated": True, "fit_ok": True, "fitted": "-c 4096 -ngl -1",
    ...           "devices": [{"name": "RPC0[w:1]", "model": 2, "context": 12, "compute": 1}],
    ...           "host": {"model": 0, "context": 0, "compute": 1}}
    >>> model = {"layers": 6, "kv_heads": [2], "heads": [4], "embedding": 128, "vocab": 100, "files": [{"size": 2 << 20}]}
    >>> sentence, differ = compare_with_llama_cpp(Settings(head_ctx_size=16384), model, "ok", fitter)
    >>> print(sentence)
    llama.cpp's fitter (llama-fit-params) estimates 16 MiB: model 2 + context 12 + compute 2 MiB (RPC0[w:1] 15 MiB, host memory 1 MiB); it fits with -c 4096 -ngl -1
    >>> print(differ[0])
    KV cache: ours 24 MiB, llama.cpp's 12 MiB
    >>> print(differ[1])
    verdict: ours says it fits with 16384 tokens, llama.cpp's fitter lowers the context to 4096 tokens
    """
    if fitter["state"] == "absent":
        return "llama.cpp's fitter was not run: this build has no llama-fit-params", []
    if fitter["state"] == "busy":
        return ("llama.cpp's fitter was not run: llama-server holds the RPC servers (each serves one client "
                "at a time); it runs before llama-server starts"), []
    if not fitter["estimated"]:
        return "llama.cpp's fitter (llama-fit-params) gave no estimate (it failed or timed out)", []
    places = fitter["devices"] + ([{"name": "host memory", **fitter["host"]}] if fitter["host"] else [])
    theirs = {part: sum(p[part] for p in places) for part in ("model", "context", "compute")}
    total = sum(theirs.values())
    where = ", ".join(f"{p['name']} {p['model'] + p['context'] + p['compute']} MiB" for p in places)
    fit = ("it cannot fit the model" if not fitter["fit_ok"] else
           f"it fits with {fitter['fitted']}")
    sentence = (f"llama.cpp's fitter (llama-fit-params) estimates {total} MiB: model {theirs['model']} + context "
                f"{theirs['context']} + compute {theirs['compute']} MiB ({where}); {fit}")
    need = need_of(s, model)
    differ = [f"{name}: ours {ours / MIB:.0f} MiB, llama.cpp's {theirs[part]} MiB"
              for name, part, ours in (("weights", "model", need.weights), ("KV cache", "context", need.kv),
                                       ("compute", "compute", need.compute))
              if _differs(ours / MIB, theirs[part])]
    fitted_ctx = re.search(r"-c ([0-9]+)", fitter["fitted"] or "")
    if verdict in ("ok", "warn") and not fitter["fit_ok"]:
        differ.append("verdict: ours says it fits, llama.cpp's fitter cannot fit it")
    elif verdict in ("ok", "warn") and fitted_ctx and need.context and int(fitted_ctx[1]) < need.context:
        differ.append(f"verdict: ours says it fits with {need.context} tokens, llama.cpp's fitter lowers the "
                      f"context to {fitted_ctx[1]} tokens")
    elif verdict == "fail" and fitter["fit_ok"] and not (fitted_ctx and int(fitted_ctx[1]) < need.context):
        differ.append("verdict: ours says it does not fit, llama.cpp's fitter fits it as it is (it counts the "
                      "free memory each device reports, ours the GTT and VRAM of each host)")
    return sentence, differ


def fitter_env(s: Settings, server_env: dict[str, str]) -> dict[str, str]:
    """llama-server's LLAMA_ARG_* environment for llama-fit-params, its margin our reserve (-fitt), plus head_env.

    >>> fitter_env(Settings(), {"LLAMA_ARG_MODEL": "/m.gguf"})
    {'LLAMA_ARG_MODEL': '/m.gguf', 'LLAMA_ARG_FIT_TARGET': '1024'}
    """
    env = dict(server_env)
    env.setdefault("LLAMA_ARG_FIT_TARGET", str(s.head_fit_reserve_mib))
    return env | dict(s.head_env)


@operation()
def fits(s: Settings, model_path: str, head: list[Device], rpc: list[Device], endpoints: list[str],
         env: dict[str, str] | None = None):
    """Fail (head_fit_check = 'on') or warn before llama-server (re)starts when the model will not fit."""
    if s.head_fit_check == "off":
        host.noop("head_fit_check is off")
        return
    model = host.get_fact(GgufModel, path=model_path)
    if model is None or model["error"]:
        why = "no python3 on the head" if model is None else model["error"]
        if host.state.is_executing:  # at prepare time a download may not have happened yet
            logger.warning(f"{host.name}: the fit of {model_path} was not checked: {why}")
        host.noop("fit not checked")
        return
    verdict, sentence = report(s, model, head, rpc, endpoints)
    theirs, differ = "", []
    if host.state.is_executing and env is not None:  # llama.cpp's own fitter, when the model is there
        fitter = host.get_fact(LlamaFitParams, binary=f"{s.llama_cpp_prefix}/current/bin/llama-fit-params",
                               env=fitter_env(s, env))
        theirs, differ = compare_with_llama_cpp(s, model, verdict, fitter)
        theirs = f". Beside ours, {theirs}" + (f"; the two differ: {'; '.join(differ)}" if differ else "")
    if verdict == "fail" and s.head_fit_check == "on":
        yield failure(f"{sentence}. Or set head_fit_check = 'warn'{theirs}")
        return
    if host.state.is_executing:  # said once, when it is judged (not at prepare time)
        (logger.info if verdict == "ok" and not differ else logger.warning)(f"{host.name}: {sentence}{theirs}")
    host.noop("fit checked")


def serving_rpc(s: Settings, model_path: str, head: list[Device], rpc: list[Device], endpoints: list[str]) -> list[str]:
    """The --rpc list llama-server gets: every endpoint, or with head_rpc_servers = 'auto' the fewest
    (in order) the model fits on, read when the operation runs (the model may be downloaded just before)."""
    if s.head_rpc_servers != "auto":
        return endpoints
    model = host.get_fact(GgufModel, path=model_path)
    if model is None or model["error"]:
        return endpoints
    count = fewest_rpc(need_of(s, model).total, head, rpc, s.head_fit_reserve_mib * MIB)
    return endpoints if count is None else endpoints[:count]


def devices_of(cards: list[dict] | None, name: str, parts: int = 1) -> list[Device]:
    """Devices of one host from its GpuMemory fact: one per amdgpu card, shared by `parts` RPC servers.

    >>> devices_of([{"card": "card1", "gtt_total": 120 * GIB, "vram_total": 512 << 20}], "halo2", 2)[0].gtt // GIB
    60
    >>> devices_of([], "halo3")[0].describe(0)
    'halo3: no amdgpu card seen, not counted'
    """
    if cards is None:
        return [Device(name, None, unknown="not in this run (--limit?)")]
    if not cards:
        return [Device(name, None)]
    return [Device(f"{name} {c['card']}" if len(cards) > 1 else name,
                   None if c.get("gtt_total") is None else c["gtt_total"] // parts,
                   (c.get("vram_total") or 0) // parts) for c in cards]


def cluster_devices(head_name: str, head_cards: list[dict], workers: list[tuple[str, list[str], list[dict]]],
                    ) -> tuple[list[Device], list[Device], list[str]]:
    """(the head's devices, one device per RPC endpoint, the endpoints) from each host's GpuMemory.

    `workers`: (host name, its endpoints in the --rpc list, its cards), in inventory order. A worker's
    several RPC servers share its GPU.
    """
    rpc, endpoints = [], []
    for name, ends, cards in workers:
        for end in ends:
            device = devices_of(cards, f"RPC {end} ({name})", len(ends))[0]
            rpc.append(device)
            endpoints.append(end)
    return devices_of(head_cards, f"{head_name} (head GPU)"), rpc, endpoints


def gather(s: Settings, workers: list[Settings]) -> tuple[list[Device], list[Device], list[str]]:
    """cluster_devices() for this head, reading every worker's GpuMemory once per run (sysfs: a run
    does not change it)."""
    from deploys.runcache import once_per_run
    from facts.amdgpu import GpuMemory

    others = [w for w in workers if w.host_name != s.host_name and w.rpc_endpoints]

    def read() -> dict[str, list[dict]]:
        active = {h.name: h for h in host.state.inventory.get_active_hosts()}
        return {w.host_name: active[w.host_name].get_fact(GpuMemory) for w in workers if w.host_name in active}

    cards = once_per_run("worker_gpu_memory", read)
    return cluster_devices(s.host_name, host.get_fact(GpuMemory),
                           [(w.host_name, w.rpc_endpoints, cards.get(w.host_name)) for w in others])
