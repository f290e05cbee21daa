// Command-line entry: `flannel-udp up …` runs a node's agent.
import { parseArgs } from 'node:util';
import { availableParallelism } from 'node:os';
import { Agent, type AgentOptions } from './agent.js';
import { DEFAULT_SUBNET_FILE } from './control/subnet-file.js';
import { DEFAULT_ETCD_PREFIX } from './control/etcd-subnet-manager.js';
import { OBSERVE_FLAGS, OBSERVE_HELP, parseObserveFlags } from './observe/options.js';
import { KUBE_FLAGS, KUBE_HELP, parseKubeFlags } from './control/kube-options.js'; // kube mode (issue 13)

const VERSION = '0.1.0';

const HELP = `flannel-udp ${VERSION} — userspace UDP/TUN data plane for flannel pod networks

Usage:
  flannel-udp up --subnet-file FILE --leases FILE (--public-ip IP | --iface NAME) [options]
  flannel-udp up --subnet-file FILE --etcd-endpoints URL[,URL…] (--public-ip IP | --iface NAME) [options]
  flannel-udp up --kube-subnet-mgr [--kubeconfig-file FILE] [--net-config-path FILE] [options]
  flannel-udp install-cni [--bin-dir DIR] [--conf-dir DIR] [--force]   (see install-cni --help)
  flannel-udp stats [--tun NAME] [--watch [SECONDS]] [--json]      a running agent's counters (see stats --help)
  flannel-udp trace [--tun NAME] [--filter EXPR] [--limit N] [--json]  follow packets through it (see trace --help)
  flannel-udp --help | --version

up: create the TUN device, route the cluster network through it and forward
packets between it and the peers named in the leases file, until SIGINT or
SIGTERM (which remove everything it created). SIGHUP re-reads the leases file
(it is also watched); SIGUSR1 prints the counters and the lease table;
SIGUSR2 makes worker 0 fail on purpose (fault injection: it is restarted).
With --etcd-endpoints, as flanneld: the node leases a subnet from etcd, writes
subnet.env and follows the other nodes' leases live (SIGHUP re-reads them).

Options for up:
  --backend TYPE       udp: flannel's udp wire format, the bare inner IPv4 packet in
                       UDP (port 8285); vxlan: RFC 7348 frames that a Linux vxlan
                       device (flannel's vxlan backend, flannel.1) accepts (port
                       8472) [default: udp]
  --vni N              vxlan: VXLAN network identifier [default: 1]
  --vtep-mac MAC       vxlan: this node's VTEP MAC [default: derived from the public
                       IP, so stable across restarts]
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
  --etcd-endpoints URLS
                       instead of --leases: flannel's etcd store, comma-separated
                       http(s)://host:port. Reads <prefix>/config, leases a subnet
                       under <prefix>/subnets/ (24 h, renewed), writes --subnet-file
                       and watches the other nodes' leases
  --etcd-prefix PATH   [default: ${DEFAULT_ETCD_PREFIX}]
  --etcd-cafile FILE   CA that signed etcd's certificate (https endpoints)
  --etcd-certfile FILE client certificate for etcd (with --etcd-keyfile)
  --etcd-keyfile FILE  its private key
  --subnet-lease-renew-margin MIN
                       renew the subnet lease this many minutes before it expires
                       [default: 60]
  --ip-masq            masquerade pod traffic leaving the cluster network behind
                       this node's address (flannel's FLANNEL-POSTRTG nat chain,
                       removed on exit); written to subnet.env as FLANNEL_IPMASQ
  --iptables-resync S  re-check the masquerade rules every S seconds [default: 5]
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

${KUBE_HELP}
${OBSERVE_HELP}`;

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
      'etcd-endpoints': { type: 'string' },
      'etcd-prefix': { type: 'string' },
      'etcd-cafile': { type: 'string' },
      'etcd-certfile': { type: 'string' },
      'etcd-keyfile': { type: 'string' },
      'subnet-lease-renew-margin': { type: 'string' },
      'ip-masq': { type: 'boolean' },
      'iptables-resync': { type: 'string' },
      ...OBSERVE_FLAGS,
      ...KUBE_FLAGS, // kube mode (issue 13)
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const etcdEndpoints = values['etcd-endpoints'];
  // ---- kube mode (issue 13): --kube-subnet-mgr and its companions; one peer source only ----
  const kube = parseKubeFlags(values);
  if (kube && (values.leases || etcdEndpoints)) die('--kube-subnet-mgr excludes --leases and --etcd-endpoints: the peers come from the Kubernetes API');
  if (kube && values.backend) die("--backend: with --kube-subnet-mgr the backend is net-conf.json's Backend.Type");
  // ---- end of kube mode block ----
  if (values.leases && etcdEndpoints) die('--leases and --etcd-endpoints are mutually exclusive: the peers come from a file or from etcd, not both');
  if (!values.leases && !etcdEndpoints && !kube) die('--leases FILE, --etcd-endpoints URLS or --kube-subnet-mgr is required (where the peers come from; see --help)');
  if (etcdEndpoints && values.backend) die("--backend: with --etcd-endpoints the backend is the network config's Backend.Type");
  for (const f of ['etcd-prefix', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'subnet-lease-renew-margin'] as const) {
    if (values[f] !== undefined && !etcdEndpoints) die(`--${f} needs --etcd-endpoints`);
  }
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
    etcd: etcdEndpoints
      ? {
          endpoints: etcdEndpoints.split(',').map((e) => e.trim()).filter((e) => e !== ''),
          prefix: values['etcd-prefix'] ?? DEFAULT_ETCD_PREFIX,
          caFile: values['etcd-cafile'],
          certFile: values['etcd-certfile'],
          keyFile: values['etcd-keyfile'],
          // the lease lives 24 h (1440 min); the margin must leave time before renewing
          renewMarginMs: intFlag('subnet-lease-renew-margin', values['subnet-lease-renew-margin'], 60, 1, 1439) * 60_000,
        }
      : undefined,
    kube, // kube mode (issue 13)
    ipMasq: values['ip-masq'] ?? false,
    iptablesResyncMs: intFlag('iptables-resync', values['iptables-resync'], 5, 1, 86400) * 1000,
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
    observe: parseObserveFlags(values, values.tun ?? 'flannel0'),
  };

  const agent = new Agent(opts, log);
  let stopping = false;
  const shutdown = (signal: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    agent.stop().then(
      () => {
        log('stopped; TUN device, routes and sockets removed');
        process.exit(code);
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
  // etcd mode: this node's lease was deleted or expired. flanneld exits then; a supervisor restarts it.
  agent.onFatal = (err) => shutdown(`fatal: ${err.message}`, 1);

  try {
    await agent.start();
  } catch (err) {
    if (stopping) return; // a signal during start (kube mode waiting for its podCIDR): shutdown() exits
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
    case 'stats':
      return (await import('./observe/commands.js')).statsCommand(rest);
    case 'trace':
      return (await import('./observe/commands.js')).traceCommand(rest);
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
const USER_ERRORS = new Set([
  'ConfigError', 'SubnetFileError', 'LeaseError', 'LeasesFileError', 'TunInUseError', 'SyscallError',
  'NetworkConfigError', 'EtcdError', 'EtcdSetupError', 'SubnetExhaustedError', 'IpMasqError',
  'ObserveFlagError', 'TraceFilterError', 'KubeFlagError', 'KubeSetupError', 'KubeApiError', 'CommandLineError', 'ControlClientError', 'ControlSocketInUseError',
]);

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err));
  if (USER_ERRORS.has(e.name)) die(e.message, 2);
  die(e.stack ?? e.message, 1);
});
