"""Hold a network namespace's outgoing packets for a fixed time: `tc netem delay` where the kernel has no netem.

    ip netns exec NS iptables -A OUTPUT -d 10.151.9.0/24 -j NFQUEUE --queue-num 0 --queue-bypass
    ip netns exec NS .venv/bin/python -m bench.delay 10        # every queued packet leaves 10 ms later

The packets reach this process through the kernel's NFQUEUE (nfnetlink_queue); it asks for packet
ids only (no payload is copied) and, as soon as the oldest packets are `ms` old, accepts all of them
with one batch verdict, in arrival order: a constant one-way delay, as netem gives. With
--queue-bypass in the rule, packets pass undelayed when this process is not running.
"""

from __future__ import annotations

import collections
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
SO_RCVBUFFORCE = 33
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
QUEUE_SUBSYSTEM = 3 << 8  # NFNL_SUBSYS_QUEUE
MSG_PACKET, MSG_CONFIG, MSG_VERDICT_BATCH = 0, 2, 3
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN = 1, 2, 3
CMD_BIND, COPY_META = 1, 1
PACKET_HDR, VERDICT_HDR = 1, 2
NF_ACCEPT = 1


def attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def message(kind: int, queue: int, attributes: list[bytes], flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attributes)
    return struct.pack("=IHHII", 16 + len(body), QUEUE_SUBSYSTEM | kind, flags, 0, 0) + body


def messages(data: bytes):
    """(type, payload) of each netlink message in a datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        yield kind, data[offset + 16:offset + length]
        offset += (length + 3) & ~3


def packet_id(payload: bytes) -> int | None:
    """The id in a queued packet's NFQA_PACKET_HDR (after the 4-byte nfgenmsg)."""
    offset = 4
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if kind & 0x7FFF == PACKET_HDR:
            return struct.unpack_from("!I", payload, offset + 4)[0]
        offset += (length + 3) & ~3
    return None


def configure(sock: socket.socket, queue: int) -> None:
    """Bind the queue, ids only (copy mode META), room for many packets; fail on the kernel's error."""
    requests = [
        [attribute(CFG_CMD, struct.pack("!BxH", CMD_BIND, 0))],
        [attribute(CFG_PARAMS, struct.pack("!IB", 0, COPY_META))],
        [attribute(CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))],
    ]
    for attributes in requests:
        sock.send(message(MSG_CONFIG, queue, attributes, NLM_F_REQUEST | NLM_F_ACK))
        for kind, payload in messages(sock.recv(65536)):
            if kind == NLMSG_ERROR and struct.unpack_from("=i", payload)[0] != 0:
                raise OSError(-struct.unpack_from("=i", payload)[0], "nfnetlink_queue refused the configuration")


def run(delay_ms: float, queue: int = 0) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    sock.bind((0, 0))
    configure(sock, queue)
    print(f"delay: holding queue {queue} packets {delay_ms} ms", flush=True)
    delay = delay_ms / 1000
    pending: collections.deque[tuple[float, int]] = collections.deque()
    while True:
        wait = max(0.0, pending[0][0] + delay - time.monotonic()) if pending else 1.0
        if select.select([sock], [], [], wait)[0]:
            while True:
                try:
                    data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                arrived = time.monotonic()
                for kind, payload in messages(data):
                    if kind == QUEUE_SUBSYSTEM | MSG_PACKET and (pid := packet_id(payload)) is not None:
                        pending.append((arrived, pid))
        now, last = time.monotonic(), None
        while pending and pending[0][0] + delay <= now:
            last = pending.popleft()[1]
        if last is not None:
            sock.send(message(MSG_VERDICT_BATCH, queue, [attribute(VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last))]))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
