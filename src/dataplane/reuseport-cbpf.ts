// Which worker receives a datagram, chosen by the flow INSIDE it. In UDP mode
// every datagram from one peer has the same outer 4-tuple (peer:8285 →
// us:8285, flannel's wire format), so the kernel's SO_REUSEPORT hash gives
// all of a peer's traffic to one worker, however many pod flows it carries.
// A classic BPF program attached to the port's reuseport group
// (SO_ATTACH_REUSEPORT_CBPF) picks the socket instead: the kernel runs it on
// the datagram with skb->data at the start of the UDP payload, which in UDP
// mode is the bare inner IPv4 packet, and uses its return value as the index
// into the group's sockets (net/core/sock_reuseport.c, run_bpf_filter). An
// index beyond the group, and anything that is not an inner IPv4 packet, falls
// back to the kernel's own hash (docs/design.md, "Receive spread").
//
// Pure: this module builds the program and computes the same choice in
// JavaScript (the reference the tests hold the kernel to); udp-socket.ts
// attaches it.

/** One struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}. */
export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

// linux/bpf_common.h and linux/filter.h.
const BPF_LD = 0x00;
const BPF_LDX = 0x01;
const BPF_ST = 0x02;
const BPF_ALU = 0x04;
const BPF_JMP = 0x05;
const BPF_RET = 0x06;
const BPF_MISC = 0x07;
const BPF_W = 0x00;
const BPF_H = 0x08;
const BPF_B = 0x10;
const BPF_ABS = 0x20;
const BPF_IND = 0x40;
const BPF_MEM = 0x60;
const BPF_MSH = 0xa0;
const BPF_MUL = 0x20;
const BPF_AND = 0x50;
const BPF_RSH = 0x70;
const BPF_MOD = 0x90;
const BPF_XOR = 0xa0;
const BPF_JEQ = 0x10;
const BPF_JSET = 0x40;
const BPF_K = 0x00;
const BPF_X = 0x08;
const BPF_A = 0x10;
const BPF_TAX = 0x00;
const BPF_IMM = 0x00;
const BPF_JA = 0x00;

/** Returned for anything not an inner IPv4 packet: no socket has this index, so the kernel uses its own hash. */
export const KERNEL_HASH = 0xffff_ffff;
const MIX = 0x045d_9f3b;

/**
 * The program for a group of `sockets` sockets, reading the inner IPv4
 * header at `ipOffset` bytes into the UDP payload (0 in UDP mode). The hash
 * is symmetric in the two directions of a flow (addresses and ports are
 * combined with XOR), so a connection maps to the same index on both of its
 * nodes; fragments and protocols without ports hash their addresses only,
 * so every piece of one inner packet goes to one worker.
 */
export function innerFlowProgram(sockets: number, ipOffset = 0): BpfInstruction[] {
  if (!Number.isInteger(sockets) || sockets < 1 || sockets > 0xffff) throw new RangeError(`reuseport group of ${sockets} sockets`);
  const o = ipOffset;
  // [code, k] or [code, k, label if true, label if false]; jumps name their targets, resolved below.
  type Line = string | [number, number] | [number, number, string, string];
  const lines: Line[] = [
    [BPF_LD | BPF_B | BPF_ABS, o], // version and IHL
    [BPF_ALU | BPF_RSH | BPF_K, 4],
    [BPF_JMP | BPF_JEQ | BPF_K, 4, 'ipv4', 'kernel-hash'],
    'ipv4',
    [BPF_LD | BPF_W | BPF_ABS, o + 12], // source address
    [BPF_MISC | BPF_TAX, 0],
    [BPF_LD | BPF_W | BPF_ABS, o + 16], // destination address
    [BPF_ALU | BPF_XOR | BPF_X, 0], // saddr ^ daddr, mixed before the ports join it, so the two cannot cancel out
    [BPF_MISC | BPF_TAX, 0],
    [BPF_ALU | BPF_RSH | BPF_K, 16],
    [BPF_ALU | BPF_XOR | BPF_X, 0],
    [BPF_ALU | BPF_MUL | BPF_K, MIX],
    [BPF_ST, 0], // M[0] = mix(saddr ^ daddr)
    [BPF_LD | BPF_H | BPF_ABS, o + 6], // flags and fragment offset
    [BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 'no-ports', 'whole'], // MF or an offset: a fragment
    'whole',
    [BPF_LD | BPF_B | BPF_ABS, o + 9], // protocol
    [BPF_JMP | BPF_JEQ | BPF_K, 6, 'ports', 'not-tcp'],
    'not-tcp',
    [BPF_JMP | BPF_JEQ | BPF_K, 17, 'ports', 'no-ports'],
    'ports',
    [BPF_LDX | BPF_B | BPF_MSH, o], // X = IHL * 4
    [BPF_LD | BPF_W | BPF_IND, o], // source port << 16 | destination port
    [BPF_MISC | BPF_TAX, 0],
    [BPF_ALU | BPF_RSH | BPF_K, 16],
    [BPF_ALU | BPF_XOR | BPF_X, 0],
    [BPF_ALU | BPF_AND | BPF_K, 0xffff], // sport ^ dport
    [BPF_JMP | BPF_JA, 0, 'mix', 'mix'],
    'no-ports',
    [BPF_LD | BPF_IMM, 0],
    'mix',
    [BPF_LDX | BPF_W | BPF_MEM, 0],
    [BPF_ALU | BPF_XOR | BPF_X, 0], // h = M[0] ^ (sport ^ dport)
    [BPF_MISC | BPF_TAX, 0], // h ^= h >> 16; h *= MIX; h ^= h >> 16
    [BPF_ALU | BPF_RSH | BPF_K, 16],
    [BPF_ALU | BPF_XOR | BPF_X, 0],
    [BPF_ALU | BPF_MUL | BPF_K, MIX],
    [BPF_MISC | BPF_TAX, 0],
    [BPF_ALU | BPF_RSH | BPF_K, 16],
    [BPF_ALU | BPF_XOR | BPF_X, 0],
    [BPF_ALU | BPF_MOD | BPF_K, sockets],
    [BPF_RET | BPF_A, 0],
    'kernel-hash',
    [BPF_RET | BPF_K, KERNEL_HASH],
  ];
  const labels = new Map<string, number>();
  let n = 0;
  for (const line of lines) {
    if (typeof line === 'string') labels.set(line, n);
    else n++;
  }
  const program: BpfInstruction[] = [];
  for (const line of lines) {
    if (typeof line === 'string') continue;
    const [code, k, ifTrue, ifFalse] = line;
    const next = program.length + 1;
    const target = (label: string | undefined): number => (label === undefined ? 0 : labels.get(label)! - next);
    if ((code & 0x07) === BPF_JMP && (code & 0xf0) === BPF_JA) program.push({ code, jt: 0, jf: 0, k: target(ifTrue) });
    else program.push({ code, jt: target(ifTrue), jf: target(ifFalse), k: k >>> 0 });
  }
  return program;
}

/** The index innerFlowProgram returns for this payload (`ipOffset` as there), computed in JavaScript: the tests' reference. */
export function innerFlowIndex(payload: Uint8Array, sockets: number, ipOffset = 0): number {
  const o = ipOffset;
  // A load past the end stops a classic BPF program with 0.
  if (payload.length < o + 1) return 0;
  if (payload[o] >> 4 !== 4) return KERNEL_HASH;
  if (payload.length < o + 20) return 0;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  let h = (view.getUint32(o + 12) ^ view.getUint32(o + 16)) >>> 0;
  h = Math.imul((h ^ (h >>> 16)) >>> 0, MIX) >>> 0;
  const fragment = (view.getUint16(o + 6) & 0x3fff) !== 0;
  const protocol = payload[o + 9];
  if (!fragment && (protocol === 6 || protocol === 17)) {
    const portsAt = o + (payload[o] & 0x0f) * 4;
    if (payload.length < portsAt + 4) return 0;
    h = (h ^ (view.getUint16(portsAt) ^ view.getUint16(portsAt + 2))) >>> 0;
  }
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, MIX) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h % sockets;
}

/**
 * What the stats say and the log line, after the agent set its receive
 * spread: `result` is setReceiveSpread's (0 or -errno). A refusal is never an
 * error: the kernel's own hash still delivers every datagram, to one worker
 * per peer.
 */
export function receiveSpreadOutcome(o: { backend: 'udp' | 'vxlan'; mode: 'inner-flow' | 'kernel-hash'; workers: number; port: number; result: number }): {
  state: string;
  log?: string;
} {
  if (o.backend !== 'udp') return { state: 'kernel-hash (vxlan: peers vary the outer source port per flow)' };
  if (o.result < 0) {
    const why = `${o.mode === 'inner-flow' ? 'program' : 'detach'}: errno ${-o.result}`;
    return {
      state: `kernel-hash (the kernel refused the ${why})`,
      log:
        `UDP port ${o.port}: the kernel refused the receive spread's ${why}; ` +
        (o.mode === 'inner-flow' ? "its own 4-tuple hash gives each peer's traffic to one worker" : "an earlier agent's program may still spread the flows"),
    };
  }
  if (o.mode === 'kernel-hash') return { state: o.workers > 1 ? 'kernel-hash (--receive-spread kernel-hash)' : 'kernel-hash (one worker)' };
  return { state: 'inner-flow', log: `UDP port ${o.port}: each inner flow to one of ${o.workers} workers (classic BPF on the SO_REUSEPORT group)` };
}
