"""How the cluster scales: llama-bench on the head with 0, 1, ... N of its RPC servers, as a table.

    .venv/bin/python -m bench.llama_bench inventories/mycluster.py [--data key=value ...]
        [--nodes 0,1,2] [-p 512] [-n 128] [-r 3] [--json scaling.json] [--markdown scaling.md]

It reads the inventory as pyinfra does (group_data/ included), connects to the first host of group
head with pyinfra's connector (the inventory's SSH settings), and runs the head's
`<llama_cpp_prefix>/current/bin/llama-bench` on the model the head serves (model_path, or the
download in model_dir) once per point, with `--rpc` = the first k servers of llama-server's --rpc list
(inventory order, never the head's own) and every layer offloaded (-ngl 999). An RPC server serves
one client at a time, so halo-llama-server is stopped for the run and started again afterwards
(when it was running). Prints, as Markdown and JSON (`--json`, `--markdown` also write them):

    | nodes | RPC servers | pp512 t/s | tg128 t/s | pp vs 1 node | tg vs 1 node |

nodes = the head + k workers; "vs 1 node" divides by the head-alone row. llama-bench is not in
deploys/llama_cpp.py's build (every host would compile it for a tool run by hand): when the head's
build lacks it, this builds the `llama-bench` target in the head's build tree (the host that compiled
the build; a copy host has no tree and says so) and puts the binary beside llama-server.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from pyinfra.api import Config, State, StringCommand
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import parse_cli_arg

from deploys.head import UNIT, model_file
from deploys.llama_cpp import cmake_flags, flags_hash
from deploys.settings import HEAD_GROUP, RPC_WORKERS_GROUP, validate_inventory
from deploys.topology import rpc_list

REPO = Path(__file__).resolve().parents[1]


def load(path: str, data: list[str]):
    """The inventory as `pyinfra <path> --data ...` loads it, attached to a State (for connecting)."""
    override = {key: parse_cli_arg(value) for key, _, value in (item.partition("=") for item in data)}
    state = State()
    state.cwd = str(REPO)
    with ctx_state.use(state):
        inventory = make_inventory(path, cwd=str(REPO), override_data=override)
    state.init(inventory, Config(CONNECT_TIMEOUT=30))
    return state, inventory


def bench_command(binary: str, model: str, rpc: list[str], prompt: int, gen: int, reps: int) -> str:
    """One llama-bench run as a shell command (JSON on stdout).

    >>> bench_command("/opt/llama.cpp/current/bin/llama-bench", "/m/t.gguf", ["10.0.0.2:50052"], 512, 128, 3)
    '/opt/llama.cpp/current/bin/llama-bench -m /m/t.gguf -p 512 -n 128 -r 3 -ngl 999 -o json --rpc 10.0.0.2:50052'
    """
    args = [binary, "-m", model, "-p", str(prompt), "-n", str(gen), "-r", str(reps), "-ngl", "999", "-o", "json"]
    return shlex.join(args + (["--rpc", ",".join(rpc)] if rpc else []))


def speeds(results: list[dict]) -> tuple[float | None, float | None]:
    """(prompt processing t/s, generation t/s) from llama-bench's JSON rows.

    >>> speeds([{"n_prompt": 512, "n_gen": 0, "avg_ts": 100.5}, {"n_prompt": 0, "n_gen": 128, "avg_ts": 20.25}])
    (100.5, 20.25)
    """
    pp = next((r["avg_ts"] for r in results if r.get("n_prompt") and not r.get("n_gen")), None)
    tg = next((r["avg_ts"] for r in results if r.get("n_gen") and not r.get("n_prompt")), None)
    return pp, tg


def table(rows: list[dict], prompt: int, gen: int) -> str:
    """The Markdown table; "vs 1 node" is relative to the head-alone row (nodes = 1).

    >>> print(table([{"nodes": 1, "rpc": [], "pp": 100.0, "tg": 20.0}, {"nodes": 2, "rpc": ["w:1"], "pp": 90.0, "tg": 17.0}], 512, 128))
    | nodes | RPC servers | pp512 t/s | tg128 t/s | pp vs 1 node | tg vs 1 node |
    |---|---|---|---|---|---|
    | 1 | - | 100.00 | 20.00 | 1.00x | 1.00x |
    | 2 | w:1 | 90.00 | 17.00 | 0.90x | 0.85x |
    """
    base = next((r for r in rows if r["nodes"] == 1), None)

    def ratio(row: dict, key: str) -> str:
        if not base or not base[key] or row[key] is None:
            return "-"
        return f"{row[key] / base[key]:.2f}x"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [f"| nodes | RPC servers | pp{prompt} t/s | tg{gen} t/s | pp vs 1 node | tg vs 1 node |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['nodes']} | {', '.join(row['rpc']) or '-'} | {num(row['pp'])} | {num(row['tg'])} | "
                     f"{ratio(row, 'pp')} | {ratio(row, 'tg')} |")
    return "\n".join(lines)


def ensure_llama_bench(head, s) -> str:
    """The head's llama-bench: the build's own, or built now in the head's build tree."""
    prefix = s.llama_cpp_prefix
    binary = f"{prefix}/current/bin/llama-bench"
    tree = f"{prefix}/trees/{flags_hash(cmake_flags(s))}"
    script = f"""set -e
[ -x {shlex.quote(binary)} ] && exit 0
if [ ! -d {shlex.quote(tree)} ]; then
    echo "{head.name} has no llama-bench in {prefix}/current and no build tree {tree} to build it in (its build was copied from another host): run this where the build was compiled, or build the llama-bench target there" >&2
    exit 1
fi
echo "building llama-bench in {tree} (once)" >&2
cmake --build {shlex.quote(tree)} --target llama-bench -j "$(nproc)" >/dev/null
cp {shlex.quote(tree)}/bin/llama-bench {shlex.quote(binary)}.new && mv {shlex.quote(binary)}.new {shlex.quote(binary)}
"""
    ok, output = head.run_shell_command(StringCommand("bash", "-c", shlex.quote(script)))
    if not ok:
        raise SystemExit(f"{head.name}: {output.stderr.strip()}")
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inventory")
    parser.add_argument("--data", action="append", default=[], help="key=value, as for pyinfra")
    parser.add_argument("--nodes", default=None, help="numbers of RPC servers, e.g. 0,1,2 (default: 0..N)")
    parser.add_argument("-p", "--prompt", type=int, default=512)
    parser.add_argument("-n", "--gen", type=int, default=128)
    parser.add_argument("-r", "--reps", type=int, default=3)
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args(argv)

    state, inventory = load(args.inventory, args.data)
    valid = validate_inventory(inventory)
    heads = [h for h in inventory if HEAD_GROUP in h.groups]
    if not heads:
        raise SystemExit(f"{args.inventory}: group {HEAD_GROUP} is empty: nothing to benchmark")
    head = heads[0]
    s = valid[head.name]
    rpc = rpc_list(s, [valid[h.name] for h in inventory.get_group(RPC_WORKERS_GROUP, [])])
    counts = [int(c) for c in args.nodes.split(",")] if args.nodes else list(range(len(rpc) + 1))
    if any(c < 0 or c > len(rpc) for c in counts):
        raise SystemExit(f"--nodes {args.nodes}: {head.name} has {len(rpc)} RPC servers ({', '.join(rpc) or 'none'})")
    head.connect(raise_exceptions=True)
    binary = ensure_llama_bench(head, s)
    model = model_file(s)
    _, was = head.run_shell_command(StringCommand("systemctl", "is-active", UNIT))
    running = was.stdout.strip() == "active"
    rows = []
    try:
        if running:  # an RPC server serves one client at a time
            head.run_shell_command(StringCommand("systemctl", "stop", UNIT))
        for count in counts:
            command = bench_command(binary, model, rpc[:count], args.prompt, args.gen, args.reps)
            print(f"{head.name}: {command}", file=sys.stderr)
            ok, output = head.run_shell_command(StringCommand("bash", "-c", shlex.quote(command + " 2>/dev/null")))
            if not ok:
                raise SystemExit(f"{head.name}: llama-bench with {count} RPC servers failed: {output.stderr.strip()}")
            pp, tg = speeds(json.loads(output.stdout))
            rows.append({"nodes": count + 1, "rpc": rpc[:count], "pp": pp, "tg": tg,
                         "prompt": args.prompt, "gen": args.gen, "reps": args.reps})
    finally:
        if running:
            head.run_shell_command(StringCommand("systemctl", "start", UNIT))
    markdown = table(rows, args.prompt, args.gen)
    print(markdown)
    print(json.dumps(rows, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
