// What to do with a SendBatch the kernel does not take in one go, decided
// here once for every UdpBind: resume after a partial send; when the socket
// is full (EAGAIN, ENOBUFS) wait briefly for room, then drop what is left and
// count it; when the kernel refuses UDP GSO (an underlay device without
// checksum offload: EIO/EINVAL) stop asking for it and send that message's
// datagrams one by one; any other refusal drops that one message, counted,
// and the rest of the batch still goes.
import { Counter, DROPS_BASE } from './worker-stats.js';
import { DropReason } from '../encap/drop-reasons.js';
import { batchSizeBucket } from '../observe/metrics.js';
import { SendBatch } from './batches.js';
import type { UdpBind } from './bind.js';

const EIO = 5;
const EAGAIN = 11;
const EINVAL = 22;
const ENOBUFS = 105;
/** How long a full socket may hold the loop up before the rest of the batch is dropped. */
export const SEND_WAIT_MS = 10;
/** UDP_MAX_SEGMENTS: the most datagrams one GSO message carries. */
export const GSO_MAX_SEGMENTS = 64;

export class SendPolicy {
  /** One GSO message re-sent as single datagrams. */
  private readonly fallback = new SendBatch(GSO_MAX_SEGMENTS, 2 * GSO_MAX_SEGMENTS);

  constructor(
    private readonly bind: UdpBind,
    private readonly c: Float64Array,
    private readonly report: (line: string) => void,
  ) {}

  /** Sends all of `batch` through sender k (or counts why not), then empties it. Returns the messages the kernel took. */
  flush(k: number, batch: SendBatch): number {
    const c = this.c;
    const bind = this.bind;
    const count = batch.messages;
    let sent = 0;
    let taken = 0;
    c[Counter.SendBatches]++;
    while (sent < count) {
      const r = bind.send(k, batch, sent);
      if (r > 0) {
        c[Counter.SendBatchSizeLe1 + batchSizeBucket(r)]++;
        c[Counter.SendBatchSizeSum] += r;
        for (let m = sent; m < sent + r; m++) {
          c[Counter.UdpSentPackets] += batch.datagrams[m];
          c[Counter.UdpSentBytes] += batch.bytes[m];
          if (batch.datagrams[m] > 1) c[Counter.GsoSends]++;
        }
        sent += r;
        taken += r;
        continue;
      }
      const e = -r;
      if (e === EAGAIN || e === ENOBUFS) {
        if (bind.waitWritable(k, SEND_WAIT_MS)) continue;
        for (let m = sent; m < count; m++) c[DROPS_BASE + DropReason.SendFailed] += batch.datagrams[m];
        break;
      }
      if (batch.segmentSize[sent] > 0 && bind.gso && (e === EIO || e === EINVAL)) {
        bind.disableGso();
        this.report(`UDP GSO refused by the kernel (errno ${e}); sending one datagram per segment from now on`);
        this.sendSeparately(k, batch, sent);
        sent++;
        continue;
      }
      // The message at `sent` itself was refused: count it and carry on with the rest.
      c[DROPS_BASE + DropReason.SendFailed] += batch.datagrams[sent];
      sent++;
    }
    batch.reset();
    return taken;
  }

  /** Message m of batch, a GSO message, as one message per datagram. */
  private sendSeparately(k: number, batch: SendBatch, m: number): void {
    const f = this.fallback;
    const datagrams = batch.datagrams[m];
    const perDatagram = (batch.pieceCount[m] / datagrams) | 0;
    let piece = batch.firstPiece[m];
    for (let d = 0; d < datagrams; d++) {
      f.begin(batch.peer[m], batch.port[m], 0, 1);
      f.setPeer6(batch.peer6, m); // the IPv6 underlay's destination (unused on an IPv4 socket)
      for (let i = 0; i < perDatagram; i++, piece++) f.add(batch.pieceOffset[piece], batch.pieceLength[piece]);
      f.end();
    }
    this.flush(k, f);
  }
}
