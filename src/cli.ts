// Command-line entry: `flannel-udp up …` runs a node's agent.
import { parseArgs } from 'node:util';
import { availableParallelism } from 'node:os';
import { Agent, type AgentOptions } from './agent.js';
import { DEFAULT_SUBNET_FILE } from './control/subnet-file.js';

const VERSION = '0.1.0';

const HELP = `flannel-udp ${VERSION} — userspace UDP/TUN data plane for flannel pod networks

Usage:
  flannel-udp up --subnet-file FILE --leases FILE (--public-ip IP | --iface NAME) [options]
  flannel-udp install-cni [--bin-dir DIR] [--conf-dir DIR] [--force]   (see install-cni --help)
  flannel-udp --help | --version

up: create the TUN device, route the cluster network through it and forward
packets between it and the peers named in the leases file, until SIGINT or
SIGTERM (which remove everything it created). SIGHUP re-reads the leases file
(it is also watched); SIGUSR1 prints the counters and the lease table;
SIGUSR2 makes worker 0 fail on purpose (fault injection: it is restarted).

Options for up:
  --backend TYPE       udp: flannel's udp wire format, the bare inner IPv4 packet in
                       UDP (port 8285); vxlan: RFC 7348 frames that a Linux vxlan
                       device (flannel's vxlan backend, flannel.1) accepts (port
                       8472) [default: udp]
  --vni N              vxlan: VXLAN network identifier [default: 1]
  --vtep-mac MAC       vxlan: this node's VTEP MAC [default: derived from the public
                       IP and subnet, so stable across restarts]
  --vxlan-udp-checksum MODE
                       vxlan: zero (RFC 7348's recommendation, what flannel's
                       kernel device sends unless udpcsum) or on (a real checksum;
                       lets the kernel batch sends with UDP GSO) [default: zero]
  --subnet-file FILE   flannel's subnet.env for this node (FLANNEL_NETWORK,
                       FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ)
                       [default: ${DEFAULT_SUBNET_FILE}]
  --leases FILE        the peers: a JSON object shaped like flannel's etcd store,
                       {"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}}
                       This node's own subnet may appear; it is skipped.
  --no-leases-watch    do not follow edits of the leases file; re-read it on SIGHUP
                       only (for filesystems without inotify, e.g. NFS)
  --public-ip IP       this node's underlay address: the UDP socket binds to it and
                       peers send to it
  --iface NAME         take the public IP from this interface instead (like flanneld)
  --port N             UDP port, the same on every node [default: 8285 for udp,
                       8472 for vxlan, as flannel]
  --workers N          worker threads, each with its own TUN queue and UDP socket
                       [default: number of CPU cores]
  --tun NAME           TUN device name [default: flannel0]
  --batch N            packets per recvmmsg/sendmmsg call [default: 64]
  --socket-buffer N    UDP socket send/receive buffer, bytes [default: 4194304]
  --offload MODE       auto: TUN offloads (TSO super-packets split in userspace,
                       coalesced on receive) and UDP GSO/GRO where the kernel has
                       them, each falling back with a log line; off: one packet
                       per TUN read/write, as flannel's proxy [default: auto]
  -h, --help           this text
  --version            print the version
`;

function die(message: string, code = 2): never {
  process.stderr.write(`flannel-udp: ${message}\n`);
  process.exit(code);
}

function intFlag(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) die(`--${name}: "${value}" is not a whole number from ${min} to ${max}`);
  return n;
}

function offloadFlag(value: string | undefined): boolean {
  if (value === undefined || value === 'auto') return true;
  if (value === 'off') return false;
  die(`--offload: "${value}" is not auto or off`);
}

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

async function up(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'subnet-file': { type: 'string' },
      leases: { type: 'string' },
      'no-leases-watch': { type: 'boolean' },
      backend: { type: 'string' },
      vni: { type: 'string' },
      'vtep-mac': { type: 'string' },
      'vxlan-udp-checksum': { type: 'string' },
      'public-ip': { type: 'string' },
      iface: { type: 'string' },
      port: { type: 'string' },
      workers: { type: 'string' },
      tun: { type: 'string' },
      batch: { type: 'string' },
      'socket-buffer': { type: 'string' },
      offload: { type: 'string' },
      'busy-poll': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (!values.leases) die('--leases FILE is required (the peers; see --help)');
  const backend = values.backend ?? 'udp';
  if (backend !== 'udp' && backend !== 'vxlan') die(`--backend: "${backend}" is not udp or vxlan`);
  const checksum = values['vxlan-udp-checksum'] ?? 'zero';
  if (checksum !== 'zero' && checksum !== 'on') die(`--vxlan-udp-checksum: "${checksum}" is not zero or on`);
  const opts: AgentOptions = {
    backend,
    vni: intFlag('vni', values.vni, 1, 0, 0xffffff),
    vtepMac: values['vtep-mac'],
    vxlanUdpChecksum: checksum === 'on',
    subnetFile: values['subnet-file'] ?? DEFAULT_SUBNET_FILE,
    leasesFile: values.leases,
    watchLeases: !values['no-leases-watch'],
    publicIp: values['public-ip'],
    iface: values.iface,
    port: intFlag('port', values.port, backend === 'vxlan' ? 8472 : 8285, 1, 65535),
    workers: intFlag('workers', values.workers, availableParallelism(), 1, 256),
    tunName: values.tun ?? 'flannel0',
    batchSize: intFlag('batch', values.batch, 64, 1, 1024),
    socketBufferBytes: intFlag('socket-buffer', values['socket-buffer'], 4 << 20, 65536, 1 << 30),
    offload: offloadFlag(values.offload),
    busyPollUs: intFlag('busy-poll', values['busy-poll'], 0, 0, 1_000_000),
  };

  const agent = new Agent(opts, log);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    agent.stop().then(
      () => {
        log('stopped; TUN device, routes and sockets removed');
        process.exit(0);
      },
      (err) => die(`error while stopping: ${err}`, 1),
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGHUP', () => {
    log('SIGHUP: re-reading leases');
    void agent.reload();
  });
  process.on('SIGUSR1', () => process.stderr.write(JSON.stringify(agent.statsSnapshot()) + '\n'));
  process.on('SIGUSR2', () => agent.injectWorkerFault(0));

  try {
    await agent.start();
  } catch (err) {
    await agent.stop().catch(() => undefined);
    throw err;
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up':
      return up(rest);
    case 'install-cni':
      return (await import('./cni/install.js')).installCniCommand(rest);
    case '--version':
    case 'version':
      process.stdout.write(`${VERSION}\n`);
      return;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(HELP);
      return;
    default:
      die(`unknown command "${command}"; see flannel-udp --help`);
  }
}

// Errors the user can act on (bad flags, files, a device already in use) get
// one clear line and exit code 2; anything unexpected keeps its stack (exit 1).
const USER_ERRORS = new Set(['ConfigError', 'SubnetFileError', 'LeaseError', 'LeasesFileError', 'TunInUseError', 'SyscallError']);

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err));
  if (USER_ERRORS.has(e.name)) die(e.message, 2);
  die(e.stack ?? e.message, 1);
});
