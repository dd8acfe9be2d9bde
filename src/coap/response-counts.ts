// Answers to new requests, counted by transport, operation and response code for the metrics endpoint.
// Counting is one increment in a flat array on the request path; labels are made only when read.
import { codeToString } from './codes.js';
import type { DatagramTransport } from './transport.js';

const TRANSPORTS = ['udp', 'dtls'] as const;
const CODES = 256;

export interface ResponseCount {
  readonly transport: (typeof TRANSPORTS)[number];
  readonly operation: string;
  /** "2.01" */
  readonly code: string;
  readonly count: number;
}

export class ResponseCounts {
  /** [transport][operation][code byte]; doubles count exactly to 2^53, far past any uptime's requests. */
  private readonly counts: Float64Array;

  /** Labels of the handler's operation indexes; index 0 stands for "not known". */
  readonly operations: readonly string[];

  constructor(operations: readonly string[] = []) {
    this.operations = operations.length > 0 ? operations : ['unknown'];
    this.counts = new Float64Array(TRANSPORTS.length * this.operations.length * CODES);
  }

  count(transport: DatagramTransport, operation: number, code: number): void {
    const operations = this.operations.length;
    // An index the labels do not cover (a handler without `operations`) counts as the first, "unknown".
    const op = operation >= 0 && operation < operations ? operation : 0;
    this.counts[((transport.name === 'dtls' ? 1 : 0) * operations + op) * CODES + (code & 0xff)]!++;
  }

  /** Every combination answered at least once; read by a scrape, not per request. */
  snapshot(): ResponseCount[] {
    const out: ResponseCount[] = [];
    const operations = this.operations.length;
    for (let t = 0; t < TRANSPORTS.length; t++) {
      for (let op = 0; op < operations; op++) {
        const base = (t * operations + op) * CODES;
        for (let code = 0; code < CODES; code++) {
          const count = this.counts[base + code]!;
          if (count > 0) out.push({ transport: TRANSPORTS[t]!, operation: this.operations[op]!, code: codeToString(code), count });
        }
      }
    }
    return out;
  }
}
