// The flags of `flannel-udp up` as one table (cli-flags.ts): the parser and
// --help are generated from it. New flags (kube mode, …) go in as another
// FlagGroup appended to UP_FLAGS.
import { DEFAULT_SUBNET_FILE } from './control/subnet-file.js';
import { DEFAULT_ETCD_PREFIX } from './control/etcd-subnet-manager.js';
import { OBSERVE_FLAGS } from './observe/options.js';
import { KUBE_FLAGS } from './control/kube-options.js';
import { renderFlagHelp, type FlagGroup, type UnsupportedFlags } from './cli-flags.js';

export const VERSION = '0.1.0';

/** `up`'s flags. Kube mode and other additions: append a FlagGroup (see cli-flags.ts). */
export const UP_FLAGS: readonly FlagGroup[] = [
  {
    title: 'Options for up:',
    flags: [
      { name: 'backend', type: 'string', value: 'TYPE', default: 'udp',
        help: "udp: flannel's udp wire format, the bare inner IPv4 packet in UDP (port 8285); vxlan: RFC 7348 frames that a Linux vxlan device (flannel's vxlan backend, flannel.1) accepts (port 8472)" },
      { name: 'vni', type: 'string', value: 'N', default: '1', help: 'vxlan: VXLAN network identifier' },
      { name: 'vtep-mac', type: 'string', value: 'MAC', default: 'derived from the public IP, so stable across restarts', help: "vxlan: this node's VTEP MAC" },
      { name: 'vxlan-udp-checksum', type: 'string', value: 'MODE', default: 'on',
        help: "vxlan: on (a real outer checksum, what a current kernel's vxlan device sends, ip -d link: udpcsum; lets the kernel batch sends with UDP GSO) or zero (RFC 7348's recommendation; one datagram per send, several times slower for TCP)" },
      { name: 'subnet-file', type: 'string', value: 'FILE', default: DEFAULT_SUBNET_FILE,
        help: "flannel's subnet.env for this node (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ)" },
      { name: 'leases', type: 'string', value: 'FILE',
        help: 'the peers: a JSON object shaped like flannel\'s etcd store, {"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}}. This node\'s own subnet may appear; it is skipped.' },
      { name: 'no-leases-watch', type: 'boolean',
        help: 'do not follow edits of the leases file; re-read it on SIGHUP only (for filesystems without inotify, e.g. NFS)' },
      { name: 'etcd-endpoints', type: 'string', value: 'URLS',
        help: "instead of --leases: flannel's etcd store, comma-separated http(s)://host:port. Reads <prefix>/config, leases a subnet under <prefix>/subnets/ (24 h, renewed), writes --subnet-file and watches the other nodes' leases" },
      { name: 'etcd-prefix', type: 'string', value: 'PATH', default: DEFAULT_ETCD_PREFIX, help: "etcd key prefix of flannel's store" },
      { name: 'etcd-cafile', type: 'string', value: 'FILE', help: "CA that signed etcd's certificate (https endpoints)" },
      { name: 'etcd-certfile', type: 'string', value: 'FILE', help: 'client certificate for etcd (with --etcd-keyfile)' },
      { name: 'etcd-keyfile', type: 'string', value: 'FILE', help: 'its private key' },
      { name: 'etcd-username', type: 'string', value: 'NAME',
        help: "etcd v3 user (with --etcd-password): the agent authenticates and sends etcd's token with every request, renewing it when etcd says it expired" },
      { name: 'etcd-password', type: 'string', value: 'PASSWORD',
        help: 'its password; never logged. Visible in the process list: prefer FLANNEL_ETCD_PASSWORD in the environment, read when this flag is absent' },
      { name: 'subnet-lease-renew-margin', type: 'string', value: 'MIN', default: '60',
        help: 'renew the subnet lease this many minutes before it expires' },
      { name: 'ip-masq', type: 'boolean',
        help: "masquerade pod traffic leaving the cluster network behind this node's address (flannel's FLANNEL-POSTRTG nat chain, removed on exit); written to subnet.env as FLANNEL_IPMASQ" },
      { name: 'iptables-forward-rules', type: 'boolean', default: 'true',
        help: "as flanneld: accept the cluster network in the filter table's FORWARD chain (flannel's FLANNEL-FWD chain), so a FORWARD policy of DROP (Docker sets it) does not drop pod traffic; kept like the masquerade rules. --iptables-forward-rules=false leaves FORWARD alone" },
      { name: 'iptables-resync', type: 'string', value: 'S', default: '5', help: 're-check the masquerade and forward rules every S seconds' },
      { name: 'public-ip', type: 'string', value: 'IP', help: "this node's underlay address: the UDP socket binds to it and peers send to it" },
      { name: 'public-ipv6', type: 'string', value: 'IP', help: "as flanneld: this node's IPv6 underlay address (its lease's PublicIPv6; default: the global IPv6 address of the interface holding the public IP). IPv6 pods go over IPv6 to peers whose lease has a PublicIPv6; enough alone on an IPv6-only node" },
      { name: 'iface', type: 'string', value: 'NAME|IP', multiple: true,
        help: "as flanneld: the interface for node-to-node traffic, by name or by one of its addresses; repeat it to try several in order, the first that exists wins. The public IP is its first IPv4 address (--public-ip overrides the address)" },
      { name: 'iface-regex', type: 'string', value: 'REGEX', multiple: true,
        help: "as flanneld: the first interface whose IPv4 address or name matches; repeatable, tried after every --iface" },
      { name: 'iface-can-reach', type: 'string', value: 'IP',
        help: "as flanneld: the interface (and source address) the kernel would use to reach this IP (ip route get IP); tried after --iface and --iface-regex" },
      { name: 'port', type: 'string', value: 'N', default: '8285 for udp, 8472 for vxlan, as flannel', help: 'UDP port, the same on every node' },
      { name: 'workers', type: 'string', value: 'N', default: 'number of CPU cores', help: 'worker threads, each with its own TUN queue and UDP socket' },
      { name: 'tun', type: 'string', value: 'NAME', default: 'flannel0', help: 'TUN device name' },
      { name: 'persist-tun', type: 'string', value: 'MODE', default: 'on',
        help: "on: the TUN device (with its address and routes) and the iptables rules outlive the agent: SIGTERM or a kill leaves them, and the next agent attaches to them, so a restart drops packets only while no agent runs and a hand-over (the new agent started while the old one runs) none; SIGINT or `flannel-udp cleanup` removes them. off: everything goes with the agent, on any exit" },
      { name: 'batch', type: 'string', value: 'N', default: '64', help: 'packets per recvmmsg/sendmmsg call' },
      { name: 'socket-buffer', type: 'string', value: 'N', default: '4194304', help: 'UDP socket send/receive buffer, bytes' },
      { name: 'offload', type: 'string', value: 'MODE', default: 'auto',
        help: "auto: TUN offloads (TSO super-packets split in userspace, coalesced on receive) and UDP GSO/GRO where the kernel has them, each falling back with a log line; off: one packet per TUN read/write, as flannel's proxy" },
      { name: 'busy-poll', type: 'string', value: 'US', default: '0',
        help: 'after traffic, keep polling this many microseconds without sleeping: fewer thread wake-ups on machines with spare cores, a spinning core otherwise (see docs/design.md)' },
      { name: 'rehearsal', type: 'string', value: 'MODE', default: 'on',
        help: 'on: before it starts, each worker forwards a few thousand made-up packets through its own code on private sockets (up to about a second), so the first real packets run optimised code instead of paying for it in latency; off: skip it (see docs/design.md)' },
      { name: 'receive-spread', type: 'string', value: 'MODE', default: 'inner-flow',
        help: "udp: which worker receives a datagram. inner-flow: a classic BPF program on the port's SO_REUSEPORT group hashes the pod flow inside it, so one peer's flows spread over the workers (a kernel that refuses it keeps its own hash, logged and shown in stats); kernel-hash: the kernel's hash of the outer addresses and ports, which are the same for all of one peer's traffic: one worker per peer" },
      { name: 'help', type: 'boolean', short: 'h', help: 'this text' },
    ],
  },
  KUBE_FLAGS,
  { title: 'Observability options for up:', flags: OBSERVE_FLAGS },
];

/**
 * flanneld's flags that `up` does not take, with what to use instead: given
 * on the command line or as FLANNELD_<FLAG>, they are refused with this text.
 */
export const FLANNELD_UNSUPPORTED: UnsupportedFlags = {
  version: 'run `flannel-udp --version`',
  v: "flanneld's klog verbosity: the agent logs every step it takes at one level; use `flannel-udp stats` and `flannel-udp trace` for more",
  vmodule: "flanneld's klog per-file verbosity: not applicable; use `flannel-udp trace` to follow packets",
  log_backtrace_at: "flanneld's klog option: not applicable; errors name their cause",
  'etcd-endpoint': 'the flag is --etcd-endpoints (plural)',
  'kube-config-file': 'the flag is --kubeconfig-file',
  'iptables-resync-period': 'the flag is --iptables-resync (seconds)',
};

const HELP_HEADER = `flannel-udp ${VERSION} — userspace UDP/TUN data plane for flannel pod networks

Usage:
  flannel-udp up --subnet-file FILE --leases FILE (--public-ip IP | --iface NAME) [options]
  flannel-udp up --subnet-file FILE --etcd-endpoints URL[,URL…] (--public-ip IP | --iface NAME) [options]
  flannel-udp up --kube-subnet-mgr [--kubeconfig-file FILE] [--net-config-path FILE] [options]
  flannel-udp cleanup [--tun NAME]     remove what agents left: the device, its routes, the iptables rules
  flannel-udp install-cni [--bin-dir DIR] [--conf-dir DIR] [--force] …  (see install-cni --help)
  flannel-udp stats [--tun NAME] [--watch [SECONDS]] [--json]      a running agent's counters (see stats --help)
  flannel-udp trace [--tun NAME] [--filter EXPR] [--limit N] [--json]  follow packets through it (see trace --help)
  flannel-udp --help | --version

up: create the TUN device, route the cluster network through it and forward
packets between it and the peers named in the leases file, until SIGINT
(which removes everything it created) or SIGTERM (which leaves the device,
its routes and the iptables rules for the next agent; --persist-tun off
removes them too). SIGHUP re-reads the leases file
(it is also watched); SIGUSR1 prints the counters and the lease table;
SIGUSR2 makes worker 0 fail on purpose (fault injection: it is restarted).
With --etcd-endpoints, as flanneld: the node leases a subnet from etcd, writes
subnet.env and follows the other nodes' leases live (SIGHUP re-reads them).
With --kube-subnet-mgr, as flanneld in kube-flannel.yml: the subnet is the
node's spec.podCIDR and the peers are the other nodes' flannel annotations.

`;

/** `flannel-udp --help` and `up --help`: the header, then every flag of UP_FLAGS. */
export function helpText(): string {
  return HELP_HEADER + renderFlagHelp(UP_FLAGS);
}

