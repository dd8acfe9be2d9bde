// What became of each request, by (peer, message id), so that a retransmission is answered with what the
// first copy got instead of being handled twice (RFC 7252 §4.5). Bounded in entries and in bytes, with a
// share per source address so one flood cannot push out everyone else's answers.
import type { Logger } from 'pino';
import { Method, MessageType } from './codes.js';
import { DedupCache } from './dedup.js';
import { encodeEmpty, type IncomingMessage } from './message.js';
import type { MessageIdAllocator } from './message-ids.js';
import type { CoapResponse } from './request.js';
import { encodeResponse } from './response-encoding.js';
import type { Peer } from './transport.js';
import { LogOncePer } from '../log.js';
import { sourceKey } from '../net/source-key.js';

export const DEDUP_MAX_BYTES = 32 * 1024 * 1024;
/**
 * One source address may hold this share of the remembered answers: 2 MiB by default, some 10,000 error
 * answers or 2,000 full blocks within the exchange lifetime, far beyond a device's needs, while a flood
 * from one address cannot push out everyone else's.
 */
const DEDUP_SOURCE_SHARE = 16;

// Deduplication states besides a finished response (a shared object per code for a bare answer, or the
// bytes of the datagram that carried it).
const PROCESSING = Symbol('processing');
const ANSWERED_SEPARATELY = Symbol('answered separately');
const REJECTED = Symbol('rejected');
/**
 * A retransmission of a request whose answer the handler can reproduce (a firmware block): handled again
 * rather than answered from a stored copy, so a fleet downloading costs the table a few bytes per block.
 */
const HANDLE_AGAIN = Symbol('handle again');
/**
 * Answered, but the answer was not kept: its source already held its share of the table. A retransmitted
 * GET is handled again (it is safe to); anything else goes unanswered rather than be done twice.
 */
const NOT_KEPT = Symbol('not kept');
/**
 * What became of a message. Answers without payload or options are kept as one shared object per code;
 * any other answer as the bytes of the datagram that carried it (in the table's own arena).
 */
type Seen = CoapResponse | typeof PROCESSING | typeof ANSWERED_SEPARATELY | typeof REJECTED | typeof HANDLE_AGAIN | typeof NOT_KEPT;

export interface AnswerMemoryOptions {
  readonly lifetimeMs: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
}

export class AnswerMemory {
  private readonly seen: DedupCache<Seen>;
  /** Repeats the "table full" warning at most every 10 minutes while the overload lasts. */
  private readonly capWarnings = new LogOncePer(10 * 60_000, 1);
  /** One line per source address holding its share of the table, per 10 minutes. */
  private readonly shareWarnings = new LogOncePer(10 * 60_000);

  constructor(
    private readonly options: AnswerMemoryOptions,
    private readonly messageIds: MessageIdAllocator,
    private readonly stats: { duplicates: number; answersNotKept: number },
    private readonly log: Logger,
  ) {
    this.seen = new DedupCache({
      lifetimeMs: options.lifetimeMs,
      maxEntries: options.maxEntries,
      maxBytes: options.maxBytes,
      maxBytesPerSource: Math.floor(options.maxBytes / DEDUP_SOURCE_SHARE),
    });
  }

  /** The table's size: entries, and bytes of answers kept for retransmissions. */
  get remembered(): { readonly entries: number; readonly bytes: number } {
    return { entries: this.seen.size, bytes: this.seen.bytes };
  }

  /**
   * 'new' for a request to handle (now marked as being processed); 'answered' for a retransmission, which
   * got what the first copy got (or nothing while that is still being worked on).
   */
  admit(message: IncomingMessage, peer: Peer): 'new' | 'answered' {
    const previous = this.seen.get(peer.key, message.messageId);
    if (previous !== undefined) this.stats.duplicates++;
    if (previous === HANDLE_AGAIN || (previous === NOT_KEPT && message.code === Method.GET)) {
      this.seen.update(peer.key, message.messageId, PROCESSING);
    } else if (previous !== undefined) {
      this.replay(previous, message, peer);
      return 'answered';
    } else if (!this.seen.add(peer.key, message.messageId, PROCESSING) && this.capWarnings.first('dedup')) {
      this.log.warn(
        { maxEntries: this.options.maxEntries, maxBytes: this.options.maxBytes },
        'deduplication table full (coap.dedupMaxEntries or coap.dedupMaxBytes): the oldest quarter of message ids was forgotten before 247 s; a late retransmission of one of them would be forwarded again. Raise the limits for this request rate',
      );
    }
    return 'new';
  }

  /** A request rejected with a Reset: its retransmissions get nothing. */
  rejected(message: IncomingMessage, peer: Peer): void {
    this.seen.update(peer.key, message.messageId, REJECTED);
  }

  /** The request got an empty ACK; its answer follows as a CON. Retransmissions keep getting that empty ACK. */
  answeredSeparately(message: IncomingMessage, peer: Peer): void {
    this.seen.update(peer.key, message.messageId, ANSWERED_SEPARATELY);
  }

  /**
   * What a retransmission of `message` will be answered with: a shared object for a bare answer, otherwise
   * a compact copy of the datagram that carried it, within the source's share of the table. A `reproducible`
   * answer is not kept: its retransmissions are handled again.
   */
  remember(message: IncomingMessage, peer: Peer, response: CoapResponse, datagram: Buffer, reproducible: boolean): void {
    if (reproducible) {
      this.seen.update(peer.key, message.messageId, HANDLE_AGAIN);
      return;
    }
    const bare = bareAnswer(response);
    if (bare) {
      this.seen.update(peer.key, message.messageId, bare);
      return;
    }
    const source = sourceKey(peer.address);
    if (this.seen.setBytes(peer.key, message.messageId, datagram, source) === 'stored') return;
    this.seen.update(peer.key, message.messageId, NOT_KEPT);
    this.stats.answersNotKept++;
    if (this.shareWarnings.first(source)) {
      this.log.warn(
        { source, bytes: this.seen.bytesOf(source) },
        'a source address holds its share of the answers remembered for retransmissions (a sixteenth of coap.dedupMaxBytes): further answers to it are not remembered, so its retransmitted GETs are handled again and other retransmissions go unanswered. A flood from that address, or many devices behind one NAT; logged again in 10 minutes at most',
      );
    }
  }

  clear(): void {
    this.seen.clear();
  }

  /** Answers a duplicate from what the first copy produced, without handling it again. */
  private replay(previous: Seen | Buffer, message: IncomingMessage, peer: Peer): void {
    const confirmable = message.type === MessageType.Confirmable;
    // HANDLE_AGAIN never gets here: admit() handles such a retransmission as a new request.
    if (previous === PROCESSING || previous === REJECTED || previous === HANDLE_AGAIN || previous === NOT_KEPT) return;
    if (Buffer.isBuffer(previous)) {
      // The datagram that answered the first copy, retyped for this one: a CON gets it as the ACK it was
      // (same message id), a NON a NON with a fresh id. Copied: the table's arena is not ours to send.
      const datagram = Buffer.from(previous);
      const type = confirmable ? MessageType.Acknowledgement : MessageType.NonConfirmable;
      datagram[0] = (datagram[0]! & 0xcf) | (type << 4);
      datagram.writeUInt16BE(confirmable ? message.messageId : this.messageIds.next(peer), 2);
      peer.transport.send(peer, datagram);
      return;
    }
    if (previous === ANSWERED_SEPARATELY) {
      if (confirmable) peer.transport.send(peer, encodeEmpty(MessageType.Acknowledgement, message.messageId));
      return;
    }
    const type = confirmable ? MessageType.Acknowledgement : MessageType.NonConfirmable;
    const messageId = confirmable ? message.messageId : this.messageIds.next(peer);
    peer.transport.send(peer, encodeResponse(type, messageId, message.token, previous));
  }
}

/** One shared object per response code stands for every answer that is nothing but the code. */
const BARE_ANSWERS = new Map<number, CoapResponse>();

function bareAnswer(response: CoapResponse): CoapResponse | undefined {
  const { payload, options } = response;
  if ((payload !== undefined && payload.length > 0) || (options !== undefined && options.length > 0) || response.maxAge !== undefined || response.size1 !== undefined) {
    return undefined;
  }
  let shared = BARE_ANSWERS.get(response.code);
  if (!shared) {
    shared = Object.freeze({ code: response.code });
    BARE_ANSWERS.set(response.code, shared);
  }
  return shared;
}
