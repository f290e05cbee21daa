#!/usr/bin/env python3
"""An independent, minimal flannel udp forwarder: the benchmark's latency
reference and the second peer of the interop test.

It shares no code with flannel-udp. Its structure is that of flannel's C proxy
(pkg/backend/udp/proxy_amd64.c), written from its description, not copied:

  one thread; poll() on the TUN fd and the UDP socket; then, while either
  moves data, read() from the TUN -> route lookup -> TTL-1 -> sendto(), and
  recv() from the socket -> TTL-1 -> write() to the TUN.

Wire format (flannel's udp backend): the UDP payload is the bare inner IPv4
packet, nothing in front of it; port 8285 by default.

The TUN device is set up as flanneld's udp backend sets up flannel0: plain
IFF_TUN | IFF_NO_PI (one queue, no offloads), the node subnet's network
address as a /32, MTU = underlay MTU - 28, link up, and a route for the whole
cluster network through the device.

Only Debian's python3 standard library is used. Run as root, e.g.

  udp_proxy.py --tun flannel0 --public-ip 192.0.2.1 --subnet 10.244.1.0/24 \
      --network 10.244.0.0/16 --mtu 1472 --route 10.244.2.0/24=192.0.2.2
"""

import argparse
import fcntl
import ipaddress
import os
import select
import signal
import socket
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPV4_HEADER_MIN = 20
BUFFER_SIZE = 65536  # any packet the TUN or the socket can hand over


class Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tun", default="flannel0", help="TUN device to create [flannel0]")
    p.add_argument("--port", type=int, default=8285, help="UDP port to listen on and send to [8285]")
    p.add_argument("--public-ip", default="0.0.0.0", help="address to bind the UDP socket to (flanneld binds the public interface's)")
    p.add_argument("--subnet", required=True, help="this node's subnet, e.g. 10.244.1.0/24 (FLANNEL_SUBNET's network)")
    p.add_argument("--network", required=True, help="the cluster network, e.g. 10.244.0.0/16 (FLANNEL_NETWORK)")
    p.add_argument("--mtu", type=int, required=True, help="TUN MTU: the underlay's MTU minus 28")
    p.add_argument("--route", action="append", default=[], metavar="SUBNET=PUBLICIP",
                   help="a remote node's subnet and public IP; repeat per node")
    p.add_argument("--no-configure", action="store_true", help="open the TUN but leave addresses, MTU and routes to the caller")
    return p.parse_args(argv)


def parse_routes(specs):
    """SUBNET=PUBLICIP strings -> [(network int, mask int, prefix, (ip, port))], longest prefix first."""
    routes = []
    for spec in specs:
        subnet, sep, public_ip = spec.partition("=")
        if not sep:
            raise ValueError(f"--route {spec!r}: expected SUBNET=PUBLICIP")
        net = ipaddress.IPv4Network(subnet, strict=True)
        ipaddress.IPv4Address(public_ip)  # validates
        routes.append((int(net.network_address), int(net.netmask), net.prefixlen, public_ip))
    routes.sort(key=lambda r: -r[2])
    return routes


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifreq = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifreq)
    return fd


def ip(*args):
    subprocess.run(["ip", *args], check=True)


def configure_tun(name, subnet, network, mtu):
    # IPv4 only, as the pod network; keeps router solicitations out of the TUN.
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    ip("addr", "add", f"{subnet.network_address}/32", "dev", name)
    ip("link", "set", "dev", name, "mtu", str(mtu), "up")
    ip("route", "replace", str(network), "dev", name)


def decrement_ttl(buf):
    """TTL-1 with the header checksum patched incrementally; False when it reaches 0.

    As flannel's proxy.c does it (its comment cites RFC 1624, the arithmetic is
    RFC 1141's HC + 0x0100 with end-around carry): where a full recomputation
    gives 0x0000 this gives 0xFFFF, the other one's-complement zero. Both
    verify; test/unit/reference-proxy.test.ts checks that boundary.
    """
    ttl = buf[8]
    if ttl <= 1:
        return False
    buf[8] = ttl - 1
    # The TTL is the high byte of header word 4: it drops by 0x0100, so the
    # one's-complement checksum rises by 0x0100 (with end-around carry).
    check = (buf[10] << 8 | buf[11]) + 0x0100
    check = (check & 0xFFFF) + (check >> 16)
    buf[10] = check >> 8
    buf[11] = check & 0xFF
    return True


def main(argv):
    args = parse_args(argv)
    routes = parse_routes(args.route)
    subnet = ipaddress.IPv4Network(args.subnet, strict=True)
    network = ipaddress.IPv4Network(args.network, strict=True)

    tun = open_tun(args.tun)
    if not args.no_configure:
        configure_tun(args.tun, subnet, network, args.mtu)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.public_ip, args.port))
    sock.setblocking(False)

    stats = {"tun_to_udp": 0, "udp_to_tun": 0, "no_route": 0, "ttl_expired": 0, "runt": 0, "oversize": 0, "send_errors": 0}
    # poll() restarts after a handler returns (PEP 475), so the handler raises to leave the loop.
    def stop(*_):
        raise Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    port = args.port
    mtu = args.mtu
    sock_fd = sock.fileno()

    def lookup(dst):
        for net, mask, _prefix, public_ip in routes:
            if dst & mask == net:
                return public_ip
        return None

    def tun_to_udp():
        try:
            n = os.readv(tun, [buf])
        except BlockingIOError:
            return False
        if n < IPV4_HEADER_MIN or buf[0] >> 4 != 4:
            stats["runt"] += 1
            return True
        next_hop = lookup(int.from_bytes(buf[16:20], "big"))
        if next_hop is None:
            stats["no_route"] += 1
            return True
        if not decrement_ttl(buf):
            stats["ttl_expired"] += 1
            return True
        try:
            sock.sendto(view[:n], (next_hop, port))
            stats["tun_to_udp"] += 1
        except OSError:
            stats["send_errors"] += 1
        return True

    def udp_to_tun():
        try:
            # MSG_TRUNC: the datagram's real length. The C proxy's buffer is
            # MTU-sized, so a peer sending more than that would be cut off
            # there; here it is counted, and dropped.
            n = sock.recv_into(buf, 0, socket.MSG_TRUNC)
        except BlockingIOError:
            return False
        if n > mtu:
            stats["oversize"] += 1
            return True
        if n < IPV4_HEADER_MIN or buf[0] >> 4 != 4:
            stats["runt"] += 1
            return True
        if not decrement_ttl(buf):
            stats["ttl_expired"] += 1
            return True
        try:
            os.write(tun, view[:n])
            stats["udp_to_tun"] += 1
        except OSError:
            stats["send_errors"] += 1
        return True

    poller = select.poll()
    poller.register(tun, select.POLLIN)
    poller.register(sock_fd, select.POLLIN)
    print(f"reference udp proxy ready: {args.tun} {subnet.network_address}/32 mtu {args.mtu}, "
          f"udp {args.public_ip}:{port}, {len(routes)} route(s)", flush=True)

    try:
        while True:
            poller.poll()
            # As the C proxy: keep moving while either side has data, poll again only when both are dry.
            while True:
                moved = tun_to_udp()
                moved = udp_to_tun() or moved
                if not moved:
                    break
    except Stop:
        pass

    print("reference udp proxy stopping: " + " ".join(f"{k}={v}" for k, v in stats.items()), flush=True)
    sock.close()
    os.close(tun)  # the device, its address and its route go with it
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ValueError, OSError, subprocess.CalledProcessError) as err:
        print(f"udp_proxy: {err}", file=sys.stderr)
        sys.exit(1)
