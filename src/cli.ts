// Command-line entry: `flannel-udp up …` runs a node's agent.
import { availableParallelism } from 'node:os';
import { Agent, type AgentOptions } from './agent.js';
import { DEFAULT_SUBNET_FILE } from './control/subnet-file.js';
import { DEFAULT_ETCD_PREFIX } from './control/etcd-subnet-manager.js';
import { parseObserveFlags, type ObserveFlagValues } from './observe/options.js';
import { parseFlags } from './cli-flags.js';
import { FLANNELD_UNSUPPORTED, UP_FLAGS, VERSION, helpText } from './up-flags.js';
import { parseKubeFlags } from './control/kube-options.js'; // kube mode (issue 13)


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

/** How long SIGTERM waits for a clean stop (flanneld's pods get 30 s before SIGKILL). */
const STOP_DEADLINE_MS = 20_000;

/**
 * Ends the process even when process.exit() could not: exit() joins libuv's
 * pool threads, and one blocked in a system call would hold it forever. The
 * default action of SIGTERM ends the process at once; SIGKILL a second later
 * if even that was caught.
 */
function forceExit(): void {
  process.removeAllListeners('SIGTERM');
  process.kill(process.pid, 'SIGTERM');
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), 1000);
}

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

async function up(argv: string[]): Promise<void> {
  // As flanneld, every flag may also come from FLANNELD_<FLAG> (the command line wins).
  const parsed = parseFlags('up', argv, UP_FLAGS, { envPrefix: 'FLANNELD', unsupported: FLANNELD_UNSUPPORTED });
  const { iface: ifaces, 'iface-regex': ifaceRegexes, ...rest } = parsed;
  const values = rest as Record<string, string | undefined> & {
    help?: boolean;
    'no-leases-watch'?: boolean;
    'ip-masq'?: boolean;
    'iptables-forward-rules'?: boolean;
    trace?: boolean;
    'kube-subnet-mgr'?: boolean;
    'set-node-network-unavailable'?: boolean;
  };
  if (values.help) {
    process.stdout.write(helpText());
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
  for (const f of ['etcd-prefix', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'etcd-username', 'etcd-password', 'subnet-lease-renew-margin'] as const) {
    if (values[f] !== undefined && !etcdEndpoints) die(`--${f} needs --etcd-endpoints`);
  }
  // flanneld reads its flags from FLANNELD_* variables too; the password is the one worth keeping out of `ps`.
  const etcdPassword = values['etcd-password'] ?? (values['etcd-username'] !== undefined ? process.env.FLANNEL_ETCD_PASSWORD : undefined);
  if ((values['etcd-username'] === undefined) !== (etcdPassword === undefined)) {
    die('--etcd-username and --etcd-password go together (the password may come from FLANNEL_ETCD_PASSWORD)');
  }
  const backend = values.backend ?? 'udp';
  if (backend !== 'udp' && backend !== 'vxlan') die(`--backend: "${backend}" is not udp or vxlan`);
  const checksum = values['vxlan-udp-checksum'] ?? 'on';
  if (checksum !== 'zero' && checksum !== 'on') die(`--vxlan-udp-checksum: "${checksum}" is not zero or on`);
  const persistTun = values['persist-tun'] ?? 'on';
  if (persistTun !== 'on' && persistTun !== 'off') die(`--persist-tun: "${persistTun}" is not on or off`);
  const rehearsal = values.rehearsal ?? 'on';
  if (rehearsal !== 'on' && rehearsal !== 'off') die(`--rehearsal: "${rehearsal}" is not on or off`);
  const receiveSpread = values['receive-spread'] ?? 'inner-flow';
  if (receiveSpread !== 'inner-flow' && receiveSpread !== 'kernel-hash') die(`--receive-spread: "${receiveSpread}" is not inner-flow or kernel-hash`);
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
          auth: etcdPassword !== undefined ? { username: values['etcd-username'] as string, password: etcdPassword } : undefined,
          // the lease lives 24 h (1440 min); the margin must leave time before renewing
          renewMarginMs: intFlag('subnet-lease-renew-margin', values['subnet-lease-renew-margin'], 60, 1, 1439) * 60_000,
        }
      : undefined,
    kube, // kube mode (issue 13)
    ipMasq: values['ip-masq'] ?? false,
    forwardRules: values['iptables-forward-rules'] ?? true,
    iptablesResyncMs: intFlag('iptables-resync', values['iptables-resync'], 5, 1, 86400) * 1000,
    watchLeases: !values['no-leases-watch'],
    publicIp: values['public-ip'],
    publicIpv6: values['public-ipv6'],
    iface:
      ifaces !== undefined || ifaceRegexes !== undefined || values['iface-can-reach'] !== undefined
        ? { ifaces: (ifaces as string[] | undefined) ?? [], regexes: (ifaceRegexes as string[] | undefined) ?? [], canReach: values['iface-can-reach'] }
        : undefined,
    port: intFlag('port', values.port, backend === 'vxlan' ? 8472 : 8285, 1, 65535),
    workers: intFlag('workers', values.workers, availableParallelism(), 1, 256),
    tunName: values.tun ?? 'flannel0',
    persistTun: persistTun === 'on',
    batchSize: intFlag('batch', values.batch, 64, 1, 1024),
    socketBufferBytes: intFlag('socket-buffer', values['socket-buffer'], 4 << 20, 65536, 1 << 30),
    offload: offloadFlag(values.offload),
    busyPollUs: intFlag('busy-poll', values['busy-poll'], 0, 0, 1_000_000),
    rehearsal: rehearsal === 'on',
    receiveSpread,
    observe: parseObserveFlags(values as ObserveFlagValues, values.tun ?? 'flannel0'),
  };

  const agent = new Agent(opts, log);
  let stopping = false;
  // SIGTERM is what kubelet and systemd send for a restart too: with --persist-tun the device, its routes and the
  // iptables rules stay for the next agent. SIGINT (Ctrl-C) and a fatal error remove everything.
  const shutdown = (signal: string, code = 0, exit: 'clean' | 'restart' = 'clean') => {
    if (stopping) return;
    stopping = true;
    const keep = exit === 'restart' && opts.persistTun === true;
    log(`${signal}: stopping${keep ? `; ${opts.tunName}, its routes and the iptables rules stay for the next agent (flannel-udp cleanup removes them)` : ''}`);
    // A stop is always bounded: a stop() stuck on anything (a peer, a file, a
    // child process) gets this long, then the process ends without it. A
    // persistent TUN stays as it would after a kill; otherwise the kernel
    // removes the device with its routes when the last descriptor closes.
    setTimeout(() => {
      log(`stopping took more than ${STOP_DEADLINE_MS / 1000} s; exiting without finishing it`);
      forceExit();
    }, STOP_DEADLINE_MS);
    agent.stop(exit).then(
      () => {
        log(keep ? 'stopped; workers and sockets closed' : 'stopped; TUN device, routes and sockets removed');
        process.exit(code);
      },
      (err) => die(`error while stopping: ${err}`, 1),
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM', 0, 'restart'));
  process.on('SIGHUP', () => {
    log('SIGHUP: re-reading leases');
    void agent.reload();
  });
  process.on('SIGUSR1', () => process.stderr.write(JSON.stringify(agent.statsSnapshot()) + '\n'));
  process.on('SIGUSR2', () => agent.injectWorkerFault(0));
  // etcd mode: this node's lease was deleted or expired. flanneld exits then; a supervisor restarts it.
  agent.onFatal = (err) => shutdown(`fatal: ${err.message}`, 1, 'restart');

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
    case 'cleanup':
      return (await import('./control/cleanup.js')).cleanupCommand(rest);
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
      process.stdout.write(helpText());
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
  'ObserveFlagError', 'TraceFilterError', 'KubeFlagError', 'KubeSetupError', 'KubeApiError', 'CommandLineError', 'NetworkConflictError', 'ControlClientError', 'ControlSocketInUseError', 'BoundedFileError',
]);

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err));
  if (USER_ERRORS.has(e.name)) die(e.message, 2);
  die(e.stack ?? e.message, 1);
});
