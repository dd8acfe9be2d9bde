// CoAP constants from RFC 7252, RFC 7641 and RFC 7959, in the numeric form the wire uses.

export const enum MessageType {
  Confirmable = 0,
  NonConfirmable = 1,
  Acknowledgement = 2,
  Reset = 3,
}

/** A code byte: class in the top 3 bits, detail in the low 5 (e.g. 2.05 → 0x45). */
export type CodeByte = number;

export const code = (cls: number, detail: number): CodeByte => (cls << 5) | detail;
export const codeClass = (c: CodeByte): number => c >> 5;
/** "2.05" form, as RFC 7252 writes codes and as logs and tests read them. */
export const codeToString = (c: CodeByte): string =>
  `${c >> 5}.${String(c & 0x1f).padStart(2, '0')}`;

export const Method = {
  GET: code(0, 1),
  POST: code(0, 2),
  PUT: code(0, 3),
  DELETE: code(0, 4),
} as const;

export const ResponseCode = {
  Created: code(2, 1),
  Deleted: code(2, 2),
  Valid: code(2, 3),
  Changed: code(2, 4),
  Content: code(2, 5),
  Continue: code(2, 31),
  BadRequest: code(4, 0),
  Unauthorized: code(4, 1),
  BadOption: code(4, 2),
  Forbidden: code(4, 3),
  NotFound: code(4, 4),
  MethodNotAllowed: code(4, 5),
  RequestEntityIncomplete: code(4, 8),
  RequestEntityTooLarge: code(4, 13),
  UnsupportedContentFormat: code(4, 15),
  TooManyRequests: code(4, 29),
  InternalServerError: code(5, 0),
  NotImplemented: code(5, 1),
  BadGateway: code(5, 2),
  ServiceUnavailable: code(5, 3),
  GatewayTimeout: code(5, 4),
  ProxyingNotSupported: code(5, 5),
} as const;

export const OptionNumber = {
  IfMatch: 1,
  UriHost: 3,
  ETag: 4,
  IfNoneMatch: 5,
  Observe: 6,
  UriPort: 7,
  OSCORE: 9,
  UriPath: 11,
  ContentFormat: 12,
  MaxAge: 14,
  UriQuery: 15,
  HopLimit: 16,
  Accept: 17,
  QBlock1: 19,
  Block2: 23,
  Block1: 27,
  Size2: 28,
  QBlock2: 31,
  ProxyUri: 35,
  ProxyScheme: 39,
  Size1: 60,
  NoResponse: 258,
  RequestTag: 292,
} as const;

export const ContentFormat = {
  TextPlain: 0,
  OctetStream: 42,
  Json: 50,
} as const;

/** RFC 7252 §4.8 transmission parameters (defaults; the RFC's derived EXCHANGE_LIFETIME is 247 s). */
export const Transmission = {
  ackTimeoutMs: 2000,
  ackRandomFactor: 1.5,
  maxRetransmit: 4,
  exchangeLifetimeMs: 247_000,
} as const;
