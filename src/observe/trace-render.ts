// Turns a TraceEvent into something to read: the stack of layers its header
// bytes hold, with real field values, drawn like the layer diagrams learners
// know ("current package format": one ruled line per layer, outermost first),
// under a line saying where the packet is and which syscall carried it across
// the user/kernel boundary. Decoding never throws: short or malformed bytes
// give the fields that could be read and a `problem` saying what could not.
import { read16, read32 } from '../encap/bytes.js';
import { internetChecksum } from '../encap/checksum.js';
import { formatMac, ETHERNET_HEADER, VXLAN_HEADER, VXLAN_DEFAULT_PORT } from '../encap/vxlan.js';
import { formatIPv6 } from '../control/ipv6-address.js';
import { TRACE_STAGE_INFO, traceEventToJson, type TraceEvent } from './trace-event.js';

export interface Layer {
  /** 'Ethernet', 'IPv4', 'IPv6', 'UDP', 'VXLAN', 'ICMP', 'ICMPv6', 'TCP', 'payload'; a header quoted inside an ICMP error gets ' (quoted)'. */
  name: string;
  /** OSI layer, as the diagrams label it: 'L2', 'L3', 'L4'; absent for VXLAN and payload. */
  level?: string;
  /** Where the layer starts in headerBytes, and how many of its bytes are there. */
  offset: number;
  length: number;
  /** [name, value] in display order. */
  fields: Array<[string, string]>;
  /** What could not be decoded ("truncated: 12 of 20 header bytes captured", "not IPv4 (version 6)"). */
  problem?: string;
}

const FLANNEL_UDP_PORT = 8285;
const IANA_VXLAN_PORT = 4789;

const IP_PROTOCOL_NAMES: Record<number, string> = { 1: 'ICMP', 2: 'IGMP', 6: 'TCP', 17: 'UDP', 47: 'GRE', 50: 'ESP', 132: 'SCTP' };
const ICMP_TYPE_NAMES: Record<number, string> = {
  0: 'echo-reply',
  3: 'dest-unreachable',
  4: 'source-quench',
  5: 'redirect',
  8: 'echo-request',
  11: 'time-exceeded',
  12: 'parameter-problem',
  13: 'timestamp',
  14: 'timestamp-reply',
};
// ICMPv6 (RFC 4443, RFC 4861 for neighbour discovery).
const ICMPV6_TYPE_NAMES: Record<number, string> = {
  1: 'dest-unreachable',
  2: 'packet-too-big',
  3: 'time-exceeded',
  4: 'parameter-problem',
  128: 'echo-request',
  129: 'echo-reply',
  133: 'router-solicitation',
  134: 'router-advertisement',
  135: 'neighbor-solicitation',
  136: 'neighbor-advertisement',
};
const ICMPV6_UNREACH_CODES: Record<number, string> = {
  0: 'no-route',
  1: 'admin-prohibited',
  3: 'address-unreachable',
  4: 'port-unreachable',
};
const ICMPV6_TIME_EXCEEDED_CODES: Record<number, string> = { 0: 'hop-limit-exceeded', 1: 'reassembly-timeout' };
// Next headers that are IPv6 extension headers: named, not followed (the data path forwards them as they are).
const IPV6_EXTENSION_NAMES: Record<number, string> = { 0: 'hop-by-hop', 43: 'routing', 44: 'fragment', 51: 'AH', 60: 'destination-options', 135: 'mobility' };
const ICMP_UNREACH_CODES: Record<number, string> = { 0: 'net-unreachable', 1: 'host-unreachable', 2: 'protocol-unreachable', 3: 'port-unreachable', 4: 'frag-needed' };
const ETHERTYPE_NAMES: Record<number, string> = { 0x0800: 'IPv4', 0x0806: 'ARP', 0x86dd: 'IPv6', 0x8100: '802.1Q' };

function hex16(v: number): string {
  return `0x${v.toString(16).padStart(4, '0')}`;
}

function ipString(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** Reads within [0, end) of the captured bytes; fields past `end` are not decoded. */
class Decoder {
  readonly layers: Layer[] = [];
  constructor(
    readonly b: Uint8Array,
    readonly end: number,
  ) {}

  u8(at: number): number {
    return this.b[at];
  }
  u16(at: number): number {
    return read16(this.b, at);
  }
  u32(at: number): number {
    return read32(this.b, at);
  }
  /** The bytes [at, at+n) were captured. */
  has(at: number, n: number): boolean {
    return at + n <= this.end;
  }

  push(layer: Layer): Layer {
    this.layers.push(layer);
    return layer;
  }

  truncated(layer: Layer, need: number): boolean {
    if (this.has(layer.offset, need)) return false;
    layer.problem = `truncated: ${Math.max(0, this.end - layer.offset)} of ${need} header bytes captured`;
    layer.length = Math.max(0, this.end - layer.offset);
    return true;
  }

  /**
   * The rest of a packet: `wireLength` bytes on the wire from `at`, of which
   * only those before `end` were captured.
   */
  payload(at: number, wireLength: number, name = 'payload'): void {
    const captured = Math.max(0, Math.min(this.end - at, wireLength));
    if (wireLength <= 0 && captured <= 0) return;
    const fields: Array<[string, string]> = [['bytes', String(Math.max(wireLength, captured))]];
    if (captured < wireLength) fields.push(['captured', String(captured)]);
    if (captured > 0) {
      const shown = Math.min(captured, 16);
      const data = Array.from(this.b.subarray(at, at + shown), (x) => x.toString(16).padStart(2, '0')).join(' ');
      fields.push(['data', captured > shown ? `${data} …` : data]);
    }
    this.push({ name, offset: at, length: captured, fields });
  }

  /** An IP packet of either family, by its version nibble (anything but 6 is read as IPv4, which says what is wrong). */
  ip(at: number, quoted: boolean, outer: boolean): void {
    if (this.has(at, 1) && this.u8(at) >>> 4 === 6) this.ipv6(at, quoted, outer);
    else this.ipv4(at, quoted, outer);
  }

  ipv6(at: number, quoted: boolean, outer: boolean): void {
    const layer = this.push({ name: quoted ? 'IPv6 (quoted)' : 'IPv6', level: 'L3', offset: at, length: 0, fields: [] });
    const f = layer.fields;
    if (this.has(at, 24)) f.push(['src', formatIPv6(this.b, at + 8)]);
    if (this.has(at, 40)) f.push(['dst', formatIPv6(this.b, at + 24)]);
    if (this.has(at, 8)) f.push(['hlim', String(this.u8(at + 7))]);
    const next = this.has(at, 7) ? this.u8(at + 6) : -1;
    if (next >= 0) {
      const name = next === 58 ? 'ICMPv6' : (IPV6_EXTENSION_NAMES[next] ?? IP_PROTOCOL_NAMES[next]);
      f.push(['next', name ?? String(next)]);
    }
    if (this.has(at, 6)) f.push(['plen', String(this.u16(at + 4))]);
    if (this.has(at, 4)) {
      const word = this.u32(at);
      const trafficClass = (word >>> 20) & 0xff;
      const flow = word & 0xfffff;
      if (trafficClass !== 0) f.push(['tc', `0x${trafficClass.toString(16).padStart(2, '0')}`]);
      if (flow !== 0) f.push(['flow', `0x${flow.toString(16).padStart(5, '0')}`]);
    }
    if (this.truncated(layer, 40)) return;
    layer.length = 40;
    const payloadLength = this.u16(at + 4);
    // A quoted header's payload length describes the original packet, of which only a part is quoted.
    const payloadWire = quoted ? this.end - at - 40 : payloadLength;
    const body = at + 40;
    if (IPV6_EXTENSION_NAMES[next] !== undefined) {
      layer.problem = `extension header ${IPV6_EXTENSION_NAMES[next]} (${next}): not decoded further`;
      return this.payload(body, payloadWire, 'undecoded');
    }
    if (next === 58) this.icmp6(body, payloadWire);
    else if (next === 6) this.tcp(body, payloadWire, quoted);
    else if (next === 17) this.udp(body, payloadWire, quoted, outer);
    else if (next === 59 && payloadWire === 0) return;
    else this.payload(body, payloadWire);
  }

  icmp6(at: number, wireLength: number): void {
    const layer = this.push({ name: 'ICMPv6', level: 'L4', offset: at, length: 8, fields: [] });
    const f = layer.fields;
    if (!this.has(at, 1)) {
      layer.problem = 'truncated: 0 of 8 header bytes captured';
      layer.length = 0;
      return;
    }
    const type = this.u8(at);
    f.push(['type', ICMPV6_TYPE_NAMES[type] ? `${ICMPV6_TYPE_NAMES[type]} (${type})` : String(type)]);
    if (this.has(at, 2)) {
      const code = this.u8(at + 1);
      const codes = type === 1 ? ICMPV6_UNREACH_CODES : type === 3 ? ICMPV6_TIME_EXCEEDED_CODES : undefined;
      f.push(['code', codes?.[code] ? `${codes[code]} (${code})` : String(code)]);
    }
    if (this.has(at, 4)) f.push(['csum', hex16(this.u16(at + 2))]);
    if (type === 128 || type === 129) {
      if (this.has(at, 6)) f.push(['id', String(this.u16(at + 4))]);
      if (this.has(at, 8)) f.push(['seq', String(this.u16(at + 6))]);
    } else if (type === 2 && this.has(at, 8)) {
      f.push(['mtu', String(this.u32(at + 4))]);
    } else if (type === 4 && this.has(at, 8)) {
      f.push(['pointer', String(this.u32(at + 4))]);
    }
    if (this.truncated(layer, 8)) return;
    const next = at + 8;
    // Error messages (types below 128) quote the packet that caused them.
    if (type < 128) this.ipv6(next, true, false);
    else this.payload(next, wireLength - 8);
  }

  ipv4(at: number, quoted: boolean, outer: boolean): void {
    const layer = this.push({ name: quoted ? 'IPv4 (quoted)' : 'IPv4', level: 'L3', offset: at, length: 0, fields: [] });
    if (!this.has(at, 1)) {
      layer.problem = 'no bytes captured';
      return;
    }
    const version = this.u8(at) >>> 4;
    const headerLength = (this.u8(at) & 0x0f) << 2;
    if (version !== 4) {
      layer.fields.push(['version', String(version)]);
      layer.problem = `not IPv4 (version ${version})`;
      layer.length = 1;
      this.payload(at + 1, this.end - at - 1, 'undecoded');
      return;
    }
    const f = layer.fields;
    if (this.has(at, 16)) f.push(['src', ipString(this.b, at + 12)]);
    if (this.has(at, 20)) f.push(['dst', ipString(this.b, at + 16)]);
    if (this.has(at, 9)) f.push(['ttl', String(this.u8(at + 8))]);
    if (this.has(at, 10)) {
      const p = this.u8(at + 9);
      f.push(['proto', IP_PROTOCOL_NAMES[p] ?? String(p)]);
    }
    if (this.has(at, 4)) f.push(['len', String(this.u16(at + 2))]);
    if (this.has(at, 6)) f.push(['id', hex16(this.u16(at + 4))]);
    let fragmentOffset = 0;
    if (this.has(at, 8)) {
      const word = this.u16(at + 6);
      fragmentOffset = (word & 0x1fff) * 8;
      const flags = [word & 0x4000 ? 'DF' : '', word & 0x2000 ? 'MF' : ''].filter(Boolean).join(',') || 'none';
      f.push(['flags', flags]);
      if (fragmentOffset !== 0) f.push(['frag', String(fragmentOffset)]);
    }
    if (headerLength !== 20) f.push(['hdr', `${headerLength}${headerLength > 20 ? ' (options)' : ''}`]);
    if (this.has(at, 12)) {
      const stored = this.u16(at + 10);
      let verdict = '';
      if (headerLength >= 20 && this.has(at, headerLength)) verdict = internetChecksum(this.b, at, headerLength) === 0 ? ' ok' : ' bad';
      f.push(['csum', hex16(stored) + verdict]);
    }
    if (headerLength < 20) {
      layer.problem = `bad header length ${headerLength} (IHL < 5)`;
      layer.length = Math.min(this.end - at, 20);
      return;
    }
    if (this.truncated(layer, headerLength)) return;
    layer.length = headerLength;
    const totalLength = this.u16(at + 2);
    if (totalLength < headerLength) {
      layer.problem = `bad total length ${totalLength} (header is ${headerLength})`;
      this.payload(at + headerLength, this.end - at - headerLength, 'undecoded');
      return;
    }
    // A quoted header's total length describes the original packet, of which
    // only 8 payload bytes are quoted: decode what is there.
    const payloadWire = quoted ? this.end - at - headerLength : totalLength - headerLength;
    const next = at + headerLength;
    if (fragmentOffset !== 0) return this.payload(next, payloadWire, 'fragment data');
    const protocol = this.u8(at + 9);
    if (protocol === 1) this.icmp(next, payloadWire);
    else if (protocol === 6) this.tcp(next, payloadWire, quoted);
    else if (protocol === 17) this.udp(next, payloadWire, quoted, outer);
    else this.payload(next, payloadWire);
  }

  udp(at: number, wireLength: number, quoted: boolean, outer: boolean): void {
    const layer = this.push({ name: quoted ? 'UDP (quoted)' : 'UDP', level: 'L4', offset: at, length: 8, fields: [] });
    const f = layer.fields;
    if (this.has(at, 2)) f.push(['sport', String(this.u16(at))]);
    if (this.has(at, 4)) f.push(['dport', String(this.u16(at + 2))]);
    if (this.has(at, 6)) f.push(['len', String(this.u16(at + 4))]);
    if (this.has(at, 8)) {
      const checksum = this.u16(at + 6);
      f.push(['csum', checksum === 0 ? '0x0000 (none)' : hex16(checksum)]);
    }
    if (this.truncated(layer, 8)) return;
    if (quoted) return;
    const udpLength = this.u16(at + 4);
    if (udpLength < 8) {
      layer.problem = `bad length ${udpLength} (< 8)`;
      return;
    }
    const payloadWire = Math.min(udpLength, wireLength) - 8;
    const next = at + 8;
    if (!outer) return this.payload(next, payloadWire);
    // The payload of an outer datagram: which encapsulation, by port, else by its first byte.
    const sport = this.u16(at);
    const dport = this.u16(at + 2);
    const vxlanPort = (p: number) => p === VXLAN_DEFAULT_PORT || p === IANA_VXLAN_PORT;
    if (vxlanPort(dport) || vxlanPort(sport)) return this.vxlan(next, payloadWire);
    const version = this.has(next, 1) ? this.u8(next) >>> 4 : 0;
    if (dport === FLANNEL_UDP_PORT || sport === FLANNEL_UDP_PORT || version === 4 || version === 6) {
      return this.ip(next, false, false);
    }
    this.payload(next, payloadWire);
  }

  vxlan(at: number, wireLength: number): void {
    const layer = this.push({ name: 'VXLAN', offset: at, length: VXLAN_HEADER, fields: [] });
    if (this.has(at, 1)) {
      const flags = this.u8(at);
      layer.fields.push(['flags', `0x${flags.toString(16).padStart(2, '0')}${flags & 0x08 ? ' (I: VNI present)' : ''}`]);
    }
    if (this.has(at, 7)) layer.fields.push(['vni', String((this.u8(at + 4) << 16) | (this.u8(at + 5) << 8) | this.u8(at + 6))]);
    if (this.truncated(layer, VXLAN_HEADER)) return;
    this.ethernet(at + VXLAN_HEADER, wireLength - VXLAN_HEADER);
  }

  ethernet(at: number, wireLength: number): void {
    const layer = this.push({ name: 'Ethernet', level: 'L2', offset: at, length: ETHERNET_HEADER, fields: [] });
    if (this.has(at, 6)) layer.fields.push(['dst', formatMac(this.b, at)]);
    if (this.has(at, 12)) layer.fields.push(['src', formatMac(this.b, at + 6)]);
    if (this.has(at, 14)) {
      const type = this.u16(at + 12);
      layer.fields.push(['type', `0x${type.toString(16).padStart(4, '0')}${ETHERTYPE_NAMES[type] ? ` (${ETHERTYPE_NAMES[type]})` : ''}`]);
    }
    if (this.truncated(layer, ETHERNET_HEADER)) return;
    const next = at + ETHERNET_HEADER;
    const type = this.u16(at + 12);
    if (type === 0x0800) this.ipv4(next, false, false);
    else if (type === 0x86dd) this.ipv6(next, false, false);
    else this.payload(next, wireLength - ETHERNET_HEADER);
  }

  icmp(at: number, wireLength: number): void {
    const layer = this.push({ name: 'ICMP', level: 'L4', offset: at, length: 8, fields: [] });
    const f = layer.fields;
    if (!this.has(at, 1)) {
      layer.problem = 'truncated: 0 of 8 header bytes captured';
      layer.length = 0;
      return;
    }
    const type = this.u8(at);
    f.push(['type', ICMP_TYPE_NAMES[type] ? `${ICMP_TYPE_NAMES[type]} (${type})` : String(type)]);
    if (this.has(at, 2)) {
      const code = this.u8(at + 1);
      f.push(['code', type === 3 && ICMP_UNREACH_CODES[code] ? `${ICMP_UNREACH_CODES[code]} (${code})` : String(code)]);
    }
    if (this.has(at, 4)) f.push(['csum', hex16(this.u16(at + 2))]);
    const echo = type === 0 || type === 8 || type === 13 || type === 14;
    if (echo) {
      if (this.has(at, 6)) f.push(['id', String(this.u16(at + 4))]);
      if (this.has(at, 8)) f.push(['seq', String(this.u16(at + 6))]);
    } else if (type === 3 && this.has(at, 8) && this.u8(at + 1) === 4) {
      f.push(['mtu', String(this.u16(at + 6))]);
    }
    if (this.truncated(layer, 8)) return;
    const next = at + 8;
    if (type === 3 || type === 4 || type === 5 || type === 11 || type === 12) this.ipv4(next, true, false);
    else this.payload(next, wireLength - 8);
  }

  tcp(at: number, wireLength: number, quoted: boolean): void {
    const layer = this.push({ name: quoted ? 'TCP (quoted)' : 'TCP', level: 'L4', offset: at, length: 20, fields: [] });
    const f = layer.fields;
    if (this.has(at, 2)) f.push(['sport', String(this.u16(at))]);
    if (this.has(at, 4)) f.push(['dport', String(this.u16(at + 2))]);
    if (this.has(at, 8)) f.push(['seq', String(this.u32(at + 4))]);
    if (this.has(at, 12)) f.push(['ack', String(this.u32(at + 8))]);
    let headerLength = 20;
    if (this.has(at, 14)) {
      headerLength = (this.u8(at + 12) >>> 4) << 2;
      const bits = this.u8(at + 13);
      const names = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR'].filter((_, i) => bits & (1 << i));
      f.push(['flags', names.join(',') || 'none']);
    }
    if (this.has(at, 16)) f.push(['win', String(this.u16(at + 14))]);
    if (this.has(at, 18)) f.push(['csum', hex16(this.u16(at + 16))]);
    if (headerLength !== 20 && this.has(at, 13)) f.push(['hdr', String(headerLength)]);
    if (quoted) {
      // An ICMP error quotes 8 bytes: ports and sequence number, the rest is not there by design.
      layer.length = Math.max(0, Math.min(this.end - at, 20));
      return;
    }
    if (headerLength < 20 && this.has(at, 13)) {
      layer.problem = `bad data offset ${headerLength} (< 20)`;
      return;
    }
    if (this.truncated(layer, headerLength)) return;
    layer.length = headerLength;
    this.payload(at + headerLength, wireLength - headerLength);
  }
}

/**
 * Decodes an event's headerBytes into its layers, outermost first, with the
 * values of every header field. Never throws.
 */
export function describeLayers(ev: Pick<TraceEvent, 'layers' | 'headerBytes'>): Layer[] {
  const b = ev.headerBytes instanceof Uint8Array ? ev.headerBytes : new Uint8Array(0);
  const d = new Decoder(b, b.length);
  try {
    switch (ev.layers) {
      case 'ip':
      case 'udp-payload':
        d.ip(0, false, false);
        break;
      case 'vxlan-payload':
        d.vxlan(0, b.length);
        break;
      case 'outer-ip':
        d.ip(0, false, true);
        break;
      default:
        d.push({ name: 'unknown', offset: 0, length: 0, fields: [], problem: `unknown layers ${JSON.stringify(ev.layers)}` });
        d.payload(0, b.length, 'undecoded');
    }
  } catch (err) {
    // Not expected; but a trace must never take the agent or the CLI down.
    d.push({ name: 'error', offset: 0, length: 0, fields: [], problem: `decoder failed: ${(err as Error).message}` });
  }
  return d.layers;
}

export interface RenderOptions {
  color: boolean;
  /** timeNs of the same packet's previous event: the header then shows the time since it. */
  previousTimeNs?: number;
}

const ANSI = {
  reset: '\x1b[0m',
  bold: '\x1b[1m',
  dim: '\x1b[2m',
  red: '\x1b[31m',
  green: '\x1b[32m',
  yellow: '\x1b[33m',
  cyan: '\x1b[36m',
};

const LAYERS_CAPTION: Record<TraceEvent['layers'], string> = {
  ip: 'the IP packet, as it crosses the TUN',
  'udp-payload': 'the UDP payload (flannel udp: the inner IP packet itself)',
  'vxlan-payload': 'the UDP payload: VXLAN + Ethernet + the inner IP packet',
  'outer-ip': 'on the wire: the outer IPv4 + UDP headers the kernel writes around the payload (rebuilt for display: the kernel picks their id and checksum)',
};

function formatDuration(ns: number): string {
  if (ns < 0) return `${(ns / 1000).toFixed(1)} µs`;
  if (ns < 1_000_000) return `+${(ns / 1000).toFixed(1)} µs`;
  return `+${(ns / 1_000_000).toFixed(3)} ms`;
}

/**
 * The event as text: a header line (who, where, which crossing and syscall,
 * how many bytes, which stage), what the stage decided, then the layer stack.
 * ANSI colour only when `color`.
 */
export function renderTraceEvent(ev: TraceEvent, opts: RenderOptions): string {
  const paint = (code: string, text: string) => (opts.color ? `${code}${text}${ANSI.reset}` : text);
  const info = TRACE_STAGE_INFO[ev.stage] ?? { label: String(ev.stage), meaning: '' };
  const parts: string[] = [`${ev.node} w${ev.worker} #${ev.packet}`];
  if (ev.crossing) {
    const [from, to] = ev.crossing.split('→');
    parts.push(paint(ANSI.bold + ANSI.yellow, `${from} → ${to}`));
  } else {
    parts.push(paint(ANSI.dim, 'in user space'));
  }
  if (ev.syscall) {
    const fd = ev.syscall === 'sendmmsg' || ev.syscall === 'recvmmsg' ? 'udp fd' : 'tun fd';
    parts.push(paint(ANSI.bold, `${ev.syscall}(${fd})`));
  }
  if (ev.bytes !== undefined) parts.push(`${ev.bytes} bytes`);
  if (opts.previousTimeNs !== undefined) parts.push(paint(ANSI.dim, formatDuration(ev.timeNs - opts.previousTimeNs)));
  parts.push(paint(ev.stage === 'drop' ? ANSI.bold + ANSI.red : ANSI.bold + ANSI.cyan, `[${info.label}]`));
  const lines = [parts.join('  ')];

  const indent = '    ';
  if (ev.lease !== undefined) {
    lines.push(indent + (ev.lease ? `lease ${ev.lease.key} → public IP ${ev.lease.publicIp}` : paint(ANSI.red, 'no lease covers the destination')));
  }
  if (ev.drop !== undefined) lines.push(indent + paint(ANSI.bold + ANSI.red, `dropped: ${ev.drop}`));
  if (ev.note !== undefined) lines.push(indent + ev.note);
  lines.push(indent + paint(ANSI.dim, `# ${LAYERS_CAPTION[ev.layers] ?? String(ev.layers)}`));

  const layers = describeLayers(ev);
  const label = (l: Layer) => (l.level ? `${l.name} (${l.level})` : l.name);
  const labelWidth = Math.max(0, ...layers.map((l) => label(l).length)) + 2;
  const rows = layers.map((l) => {
    const fields = l.fields.map(([k, v]) => `${k} ${v}`).join('  ');
    const problem = l.problem ? `  [${l.problem}]` : '';
    return { plain: label(l).padEnd(labelWidth) + fields + problem, layer: l, fields, problem };
  });
  const ruleWidth = Math.max(40, ...rows.map((r) => r.plain.length));
  const rule = indent + paint(ANSI.dim, '-'.repeat(ruleWidth));
  lines.push(rule);
  for (const r of rows) {
    const name = paint(ANSI.bold + ANSI.green, label(r.layer).padEnd(labelWidth));
    lines.push(indent + name + r.fields + (r.problem ? paint(ANSI.red, r.problem) : ''));
    lines.push(rule);
  }
  return lines.join('\n');
}

/** One JSON line (no newline) for machines: the event with headerBytes as hex. */
export function renderTraceJson(ev: TraceEvent): string {
  return traceEventToJson(ev);
}
