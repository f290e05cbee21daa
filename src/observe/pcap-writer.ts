// Packet captures a worker writes itself, in the classic libpcap format
// (version 2.4, microsecond timestamps, native byte order, snaplen 262144),
// which tcpdump, Wireshark and pcap-parser all read:
//
//   global header (24 bytes) | record header (16) | packet | record header | packet | …
//
// The worker runs a synchronous loop, so the writer is synchronous too and
// never allocates per packet (given the packet's timestamp, see write()):
// records are copied into one preallocated buffer, four bytes at a time
// (bench/capture.bench.ts measures it), and flush() hands that buffer to the kernel with one
// writeSync. The
// worker calls flush() at most every ~100 ms and on close; a record that no
// longer fits flushes first. Files rotate by size: tun-in-w0.pcap becomes
// tun-in-w0.1.pcap, .1 becomes .2, …, and the oldest beyond maxFiles goes.
import { closeSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { buildOuterIPv4Udp, OUTER_IPV4_UDP_HEADERS, UDP_HEADER, writeUdpHeader } from '../encap/udp-frame.js';
import { IPV6_DEFAULT_HOP_LIMIT, IPV6_HEADER } from '../encap/ipv6.js';
import { IP_PROTOCOL_UDP } from '../encap/ipv4.js';
import { onesComplementSumNaive } from '../encap/checksum.js';

/** Raw IP: each record starts with the IPv4 header (what crosses the TUN). */
export const LINKTYPE_RAW = 101;
/** Ethernet II: each record starts with a 14-byte Ethernet header. */
export const LINKTYPE_ETHERNET = 1;
export const PCAP_SNAPLEN = 262144;
export const PCAP_GLOBAL_HEADER = 24;
export const PCAP_RECORD_HEADER = 16;
const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4;
/** Default buffer: 1 MiB, a few milliseconds of traffic at line rate between two flushes. */
export const PCAP_DEFAULT_BUFFER = 1 << 20;
/** The buffer must hold the largest record: the 16-byte header plus a 64 KiB packet with its 42- or 62-byte synthetic prefix. */
const PCAP_MIN_BUFFER = 128 * 1024;

export interface PcapWriterOptions {
  /** Start a new file when the current one would grow past this many bytes; 0 = never. */
  rotateBytes: number;
  /** Files kept, the current one included (≥ 1). */
  maxFiles: number;
  /** Size of the in-memory buffer; default PCAP_DEFAULT_BUFFER, at least 128 KiB. */
  bufferBytes?: number;
}

/** Wall-clock time in ns since the Unix epoch (µs precision is all pcap keeps). Allocates one heap number, like every JS clock. */
export function wallClockNs(): number {
  return (performance.timeOrigin + performance.now()) * 1e6;
}

/** "dir/tun-in-w0.pcap" → "dir/tun-in-w0.3.pcap" for index 3; index 0 is the file itself. */
export function rotatedPath(path: string, index: number): string {
  if (index === 0) return path;
  return path.endsWith('.pcap') ? `${path.slice(0, -5)}.${index}.pcap` : `${path}.${index}`;
}

export class PcapWriter {
  private fd: number;
  private readonly buffer: Uint8Array;
  private readonly view: DataView;
  // DataViews on the source buffers, made once per ArrayBuffer (a worker
  // passes its pool's and a prefix scratch), the last one at hand.
  private readonly sourceViews = new WeakMap<ArrayBufferLike, DataView>();
  private sourceBuffer: ArrayBufferLike | undefined;
  private sourceView: DataView | undefined;
  private used = 0;
  /** Bytes of the current file: written plus still buffered. */
  private fileBytes = 0;
  private closed = false;
  // An open record (begin/append/end).
  private recordStart = -1;
  private recordCaptured = 0;
  private recordRoom = 0;
  /** Packets written over the writer's life, all files. */
  packets = 0;
  /** Files started, the first one included. */
  files = 1;

  constructor(
    readonly path: string,
    readonly linkType: number,
    readonly opts: PcapWriterOptions,
  ) {
    if (!Number.isInteger(opts.maxFiles) || opts.maxFiles < 1) throw new Error(`pcap: maxFiles ${opts.maxFiles} must be a whole number ≥ 1`);
    if (!(opts.rotateBytes >= 0)) throw new Error(`pcap: rotateBytes ${opts.rotateBytes} must be ≥ 0`);
    const size = Math.max(PCAP_MIN_BUFFER, opts.bufferBytes ?? PCAP_DEFAULT_BUFFER);
    this.buffer = new Uint8Array(size);
    this.view = new DataView(this.buffer.buffer);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.fd = this.openFile();
  }

  private openFile(): number {
    // Captures hold pod traffic: readable by the owner only.
    const fd = openSync(this.path, 'w', 0o600);
    const h = new Uint8Array(PCAP_GLOBAL_HEADER);
    const v = new DataView(h.buffer);
    v.setUint32(0, PCAP_MAGIC_MICROSECONDS, true);
    v.setUint16(4, 2, true);
    v.setUint16(6, 4, true);
    v.setInt32(8, 0, true); // thiszone: timestamps are UTC
    v.setUint32(12, 0, true); // sigfigs
    v.setUint32(16, PCAP_SNAPLEN, true);
    v.setUint32(20, this.linkType, true);
    writeSync(fd, h);
    this.fileBytes = PCAP_GLOBAL_HEADER;
    return fd;
  }

  /**
   * Writes one packet, buf[off .. off+len). timeNs: wall clock, ns since the
   * epoch. Default now; but reading a JS clock allocates a heap number, so a
   * worker passes one reading for a whole batch (wallClockNs()).
   */
  write(buf: Uint8Array, off: number, len: number, timeNs?: number): void {
    this.begin(len, timeNs);
    this.append(buf, off, len);
    this.end();
  }

  /**
   * Starts a packet of `totalLen` bytes made of several pieces: append() each
   * piece in order, then end(). Nothing is allocated; the pieces are copied.
   */
  begin(totalLen: number, timeNs?: number): void {
    if (this.closed) throw new Error(`pcap ${this.path}: closed`);
    if (this.recordStart >= 0) throw new Error(`pcap ${this.path}: begin() before end() of the previous packet`);
    const room = Math.min(totalLen, PCAP_SNAPLEN, this.buffer.length - PCAP_RECORD_HEADER);
    const need = PCAP_RECORD_HEADER + room;
    const rotate = this.opts.rotateBytes;
    if (rotate > 0 && this.fileBytes + need > rotate && this.fileBytes > PCAP_GLOBAL_HEADER) this.rotate();
    else if (this.used + need > this.buffer.length) this.flush();
    const t = timeNs ?? wallClockNs();
    const seconds = Math.floor(t / 1e9);
    const micros = Math.min(999_999, Math.floor((t - seconds * 1e9) / 1e3));
    const v = this.view;
    const at = this.used;
    v.setUint32(at, seconds >>> 0, true);
    v.setUint32(at + 4, micros, true);
    // incl_len (at + 8) is written by end(): the bytes actually appended.
    v.setUint32(at + 12, totalLen >>> 0, true);
    this.recordStart = at;
    this.recordCaptured = 0;
    this.recordRoom = room;
    this.used = at + PCAP_RECORD_HEADER;
  }

  /** Appends buf[off .. off+len) to the open packet; bytes beyond the length given to begin() are cut off. */
  append(buf: Uint8Array, off: number, len: number): void {
    if (this.recordStart < 0) throw new Error(`pcap ${this.path}: append() without begin()`);
    const n = Math.min(len, this.recordRoom - this.recordCaptured);
    if (n <= 0) return;
    this.copy(buf, off, n);
    this.used += n;
    this.recordCaptured += n;
  }

  // buffer.set(buf.subarray(…)) would allocate a view per piece; four bytes
  // at a time through DataViews allocates nothing (int32s, so no heap numbers,
  // and no float NaN canonicalisation to alter bytes).
  private copy(buf: Uint8Array, off: number, n: number): void {
    if (buf.buffer !== this.sourceBuffer) {
      let view = this.sourceViews.get(buf.buffer);
      if (view === undefined) this.sourceViews.set(buf.buffer, (view = new DataView(buf.buffer)));
      this.sourceBuffer = buf.buffer;
      this.sourceView = view;
    }
    const src = this.sourceView!;
    const dst = this.view;
    let s = buf.byteOffset + off;
    let d = this.used;
    const end = s + n;
    for (; s + 4 <= end; s += 4, d += 4) dst.setInt32(d, src.getInt32(s, true), true);
    for (; s < end; s++, d++) dst.setUint8(d, src.getUint8(s));
  }

  /** Closes the open packet. Fewer bytes than announced make a truncated record (incl_len < orig_len), as a short snaplen does. */
  end(): void {
    if (this.recordStart < 0) throw new Error(`pcap ${this.path}: end() without begin()`);
    this.view.setUint32(this.recordStart + 8, this.recordCaptured, true);
    this.fileBytes += PCAP_RECORD_HEADER + this.recordCaptured;
    this.recordStart = -1;
    this.packets++;
  }

  /** Writes the buffered packets to the file (one writeSync). */
  flush(): void {
    if (this.closed || this.used === 0) return;
    if (this.recordStart >= 0) throw new Error(`pcap ${this.path}: flush() inside a packet (between begin() and end())`);
    let done = 0;
    while (done < this.used) done += writeSync(this.fd, this.buffer, done, this.used - done);
    this.used = 0;
  }

  private rotate(): void {
    this.flush();
    closeSync(this.fd);
    const keep = this.opts.maxFiles;
    rmSync(rotatedPath(this.path, keep - 1), { force: true });
    for (let i = keep - 2; i >= 0; i--) {
      try {
        renameSync(rotatedPath(this.path, i), rotatedPath(this.path, i + 1));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    this.fd = this.openFile();
    this.files++;
  }

  close(): void {
    if (this.closed) return;
    if (this.recordStart >= 0) this.end();
    this.flush();
    closeSync(this.fd);
    this.closed = true;
  }
}

/** Length of the synthetic Ethernet + IPv4 + UDP prefix of a UDP-side capture record. */
export const SYNTHETIC_UDP_PREFIX = 14 + OUTER_IPV4_UDP_HEADERS; // 42

/**
 * Writes at out[off .. off+42) the headers a UDP-side capture record starts
 * with: Ethernet (dstMac ← srcMac, IPv4), then the outer IPv4 and UDP headers
 * (udp-frame.ts buildOuterIPv4Udp: DF set, UDP checksum 0 = none,
 * since the payload is appended apart) for a `payloadLen`-byte payload. The
 * kernel writes the real ones; this is what they hold but the IP id and the
 * checksum, which the kernel chooses. A missing MAC is derived from the IP
 * (02:00:a.b.c.d, locally administered), so each node keeps one address.
 * Addresses as uint32 or int32 numbers (pass `ip | 0` from hot code: a uint32
 * above 2^31 is a heap number). Returns SYNTHETIC_UDP_PREFIX. No allocation.
 */
export function writeSyntheticUdpPrefix(
  out: Uint8Array,
  off: number,
  srcMac: Uint8Array | undefined,
  dstMac: Uint8Array | undefined,
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  payloadLen: number,
  ipId: number,
): number {
  writeMac(out, off, dstMac, dstIp);
  writeMac(out, off + 6, srcMac, srcIp);
  out[off + 12] = 0x08;
  out[off + 13] = 0x00;
  // As int32: an address above 2^31 as a uint32 would be boxed in a heap number at every call.
  buildOuterIPv4Udp(out, off + 14, srcIp | 0, dstIp | 0, srcPort, dstPort, payloadLen, ipId, false);
  return SYNTHETIC_UDP_PREFIX;
}

/** Length of the synthetic Ethernet + IPv6 + UDP prefix of a datagram over the IPv6 underlay. */
export const SYNTHETIC_UDP6_PREFIX = 14 + IPV6_HEADER + UDP_HEADER; // 62

/**
 * The IPv6 underlay's twin of writeSyntheticUdpPrefix: Ethernet (ethertype
 * 0x86dd), the outer IPv6 header (traffic class and flow label 0, next header
 * UDP, hop limit 64: the kernel's default, which our sockets keep; on receive
 * the real one is not read, so 64 is written there too) and the UDP header,
 * at out[off .. off+62). Addresses as four big-endian int32 words at
 * src[srcAt..srcAt+4) and dst[dstAt..dstAt+4): the forms the lease table
 * (publicIpv6Words) and the receive batch (sourceIp6) hold them in.
 *
 * The UDP checksum is computed, not left 0: it is mandatory over IPv6 (RFC
 * 8200 §8.1, a zero one is invalid and tcpdump -vv / Wireshark flag it), and
 * our IPv6 sockets always send one, so the computed value is the one on the
 * wire. `payloadSum` is the folded one's complement sum of the payload
 * (udpPayloadSum), which the caller has since the payload comes in pieces.
 * MACs are derived from the addresses' last four bytes (02:00:…). Returns
 * SYNTHETIC_UDP6_PREFIX. No allocation.
 */
export function writeSyntheticUdp6Prefix(
  out: Uint8Array,
  off: number,
  src: Int32Array,
  srcAt: number,
  dst: Int32Array,
  dstAt: number,
  srcPort: number,
  dstPort: number,
  payloadLength: number,
  payloadSum: number,
): number {
  writeMac(out, off, undefined, dst[dstAt + 3]);
  writeMac(out, off + 6, undefined, src[srcAt + 3]);
  out[off + 12] = 0x86;
  out[off + 13] = 0xdd;
  const ip = off + 14;
  const udpLength = UDP_HEADER + payloadLength;
  out[ip] = 0x60;
  out[ip + 1] = 0;
  out[ip + 2] = 0;
  out[ip + 3] = 0;
  out[ip + 4] = udpLength >>> 8;
  out[ip + 5] = udpLength;
  out[ip + 6] = IP_PROTOCOL_UDP;
  out[ip + 7] = IPV6_DEFAULT_HOP_LIMIT;
  // Pseudo-header (addresses, UDP length, next header), UDP header, payload.
  let sum = udpLength + IP_PROTOCOL_UDP + srcPort + dstPort + udpLength + payloadSum;
  for (let w = 0; w < 4; w++) {
    const s = src[srcAt + w];
    const d = dst[dstAt + w];
    writeWord(out, ip + 8 + 4 * w, s);
    writeWord(out, ip + 24 + 4 * w, d);
    sum += (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  // A computed 0 goes out as 0xffff (RFC 768): 0 would read as "no checksum".
  const checksum = ~sum & 0xffff || 0xffff;
  writeUdpHeader(out, ip + IPV6_HEADER, srcPort, dstPort, udpLength, checksum);
  return SYNTHETIC_UDP6_PREFIX;
}

/**
 * The folded one's complement sum of a payload in two pieces, a[aOff..+aLen)
 * then b[bOff..+bLen), as the UDP checksum pairs its bytes: after an odd first
 * piece the second one's bytes pair the other way round, so its sum is
 * byte-swapped (RFC 1071 §2(B)). For writeSyntheticUdp6Prefix. No allocation:
 * the plain 16-bit loop, whose sum of a datagram (≤ 32 Ki words) stays a small
 * integer; checksum.ts's fast path adds 32-bit words, and called from here its
 * partial sums came back as heap numbers, one per call (observe-allocation.test.ts).
 */
export function udpPayloadSum(a: Uint8Array, aOff: number, aLen: number, b: Uint8Array, bOff: number, bLen: number): number {
  const first = onesComplementSumNaive(a, aOff, aLen);
  let second = onesComplementSumNaive(b, bOff, bLen);
  if ((aLen & 1) !== 0) second = ((second & 0xff) << 8) | (second >>> 8);
  const sum = first + second;
  return (sum & 0xffff) + (sum >>> 16);
}

function writeWord(out: Uint8Array, at: number, word: number): void {
  out[at] = word >>> 24;
  out[at + 1] = word >>> 16;
  out[at + 2] = word >>> 8;
  out[at + 3] = word;
}

function writeMac(out: Uint8Array, at: number, mac: Uint8Array | undefined, ip: number): void {
  if (mac !== undefined) {
    for (let i = 0; i < 6; i++) out[at + i] = mac[i];
    return;
  }
  out[at] = 0x02;
  out[at + 1] = 0x00;
  out[at + 2] = ip >>> 24;
  out[at + 3] = ip >>> 16;
  out[at + 4] = ip >>> 8;
  out[at + 5] = ip;
}

/** Where a worker captures: what read() got from the TUN, what write() gave it, what went out and came in on the socket. */
export type CapturePoint = 'tun-in' | 'tun-out' | 'udp-out' | 'udp-in';
export const CAPTURE_POINTS: readonly CapturePoint[] = ['tun-in', 'tun-out', 'udp-out', 'udp-in'];
export const CAPTURE_LINK_TYPES: Readonly<Record<CapturePoint, number>> = {
  'tun-in': LINKTYPE_RAW,
  'tun-out': LINKTYPE_RAW,
  'udp-out': LINKTYPE_ETHERNET,
  'udp-in': LINKTYPE_ETHERNET,
};

/** DIR/tun-in-w0.pcap: one file per capture point and worker, so workers never share a file. */
export function capturePath(dir: string, point: CapturePoint, worker: number): string {
  return join(dir, `${point}-w${worker}.pcap`);
}

/** The interval between two flushes of a worker's captures. */
export const CAPTURE_FLUSH_MS = 100;

/**
 * The four captures of one worker. The worker writes to tunIn/tunOut (raw
 * IPv4) and udpOut/udpIn (synthetic prefix + UDP payload), and calls
 * maybeFlush(nowMs) once per loop turn: it flushes at most every 100 ms.
 */
export class WorkerCaptures {
  readonly tunIn: PcapWriter;
  readonly tunOut: PcapWriter;
  readonly udpOut: PcapWriter;
  readonly udpIn: PcapWriter;
  private nextFlushMs = 0;

  constructor(dir: string, worker: number, opts: PcapWriterOptions) {
    this.tunIn = new PcapWriter(capturePath(dir, 'tun-in', worker), LINKTYPE_RAW, opts);
    this.tunOut = new PcapWriter(capturePath(dir, 'tun-out', worker), LINKTYPE_RAW, opts);
    this.udpOut = new PcapWriter(capturePath(dir, 'udp-out', worker), LINKTYPE_ETHERNET, opts);
    this.udpIn = new PcapWriter(capturePath(dir, 'udp-in', worker), LINKTYPE_ETHERNET, opts);
  }

  maybeFlush(nowMs: number): void {
    if (nowMs < this.nextFlushMs) return;
    this.nextFlushMs = nowMs + CAPTURE_FLUSH_MS;
    this.tunIn.flush();
    this.tunOut.flush();
    this.udpOut.flush();
    this.udpIn.flush();
  }

  close(): void {
    this.tunIn.close();
    this.tunOut.close();
    this.udpOut.close();
    this.udpIn.close();
  }
}
