// Which packets to trace: a small subset of tcpdump's filter language
// (pcap-filter(7)), compiled once into a predicate over an inner IPv4 or
// IPv6 packet.
//
//   expr      := or
//   or        := and  (("or" | "||") and)*
//   and       := not  (("and" | "&&") not)*
//   not       := ("not" | "!") not  |  "(" expr ")"  |  primitive
//   primitive := "ip" | "ip6" | "icmp" | "icmp6" | "tcp" | "udp"
//              | ["src" | "dst"] "host" (A.B.C.D | IPv6)
//              | ["src" | "dst"] "net" (A.B.C.D/N | IPv6/N)
//              | ["tcp" | "udp"] ["src" | "dst"] "port" N
//
// "and" binds tighter than "or", as in C (tcpdump gives them equal precedence
// and groups left to right; write parentheses when in doubt, both agree then).
// Keywords are case-insensitive. The families, as tcpdump has them: "ip" and
// "icmp" are IPv4 only, "ip6" and "icmp6" (next header 58) IPv6 only; "tcp",
// "udp" and "port" match either family; "host" and "net" match the family of
// the address written. Every primitive is false for a packet whose version
// nibble is neither 4 nor 6. A port matches TCP and UDP only, and only in a
// packet that carries the transport header: a later IPv4 fragment (offset ≠ 0)
// never matches a port, as in tcpdump. IPv6 is read as its fixed header: the
// protocol is the next header field, as tcpdump's "ip6 proto", which does not
// follow extension headers either: a packet behind extension headers (rare
// between pods; forwarded as it is) matches ip6, host and net, not icmp6, tcp,
// udp or port. An empty expression matches everything.
//
// The predicate is a tree of closures built here; evaluating it reads bytes
// and compares small integers, so it allocates nothing per packet. It reads at
// most buf[off .. off + max(IHL + 4, 44)): within a pool slot, always. Bytes past the
// end of `buf` read as undefined, which the bit operations treat as 0, so a
// runt never throws (it simply does not match what it cannot hold).
import { parseIPv4, prefixMask } from '../control/ipv4-address.js';
import { parseIPv6 } from '../control/ipv6-address.js';
import { read16 } from '../encap/bytes.js';

/** Tests the IPv4 or IPv6 packet that starts at buf[off]. */
export type TraceFilter = (buf: Uint8Array, off: number) => boolean;

/** A filter that could not be compiled: `offset` is where (0-based) in `expression`. */
export class TraceFilterError extends Error {
  override name = 'TraceFilterError';
  constructor(
    readonly expression: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    // A long expression is shown around the position only: the message stays a few lines.
    const from = expression.length > SHOWN_CHARS ? Math.max(0, offset - SHOWN_CHARS / 2) : 0;
    const to = Math.min(expression.length, from + SHOWN_CHARS);
    const shown = (from > 0 ? '…' : '') + expression.slice(from, to) + (to < expression.length ? '…' : '');
    const caret = offset - from + (from > 0 ? 1 : 0);
    super(`trace filter: ${reason} at position ${offset + 1}\n  ${shown}\n  ${' '.repeat(caret)}^`);
  }
}

const SHOWN_CHARS = 120;
/**
 * The parser recurses per "(" and "not", and the compiled predicate calls
 * one closure per operator: bounded, so no expression can overflow the stack
 * of the agent (or of a worker evaluating it per packet). Real filters use a
 * handful of each.
 */
export const MAX_FILTER_DEPTH = 32;
export const MAX_FILTER_PRIMITIVES = 256;

/** For --help texts: the grammar in a few lines. */
export const TRACE_FILTER_HELP = `a tcpdump-style expression over the inner IPv4 or IPv6 packet:
  icmp | icmp6 | tcp | udp | ip | ip6
  [src|dst] host A.B.C.D|IPv6   [src|dst] net A.B.C.D/N|IPv6/N   [tcp|udp] [src|dst] port N
  combined with and (&&), or (||), not (!) and parentheses, e.g.
  "icmp and host 10.244.2.2"   "tcp port 5201 or (udp and not dst net 10.244.1.0/24)"   "icmp6 and host fd00:10:244:2::2"`;

export const matchAll: TraceFilter = () => true;

type TokenKind = 'word' | 'value' | '(' | ')' | '!' | '&&' | '||' | 'end';
interface Token {
  kind: TokenKind;
  text: string;
  at: number;
}

const KEYWORDS = new Set(['and', 'or', 'not', 'ip', 'ip6', 'icmp', 'icmp6', 'tcp', 'udp', 'src', 'dst', 'host', 'net', 'port']);

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i];
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    if (c === '(' || c === ')') {
      tokens.push({ kind: c, text: c, at: i++ });
      continue;
    }
    if (c === '&' || c === '|') {
      if (expr[i + 1] !== c) throw new TraceFilterError(expr, i, `"${c}" must be doubled ("${c}${c}")`);
      tokens.push({ kind: c === '&' ? '&&' : '||', text: c + c, at: i });
      i += 2;
      continue;
    }
    if (c === '!') {
      tokens.push({ kind: '!', text: c, at: i++ });
      continue;
    }
    // An IPv6 address or network: hex groups with at least one colon ("fd00::1", "::/0"); tried
    // before words, since "fd00" would otherwise start one. A word has no colon after it.
    const v6 = /^[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:\/[0-9]*)?/.exec(expr.slice(i));
    if (v6) {
      tokens.push({ kind: 'value', text: v6[0].toLowerCase(), at: i });
      i += v6[0].length;
      continue;
    }
    const word = /^[A-Za-z][A-Za-z0-9]*/.exec(expr.slice(i));
    if (word) {
      tokens.push({ kind: 'word', text: word[0].toLowerCase(), at: i });
      i += word[0].length;
      continue;
    }
    const value = /^[0-9][0-9./]*/.exec(expr.slice(i));
    if (value) {
      tokens.push({ kind: 'value', text: value[0], at: i });
      i += value[0].length;
      continue;
    }
    throw new TraceFilterError(expr, i, `unexpected character ${JSON.stringify(c)}`);
  }
  tokens.push({ kind: 'end', text: '', at: expr.length });
  return tokens;
}

// --- the predicates: each reads a few bytes, nothing else -------------------

function isIPv4(b: Uint8Array, o: number): boolean {
  return b[o] >>> 4 === 4;
}

function isIPv6(b: Uint8Array, o: number): boolean {
  return b[o] >>> 4 === 6;
}

// Addresses as signed int32 (what `|` produces), compared with int32 constants:
// small integers all the way, no heap numbers (bytes.ts read32 returns a
// uint32, which above 2^31 is one).
function read32s(b: Uint8Array, at: number): number {
  return (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3];
}

function protocolIs(protocol: number): TraceFilter {
  return (b, o) => isIPv4(b, o) && b[o + 9] === protocol;
}

/** The next header of IPv6's fixed header (tcpdump's "ip6 proto N"). */
function nextHeaderIs(protocol: number): TraceFilter {
  return (b, o) => isIPv6(b, o) && b[o + 6] === protocol;
}

/** tcp, udp: either family. */
function transportIs(protocol: number): TraceFilter {
  return (b, o) => (isIPv4(b, o) ? b[o + 9] === protocol : isIPv6(b, o) && b[o + 6] === protocol);
}

function addressIn(which: 'src' | 'dst' | 'either', network: number, mask: number): TraceFilter {
  const net = network | 0;
  const m = mask | 0;
  if (which === 'src') return (b, o) => isIPv4(b, o) && (read32s(b, o + 12) & m) === net;
  if (which === 'dst') return (b, o) => isIPv4(b, o) && (read32s(b, o + 16) & m) === net;
  return (b, o) => isIPv4(b, o) && ((read32s(b, o + 12) & m) === net || (read32s(b, o + 16) & m) === net);
}

// The 128-bit address at b[at] under a prefix, as four int32 words: `net` and
// `mask` hold the prefix's words (masked), so a /64 compares two words of zero mask for free.
function read32sAt(b: Uint8Array, at: number, w: number): number {
  return read32s(b, at + 4 * w);
}

function inPrefix6(b: Uint8Array, at: number, net: Int32Array, mask: Int32Array): boolean {
  return (
    (read32sAt(b, at, 0) & mask[0]) === net[0] &&
    (read32sAt(b, at, 1) & mask[1]) === net[1] &&
    (read32sAt(b, at, 2) & mask[2]) === net[2] &&
    (read32sAt(b, at, 3) & mask[3]) === net[3]
  );
}

function address6In(which: 'src' | 'dst' | 'either', net: Int32Array, mask: Int32Array): TraceFilter {
  if (which === 'src') return (b, o) => isIPv6(b, o) && inPrefix6(b, o + 8, net, mask);
  if (which === 'dst') return (b, o) => isIPv6(b, o) && inPrefix6(b, o + 24, net, mask);
  return (b, o) => isIPv6(b, o) && (inPrefix6(b, o + 8, net, mask) || inPrefix6(b, o + 24, net, mask));
}

/** A prefix's network and mask as four int32 words each; throws when bits are set past the prefix. */
function prefix6Words(addr: Uint8Array, prefixLength: number): { net: Int32Array; mask: Int32Array; hostBits: boolean } {
  const net = new Int32Array(4);
  const mask = new Int32Array(4);
  let hostBits = false;
  for (let w = 0; w < 4; w++) {
    const bits = Math.max(0, Math.min(32, prefixLength - 32 * w));
    const m = bits === 0 ? 0 : (0xffffffff << (32 - bits)) | 0;
    const word = read32s(addr, 4 * w);
    mask[w] = m;
    net[w] = word & m;
    if ((word & ~m) !== 0) hostBits = true;
  }
  return { net, mask, hostBits };
}

// TCP or UDP (or only `protocol` when non-zero), carrying its transport header.
function portIs(which: 'src' | 'dst' | 'either', port: number, protocol: number): TraceFilter {
  return (b, o) => {
    let t: number;
    if (isIPv4(b, o)) {
      const p = b[o + 9];
      if (protocol !== 0 ? p !== protocol : p !== 6 && p !== 17) return false;
      if ((read16(b, o + 6) & 0x1fff) !== 0) return false; // a later fragment: no ports in it
      t = o + ((b[o] & 0x0f) << 2);
    } else if (isIPv6(b, o)) {
      const p = b[o + 6];
      if (protocol !== 0 ? p !== protocol : p !== 6 && p !== 17) return false;
      t = o + 40;
    } else {
      return false;
    }
    if (which !== 'dst' && read16(b, t) === port) return true;
    return which !== 'src' && read16(b, t + 2) === port;
  };
}

class Parser {
  private i = 0;
  private depth = 0;
  private primitives = 0;
  constructor(
    private readonly expr: string,
    private readonly tokens: Token[],
  ) {}

  private get token(): Token {
    return this.tokens[this.i];
  }

  private fail(token: Token, reason: string): never {
    throw new TraceFilterError(this.expr, token.at, reason);
  }

  private found(token: Token): string {
    return token.kind === 'end' ? 'the end of the expression' : `"${token.text}"`;
  }

  private isWord(text: string): boolean {
    return this.token.kind === 'word' && this.token.text === text;
  }

  parse(): TraceFilter {
    const f = this.or();
    if (this.token.kind !== 'end') {
      this.fail(this.token, `expected "and", "or" or the end of the expression, found ${this.found(this.token)}`);
    }
    return f;
  }

  private or(): TraceFilter {
    let left = this.and();
    while (this.token.kind === '||' || this.isWord('or')) {
      this.i++;
      const a = left;
      const b = this.and();
      left = (buf, off) => a(buf, off) || b(buf, off);
    }
    return left;
  }

  private and(): TraceFilter {
    let left = this.not();
    while (this.token.kind === '&&' || this.isWord('and')) {
      this.i++;
      const a = left;
      const b = this.not();
      left = (buf, off) => a(buf, off) && b(buf, off);
    }
    return left;
  }

  private not(): TraceFilter {
    const t = this.token;
    if (t.kind === '!' || this.isWord('not') || t.kind === '(') {
      if (this.depth >= MAX_FILTER_DEPTH) this.fail(t, `nested more than ${MAX_FILTER_DEPTH} levels deep (parentheses and "not"); simplify the expression`);
      this.depth++;
      this.i++;
      try {
        if (t.kind === '(') {
          const inner = this.or();
          if (this.token.kind !== ')') this.fail(this.token, `expected ")" to close the "(" at position ${t.at + 1}, found ${this.found(this.token)}`);
          this.i++;
          return inner;
        }
        const inner = this.not();
        return (buf, off) => !inner(buf, off);
      } finally {
        this.depth--;
      }
    }
    if (++this.primitives > MAX_FILTER_PRIMITIVES) this.fail(t, `more than ${MAX_FILTER_PRIMITIVES} primitives; a trace filter needs a handful`);
    return this.primitive();
  }

  private primitive(): TraceFilter {
    const t = this.token;
    if (t.kind !== 'word' || t.text === 'and' || t.text === 'or') {
      this.fail(t, `expected a primitive (icmp, icmp6, tcp, udp, ip, ip6, host, net, port, src, dst), "not" or "(", found ${this.found(t)}`);
    }
    if (!KEYWORDS.has(t.text)) this.fail(t, `unknown keyword "${t.text}"`);
    switch (t.text) {
      case 'ip':
        this.i++;
        return isIPv4;
      case 'ip6':
        this.i++;
        return isIPv6;
      case 'icmp':
        this.i++;
        return protocolIs(1);
      case 'icmp6':
        this.i++;
        return nextHeaderIs(58);
      case 'tcp':
      case 'udp': {
        this.i++;
        const protocol = t.text === 'tcp' ? 6 : 17;
        // "tcp port 80", "udp dst port 53": the protocol qualifies the port.
        // "tcp host A" is not tcpdump's either: say so where it goes wrong.
        if (['port', 'src', 'dst', 'host', 'net'].some((w) => this.isWord(w))) {
          return this.qualified(protocol);
        }
        return transportIs(protocol);
      }
      case 'src':
      case 'dst':
      case 'host':
      case 'net':
      case 'port':
        return this.qualified(0);
      default:
        return this.fail(t, `"${t.text}" cannot start a primitive here`);
    }
  }

  /** [src|dst] (host A | net A/N | port N); `protocol` non-zero after "tcp"/"udp". */
  private qualified(protocol: number): TraceFilter {
    let which: 'src' | 'dst' | 'either' = 'either';
    if (this.isWord('src') || this.isWord('dst')) {
      which = this.token.text as 'src' | 'dst';
      this.i++;
    }
    const kind = this.token;
    const allowed = protocol !== 0 ? ['port'] : ['host', 'net', 'port'];
    if (kind.kind !== 'word' || !allowed.includes(kind.text)) {
      const after = protocol !== 0 ? `"${protocol === 6 ? 'tcp' : 'udp'}${which === 'either' ? '' : ` ${which}`}"` : `"${which}"`;
      this.fail(kind, `expected ${allowed.map((a) => `"${a}"`).join(', ')} after ${after}, found ${this.found(kind)}`);
    }
    this.i++;
    const value = this.token;
    if (kind.text === 'port') {
      if (value.kind !== 'value' || !/^[0-9]+$/.test(value.text) || Number(value.text) > 65535) {
        this.fail(value, `expected a port number (0-65535) after "port", found ${this.found(value)}`);
      }
      this.i++;
      return portIs(which, Number(value.text), protocol);
    }
    if (kind.text === 'host') {
      if (value.kind !== 'value' || value.text.includes('/')) {
        this.fail(value, `expected an IPv4 address (A.B.C.D) or an IPv6 address after "host", found ${this.found(value)}`);
      }
      if (value.text.includes(':')) {
        let addr6: Uint8Array;
        try {
          addr6 = parseIPv6(value.text);
        } catch {
          this.fail(value, `"${value.text}" is not an IPv6 address`);
        }
        this.i++;
        const { net, mask } = prefix6Words(addr6, 128);
        return address6In(which, net, mask);
      }
      let addr: number;
      try {
        addr = parseIPv4(value.text);
      } catch {
        this.fail(value, `"${value.text}" is not an IPv4 address (A.B.C.D)`);
      }
      this.i++;
      return addressIn(which, addr, 0xffffffff);
    }
    // net
    if (value.kind === 'value' && value.text.includes(':')) {
      const m6 = /^([0-9a-f:.]+)\/([0-9]+)$/.exec(value.text);
      if (!m6 || Number(m6[2]) > 128) this.fail(value, `"${value.text}" is not a network IPv6/N (N from 0 to 128)`);
      let addr6: Uint8Array;
      try {
        addr6 = parseIPv6(m6[1]);
      } catch {
        this.fail(value, `"${value.text}" is not a network IPv6/N (N from 0 to 128)`);
      }
      const { net, mask, hostBits } = prefix6Words(addr6, Number(m6[2]));
      if (hostBits) this.fail(value, `"${value.text}" has bits set outside its /${m6[2]} prefix`);
      this.i++;
      return address6In(which, net, mask);
    }
    const m = value.kind === 'value' ? /^([0-9.]+)\/([0-9]+)$/.exec(value.text) : null;
    if (!m) this.fail(value, `expected a network A.B.C.D/N or IPv6/N after "net", found ${this.found(value)}`);
    let addr: number;
    let mask: number;
    try {
      addr = parseIPv4(m[1]);
      mask = prefixMask(Number(m[2]));
    } catch {
      this.fail(value, `"${value.text}" is not a network A.B.C.D/N (N from 0 to 32)`);
    }
    if (((addr & ~mask) >>> 0) !== 0) this.fail(value, `"${value.text}" has bits set outside its /${m[2]} prefix`);
    this.i++;
    return addressIn(which, addr, mask);
  }
}

/**
 * Compiles a filter expression (see the grammar above). Undefined, empty or
 * blank → a filter that matches every packet. Throws TraceFilterError, whose
 * message names the problem and points at its position.
 */
export function compileTraceFilter(expr: string | undefined): TraceFilter {
  if (expr === undefined || expr.trim() === '') return matchAll;
  return new Parser(expr, tokenize(expr)).parse();
}
