#!/usr/bin/env python3
# One pod's side of the scale benchmark's full-mesh check: ICMP echo requests
# (a raw socket, so one small process probes every target) to each target not
# yet answered, every INTERVAL_MS, until all answered or TIMEOUT_S passed.
# Prints one JSON line: {"first_reply": {target: epoch_ms or null}, "sent": n}.
# Bounded in time and in packets (timeout / interval rounds per target).
#
#   python3 mesh_probe.py TIMEOUT_S INTERVAL_MS TARGET...
import json
import os
import select
import signal
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b'flannel-udp scale probe'
    header = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    return struct.pack('!BBHHH', 8, 0, checksum(header + payload), ident, seq) + payload


def main() -> None:
    timeout_s = float(sys.argv[1])
    interval_s = float(sys.argv[2]) / 1000
    targets = sys.argv[3:]
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    # Every ICMP packet of the pod lands here (the other pods' echoes too): room for bursts while this process waits for a CPU.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    first = {t: None for t in targets}
    waiting = set(targets)
    deadline = time.monotonic() + timeout_s
    seq = 0
    sent = 0
    next_round = time.monotonic()

    def report(*_args):
        print(json.dumps({'first_reply': first, 'sent': sent}), flush=True)
        os._exit(0)

    # A hard bound, whatever the loop below is doing (a starved process, a flood of ICMP).
    signal.signal(signal.SIGALRM, report)
    signal.alarm(int(timeout_s) + 5)
    while waiting and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_round:
            for t in sorted(waiting):
                seq = (seq + 1) & 0xFFFF
                try:
                    sock.sendto(echo_request(ident, seq), socket.MSG_DONTWAIT, (t, 0))
                    sent += 1
                except OSError:
                    pass  # no route yet (the node's agent is not up): the next round tries again
            next_round = now + interval_s
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_round, deadline) - time.monotonic()))
        if not ready:
            continue
        packet, (source, _) = sock.recvfrom(2048)
        ihl = (packet[0] & 0x0F) * 4
        kind, _, _, reply_ident, _ = struct.unpack('!BBHHH', packet[ihl:ihl + 8])
        if kind == 0 and reply_ident == ident and source in waiting:
            first[source] = int(time.time() * 1000)
            waiting.discard(source)
    report()


main()
