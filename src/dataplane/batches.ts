// The batches that cross the two device interfaces (tun.ts, bind.ts). Plain
// data: typed arrays of pool offsets and lengths, created once per worker and
// refilled per batch, so handing a batch over allocates nothing. Offsets are
// into the worker's one pool buffer (packet-pool.ts); no bytes are copied.
import { SegmentList } from '../encap/segmentation.js';

/**
 * What one TUN read hands the forwarder: IPv4 packets in pool slots. A
 * packet read as a TSO/USO super-packet also carries its wire segments, cut
 * by the device: each segment's IPv4 + TCP/UDP header rebuilt in an arena
 * (with the encapsulation's headroom in front), its payload a slice of the
 * super-packet. A super-packet with more segments than one batch's arena
 * holds comes in several consecutive reads, each with the next run of its
 * segments (same offset and length, segmentFirst > 0 after the first).
 */
export class TunReadBatch {
  count = 0;
  /** Every packet the device took from the kernel in this batch, dropped or not: the read budget counts these. */
  reads = 0;
  /** The device had nothing more to read (EAGAIN): no need to come back before poll() says so. */
  drained = false;
  /** The IPv4 packet (or super-packet) as read, from its first header byte. */
  readonly offset: Int32Array;
  readonly length: Int32Array;
  /** 0: a single packet, sent as it is. Otherwise: its segments are segments[segmentStart, +segmentCount). */
  readonly segmentCount: Int32Array;
  readonly segmentStart: Int32Array;
  /** Index of segmentStart's segment within its super-packet (0 unless a super-packet is split across reads). */
  readonly segmentFirst: Int32Array;
  /** The size of its largest segment on the wire (IPv4 + L4 header + gso_size); the packet's length if single. */
  readonly wireSize: Int32Array;
  readonly segments: SegmentList;

  constructor(
    readonly capacity: number,
    segmentCapacity: number,
  ) {
    this.offset = new Int32Array(capacity);
    this.length = new Int32Array(capacity);
    this.segmentCount = new Int32Array(capacity);
    this.segmentStart = new Int32Array(capacity);
    this.segmentFirst = new Int32Array(capacity);
    this.wireSize = new Int32Array(capacity);
    this.segments = new SegmentList(Math.max(segmentCapacity, 1));
  }

  reset(): void {
    this.count = 0;
    this.reads = 0;
    this.drained = false;
    this.segments.count = 0;
  }

  addPacket(offset: number, length: number): void {
    const p = this.count++;
    this.offset[p] = offset;
    this.length[p] = length;
    this.segmentCount[p] = 0;
    this.segmentStart[p] = 0;
    this.segmentFirst[p] = 0;
    this.wireSize[p] = length;
  }

  /** A super-packet (or a run of it) whose segments were just appended to `segments` from `start`. */
  addSuperPacket(offset: number, length: number, start: number, first: number, wireSize: number): void {
    const p = this.count++;
    this.offset[p] = offset;
    this.length[p] = length;
    this.segmentStart[p] = start;
    this.segmentCount[p] = this.segments.count - start;
    this.segmentFirst[p] = first;
    this.wireSize[p] = wireSize;
  }
}

/** IPv4 packets in pool memory, to write to the TUN in order. */
export class PacketList {
  count = 0;
  readonly offset: Int32Array;
  readonly length: Int32Array;

  constructor(readonly capacity: number) {
    this.offset = new Int32Array(capacity);
    this.length = new Int32Array(capacity);
  }

  add(offset: number, length: number): void {
    const i = this.count++;
    this.offset[i] = offset;
    this.length[i] = length;
  }

  reset(): void {
    this.count = 0;
  }
}

/** DatagramBatch.outer6From when nothing came over the IPv6 underlay. */
export const NO_OUTER6 = 0x7fffffff;

/**
 * What one receive hands the forwarder: UDP payloads in pool slots with their
 * senders. A message the kernel coalesced (UDP GRO) arrives here already cut
 * back into its datagrams, so the forwarder sees one entry per datagram.
 */
export class DatagramBatch {
  count = 0;
  /** The socket had nothing more (a short batch or EAGAIN). */
  drained = false;
  /** Datagrams [outer6From, count) came over the IPv6 underlay (senders in sourceIp6); none when it is ≥ count. */
  outer6From = NO_OUTER6;
  readonly offset: Int32Array;
  readonly length: Int32Array;
  /** Sender address as int32 (same bits as the uint32): never a heap number (see LeaseTable.publicIps). */
  readonly sourceIp: Int32Array;
  /** IPv6 underlay: the sender's IPv6 address as 4 big-endian int32 words per datagram (sourceIp is then 0). */
  readonly sourceIp6: Int32Array;
  readonly sourcePort: Uint16Array;
  /** 1: the datagram was larger than its slot (MSG_TRUNC): only its first bytes are here. */
  readonly truncated: Uint8Array;

  constructor(readonly capacity: number) {
    this.offset = new Int32Array(capacity);
    this.length = new Int32Array(capacity);
    this.sourceIp = new Int32Array(capacity);
    this.sourceIp6 = new Int32Array(4 * capacity);
    this.sourcePort = new Uint16Array(capacity);
    this.truncated = new Uint8Array(capacity);
  }

  reset(): void {
    this.count = 0;
    this.drained = false;
    this.outer6From = NO_OUTER6;
  }

  add(offset: number, length: number, sourceIp: number, sourcePort: number, truncated: boolean): void {
    const i = this.count++;
    this.offset[i] = offset;
    this.length[i] = length;
    this.sourceIp[i] = sourceIp;
    this.sourcePort[i] = sourcePort;
    this.truncated[i] = truncated ? 1 : 0;
  }

  /** The IPv6 sender of datagram i (after add()). */
  setSource6(i: number, w0: number, w1: number, w2: number, w3: number): void {
    const s = this.sourceIp6;
    s[4 * i] = w0;
    s[4 * i + 1] = w1;
    s[4 * i + 2] = w2;
    s[4 * i + 3] = w3;
  }
}

/**
 * Messages to send, each to one peer, each a list of pieces (pool offset,
 * length) the kernel concatenates. A message with segmentSize > 0 is a UDP
 * GSO message: the kernel cuts it into datagrams of segmentSize bytes (the
 * last may be shorter), each made of piecesPerDatagram consecutive pieces.
 */
export class SendBatch {
  messages = 0;
  pieces = 0;
  readonly peer: Int32Array;
  /** IPv6 underlay: each message's destination as 4 big-endian int32 words (set with setPeer6 after begin). */
  readonly peer6: Int32Array;
  readonly port: Uint16Array;
  readonly segmentSize: Int32Array;
  /** Datagrams each message becomes on the wire. */
  readonly datagrams: Int32Array;
  readonly bytes: Int32Array;
  readonly firstPiece: Int32Array;
  readonly pieceCount: Int32Array;
  readonly pieceOffset: Int32Array;
  readonly pieceLength: Int32Array;

  constructor(
    readonly maxMessages: number,
    readonly maxPieces: number,
  ) {
    this.peer = new Int32Array(maxMessages);
    this.peer6 = new Int32Array(4 * maxMessages);
    this.port = new Uint16Array(maxMessages);
    this.segmentSize = new Int32Array(maxMessages);
    this.datagrams = new Int32Array(maxMessages);
    this.bytes = new Int32Array(maxMessages);
    this.firstPiece = new Int32Array(maxMessages);
    this.pieceCount = new Int32Array(maxMessages);
    this.pieceOffset = new Int32Array(maxPieces);
    this.pieceLength = new Int32Array(maxPieces);
  }

  hasRoom(messages: number, pieces: number): boolean {
    return this.messages + messages <= this.maxMessages && this.pieces + pieces <= this.maxPieces;
  }

  /** Starts a message to peer:port (peer as int32 or uint32: same bits). */
  begin(peer: number, port: number, segmentSize: number, datagrams: number): void {
    const m = this.messages;
    this.peer[m] = peer;
    this.port[m] = port;
    this.segmentSize[m] = segmentSize;
    this.datagrams[m] = datagrams;
    this.bytes[m] = 0;
    this.firstPiece[m] = this.pieces;
  }

  /** The message begun last goes to the IPv6 address in words[4 * at .. 4 * at + 3] (a lease table's PublicIPv6 words). */
  setPeer6(words: Int32Array, at: number): void {
    const m = 4 * this.messages;
    const w = 4 * at;
    this.peer6[m] = words[w];
    this.peer6[m + 1] = words[w + 1];
    this.peer6[m + 2] = words[w + 2];
    this.peer6[m + 3] = words[w + 3];
  }

  add(offset: number, length: number): void {
    const i = this.pieces++;
    this.pieceOffset[i] = offset;
    this.pieceLength[i] = length;
    this.bytes[this.messages] += length;
  }

  end(): void {
    const m = this.messages++;
    this.pieceCount[m] = this.pieces - this.firstPiece[m];
  }

  reset(): void {
    this.messages = 0;
    this.pieces = 0;
  }
}
