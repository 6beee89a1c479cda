"""Command line of the test lab: `python -m lab start 3`, `... stop`, `... status`."""

import json
import sys

from lab import lab


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("status", [])
    try:
        if command == "start":
            hosts = lab.start(lab.parse_host_args(args or ["3"]))
            for host in hosts:
                print(f"{host.name}\t{host.address}\tDebian {host.release}")
            print(f"inventory: {lab.STATE / 'inventory.py'}")
            print(f"testinfra: --hosts={(lab.STATE / 'hosts.txt').read_text().strip()} "
                  f"--ssh-config={lab.STATE / 'ssh_config'}")
        elif command == "stop":
            lab.stop()
            left = {k: v for k, v in lab.leftovers().items() if v}
            if left:
                print(f"lab: left behind after stop: {json.dumps(left)}", file=sys.stderr)
                return 1
            print("lab: stopped, nothing left behind")
        elif command == "status":
            for host in lab.load_hosts():
                print(f"{host.name}\t{host.address}\tDebian {host.release}\t"
                      f"{'running' if lab.is_alive(host) else 'stopped'}")
        else:
            print("usage: python -m lab start [N | name:release ...] | stop | status", file=sys.stderr)
            return 2
    except lab.LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
