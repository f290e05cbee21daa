// Runs inside a namespace (a node's, or an attacker's attached to the
// underlay): sends crafted UDP datagrams at an agent's port through a raw
// socket (raw-socket, IPPROTO_RAW, so the outer IPv4 header is ours: any
// source address, any source port, our own fragments). Each datagram's
// payload is one of the malformed kinds of malformed.ts, or a valid inner
// packet carrying a marker (for the "who may send" tests).
//
// Usage: node udp-inject.js '<plan JSON>' (see InjectPlan). Prints one JSON
// line, InjectResult: what the kernel accepted per kind, so the test knows
// exactly how many datagrams left.
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildOuterIPv4Udp } from '../../src/encap/udp-frame.js';
import { parseIPv4 } from '../../src/control/ipv4-address.js';
import { Rng, write16, fixIpChecksum } from './fuzz-kit.js';
import { writeMalformed, writeValidInner, type MalformedKind } from './malformed.js';

export interface InjectPlan {
  /** Outer source address (spoofed or not: the raw socket sends whatever we write). */
  src: string;
  dst: string;
  dstPort: number;
  /** Outer source ports cycle through [srcPortFirst, srcPortFirst + srcPorts), so SO_REUSEPORT spreads them over the workers. */
  srcPortFirst: number;
  srcPorts: number;
  seed: number;
  /** Datagrams per malformed kind. */
  counts: Partial<Record<MalformedKind, number>>;
  inner: { src: string; dst: string; elsewhere: string[]; unleased?: string };
  /** Valid inner packets (UDP to port 9) whose payload is `marker`: they must never reach a pod when the sender may not send. */
  valid?: { count: number; innerSrc: string; innerDst: string; marker: string };
  /** Datagrams per second (0: as fast as the socket takes them). */
  rate: number;
  /** Underlay MTU: larger datagrams are sent as IP fragments we build ourselves. */
  mtu: number;
}

export interface InjectResult {
  /** Datagrams handed to the kernel without error, per kind (a fragmented one counts once, when all its fragments went). */
  sent: Record<string, number>;
  datagrams: number;
  fragments: number;
  /** Sends retried after EAGAIN/ENOBUFS. */
  retries: number;
  errors: string[];
  seconds: number;
}

interface RawWrap {
  send(buf: Buffer, offset: number, length: number, address: string, cb: (bytes: number) => void): void;
}
interface RawSocket {
  wrap: RawWrap;
  pauseRecv(): void;
  close(): void;
}

const require = createRequire(import.meta.url);
const raw = require('raw-socket') as { createSocket(opts: { protocol: number }): RawSocket };
const IPPROTO_RAW = 255; // send-only, IP_HDRINCL implied

const plan = JSON.parse(process.argv[2] ?? '{}') as InjectPlan;
const socket = raw.createSocket({ protocol: IPPROTO_RAW });
socket.pauseRecv();
const rng = new Rng(plan.seed);
const buf = Buffer.alloc(70_000);
const frag = Buffer.alloc(2048);
const result: InjectResult = { sent: {}, datagrams: 0, fragments: 0, retries: 0, errors: [], seconds: 0 };
const src = parseIPv4(plan.src);
const dst = parseIPv4(plan.dst);
const addresses = {
  src: parseIPv4(plan.inner.src),
  dst: parseIPv4(plan.inner.dst),
  elsewhere: plan.inner.elsewhere.map(parseIPv4),
  unleased: parseIPv4(plan.inner.unleased ?? '10.244.250.9'),
};
const marker = plan.valid ? Buffer.from(plan.valid.marker) : undefined;

/** One sendto through raw-socket's synchronous send; EAGAIN/ENOBUFS wait and retry, other errors are recorded. */
async function sendOnce(b: Buffer, length: number): Promise<boolean> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    try {
      let sent = -1;
      socket.wrap.send(b, 0, length, plan.dst, (bytes) => (sent = bytes));
      if (sent === length) return true;
      result.errors.push(`short send: ${sent} of ${length}`);
      return false;
    } catch (err) {
      const message = (err as Error).message;
      if (/temporarily unavailable|no buffer space/i.test(message)) {
        result.retries++;
        await sleep(1);
        continue;
      }
      if (result.errors.length < 20) result.errors.push(message);
      return false;
    }
  }
  result.errors.push('gave up after 1000 retries');
  return false;
}

/** Sends the datagram at buf[0, 28 + payload) whole, or as fragments of at most mtu bytes. */
async function sendDatagram(payloadLength: number, id: number): Promise<boolean> {
  const total = 28 + payloadLength;
  if (total <= plan.mtu) return sendOnce(buf, total);
  // Our own fragmentation (IP_HDRINCL sends are never fragmented by the kernel):
  // the UDP header rides in the first fragment, every fragment but the last
  // carries a multiple of 8 bytes, MF on all but the last.
  const chunk = (plan.mtu - 20) & ~7;
  for (let at = 20; at < total; at += chunk) {
    const n = Math.min(chunk, total - at);
    buf.copy(frag, 0, 0, 20);
    buf.copy(frag, 20, at, at + n);
    write16(frag, 2, 20 + n);
    write16(frag, 4, id);
    const last = at + n >= total;
    write16(frag, 6, (last ? 0 : 0x2000) | ((at - 20) >>> 3));
    fixIpChecksum(frag, 0, 20 + n);
    if (!(await sendOnce(frag, 20 + n))) return false;
    result.fragments++;
  }
  return true;
}

async function main(): Promise<void> {
  // The order of kinds is shuffled so every kind is spread over the whole flood.
  const queue: string[] = [];
  for (const [kind, count] of Object.entries(plan.counts)) for (let i = 0; i < (count ?? 0); i++) queue.push(kind);
  if (plan.valid) for (let i = 0; i < plan.valid.count; i++) queue.push('valid');
  for (let i = queue.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [queue[i], queue[j]] = [queue[j], queue[i]];
  }
  const started = performance.now();
  let id = rng.int(0x10000);
  for (let i = 0; i < queue.length; i++) {
    const kind = queue[i];
    const payloadLength =
      kind === 'valid'
        ? writeValidInner(rng, buf, 28, parseIPv4(plan.valid!.innerSrc), parseIPv4(plan.valid!.innerDst), marker)
        : writeMalformed(rng, buf, 28, kind as MalformedKind, addresses);
    id = (id + 1) & 0xffff || 1;
    const srcPort = plan.srcPortFirst + (i % plan.srcPorts);
    buildOuterIPv4Udp(buf, 0, src, dst, srcPort, plan.dstPort, payloadLength, id, payloadLength < 4096);
    if (await sendDatagram(payloadLength, id)) {
      result.sent[kind] = (result.sent[kind] ?? 0) + 1;
      result.datagrams++;
    }
    if (plan.rate > 0 && i % 16 === 15) {
      const ahead = (i + 1) / plan.rate - (performance.now() - started) / 1000;
      if (ahead > 0.001) await sleep(ahead * 1000);
    }
  }
  result.seconds = (performance.now() - started) / 1000;
  socket.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  process.stderr.write(`udp-inject: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
