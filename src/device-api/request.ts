// A device's request as the device API sees it, whatever carried it: a front end fills this in from its
// protocol (CoAP options, an HTTP request line and headers) and reads back an Outcome.
import type { Device, PeerCredential } from '../model.js';

/** The methods the dialects distinguish; others are named as sent and refused. */
export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'FETCH' | 'PATCH' | 'iPATCH' | (string & {});

export interface DeviceRequest {
  readonly method: Method;
  /** The path's segments, percent-decoded, without empty ones. */
  readonly segments: readonly string[];
  /** Query items as "name=value". */
  readonly query: readonly string[];
  readonly body: Buffer;
  /**
   * Set when the body's declared format is one the gateway cannot read as JSON (CoAP: CBOR or EXI; HTTP: a
   * Content-Type other than JSON or text): the front end's diagnostic, in its own terms (a CoAP Content-Format
   * number, an HTTP Content-Type). Only operations that read a body refuse it.
   */
  readonly unsupportedFormat: string | undefined;
  readonly peer: {
    readonly address: string;
    /** A DTLS identity or certificate the transport authenticated: it names the device. */
    readonly credential?: PeerCredential;
    /**
     * The device a connection-oriented front end authenticated once for the whole connection (an MQTT
     * CONNECT's token, checked with identify): its requests carry no token of their own.
     */
    readonly device?: Device;
  };
  /** Wall-clock time the request arrived, ms since the epoch. */
  readonly receivedAt: number;
  /**
   * The device asks for a stream of updates (CoAP Observe 0, an HTTP long-poll) or ends one (Observe 1,
   * answered plainly).
   */
  readonly updates: 'open' | 'close' | undefined;
  /** It continues or ends what was already admitted (a Block2 follow-up, an Observe deregistration): no limit counts it. */
  readonly continuation: boolean;
  /** A registration replayed from the session store at start: checked like any other, but counts nothing against the address or device. */
  readonly restored: boolean;
}
