// The series of /metrics, one function per family group, each reading its part's own counters at scrape
// time through prom-client `collect()` callbacks (see metrics.ts for why nothing here runs per request).
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { OutboxStats } from '../outbox/outbox.js';
import { VERSION } from './health.js';
import type { MetricsSources } from './metrics.js';
import { readWrittenBytes } from './process-io.js';

const PROCESS_IO_FILE = '/proc/self/io';
/** PUBACK latency: a LAN broker answers in about a millisecond, a cloud one in tens; 10 s is the publish timeout. */
const PUBACK_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** RPC round trip: an observing device answers within a second; a sleeping one's RPC may wait minutes. */
const RPC_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];

/** Registers every series of a gateway in `registry`, in the order /metrics lists them. */
export function registerGatewaySeries(registry: Registry, sources: MetricsSources): void {
  const series = new ScrapedSeries(registry);
  processSeries(series, sources);
  coapSeries(series, sources);
  observeSeries(series, sources);
  dtlsSeries(series, sources);
  upstreamSeries(series, sources);
  outboxSeries(series, sources);
  rpcSeries(series, sources);
  provisioningAndFirmwareSeries(series, sources);
  httpSeries(series, sources);
}

/** Series whose value is read from a part's own counters when scraped. */
class ScrapedSeries {
  readonly registers: Registry[];

  constructor(registry: Registry) {
    this.registers = [registry];
  }

  /** A counter read from a part's own counter when scraped. */
  counter(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: this.registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  /** A counter with one label, each value read from a part's counters when scraped. */
  labelledCounter<L extends string>(name: string, help: string, label: L, read: () => Record<string, number>): void {
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: this.registers,
      collect() {
        this.reset();
        for (const [value, count] of Object.entries(read())) this.inc({ [label]: value } as Record<L, string>, count);
      },
    });
  }

  gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: this.registers,
      collect() {
        this.set(read());
      },
    });
  }
}

/** The build, readiness, device count and storage wear of this gateway. */
function processSeries(series: ScrapedSeries, sources: MetricsSources): void {
  new Gauge({
    name: 'coap2mqtt_build_info',
    help: 'Always 1; the version label says which coap2mqtt runs.',
    labelNames: ['version'],
    registers: series.registers,
  }).set({ version: VERSION }, 1);
  series.gauge('coap2mqtt_ready', '1 while devices get their readings accepted (what /healthz answers 200 for), else 0.', () => (sources.ready() ? 1 : 0));
  series.gauge('coap2mqtt_devices', 'Devices in the device list now.', sources.devices);
  // Storage wear, only where the kernel accounts it (Linux): a series stuck at 0 elsewhere would read as
  // "writes nothing". A later failed read (no file descriptor left) repeats the last value.
  const firstWritten = readWrittenBytes(PROCESS_IO_FILE);
  if (firstWritten !== undefined) {
    let lastWritten = firstWritten;
    series.counter(
      'coap2mqtt_process_written_bytes_total',
      'Bytes this gateway process caused to be written to storage (write_bytes in /proc/self/io): the outbox database, its journal and checkpoints, anything else it writes to files. This is what wears an SD card; rate() of it times 86400 is the bytes written per day.',
      () => (lastWritten = readWrittenBytes(PROCESS_IO_FILE) ?? lastWritten),
    );
  }
}

/** CoAP: the message layer's counters, its table of answers, and the request limits. */
function coapSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const layer = sources.messageLayer;
  new Counter({
    name: 'coap2mqtt_coap_requests_total',
    help: 'New CoAP requests by transport (udp, dtls), route (the operation: telemetry, attributes, attributes_read, attributes_observe, rpc_observe, rpc_reply, client_rpc, claim, provision, firmware, values_read; unknown: no known feature; other: a path outside the dialects) and response code. Retransmissions answered from the cache are not counted here.',
    labelNames: ['transport', 'route', 'code'],
    registers: series.registers,
    collect() {
      this.reset();
      for (const { transport, operation, code, count } of layer.responses.snapshot()) this.inc({ transport, route: operation, code }, count);
    },
  });
  series.counter('coap2mqtt_coap_datagrams_total', 'Datagrams received from devices (plain UDP and decrypted DTLS).', () => layer.stats.datagrams);
  series.counter('coap2mqtt_coap_duplicates_total', 'Retransmitted requests (same message id from the same peer) answered from the cache, not handled again.', () => layer.stats.duplicates);
  series.counter('coap2mqtt_coap_malformed_total', 'Datagrams that are not valid CoAP (a confirmable one is answered with a Reset).', () => layer.stats.malformed);
  series.counter('coap2mqtt_coap_ignored_total', 'Datagrams ignored without an answer (an unknown CoAP version, or too short to be CoAP).', () => layer.stats.ignored);
  series.counter('coap2mqtt_coap_separate_responses_total', 'Answers sent as a separate CON response because they took longer than coap.piggybackWindowMs.', () => layer.stats.separateResponses);
  series.counter('coap2mqtt_coap_block_responses_total', 'Responses and notifications sent as one Block2 block of a larger body.', () => layer.stats.blockResponses);
  series.gauge('coap2mqtt_coap_dedup_entries', 'Message ids remembered to recognise retransmissions (at most coap.dedupMaxEntries).', () => layer.remembered.entries);
  series.gauge('coap2mqtt_coap_dedup_bytes', 'Bytes of answers kept to repeat to retransmissions (at most coap.dedupMaxBytes, plus one answer per generation).', () => layer.remembered.bytes);
  series.counter('coap2mqtt_coap_answers_not_kept_total', 'Answers not kept for retransmissions because their source address held its share (a sixteenth of coap.dedupMaxBytes): a flood from one address, or very many devices behind one NAT.', () => layer.stats.answersNotKept);
  series.counter('coap2mqtt_coap_handler_errors_total', 'Requests answered 5.00 because of an internal error (a bug: please report it with the log).', () => layer.stats.handlerErrors);
  const limits = sources.limits;
  series.labelledCounter('coap2mqtt_coap_too_many_requests_total', 'Requests answered 4.29 Too Many Requests, by the limit that refused them (gateway: limits.requestsPerSecond, device: limits.deviceRequestsPerSecond, blocked_address: an address blocked for trying unknown tokens).', 'limit', () => {
    const stats = limits.stats();
    return { gateway: stats.refusedGlobal, device: stats.refusedDevice, blocked_address: stats.refusedBlockedAddress };
  });
  series.gauge('coap2mqtt_coap_blocked_addresses', 'Addresses (IPv6: /64 prefixes) blocked now for trying too many unknown access tokens.', () => limits.stats().addressesBlocked);
  series.counter('coap2mqtt_coap_address_blocks_total', 'Times an address was blocked for trying too many unknown access tokens.', () => limits.stats().addressBlocks);
}

/** Observe relations, and the session store that keeps them over a restart. */
function observeSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const layer = sources.messageLayer;
  series.gauge('coap2mqtt_observe_relations', 'Observe relations (devices observing /attributes or /rpc) held now.', () => layer.stats.observations);
  series.counter('coap2mqtt_observe_notifications_total', 'Observe notifications sent (shared-attribute changes, RPCs, periodic confirmable checks).', () => layer.stats.notifications);
  series.counter('coap2mqtt_observe_relations_ended_total', 'Observe relations ended (deregistered, reset, unacknowledged, replaced or revoked).', () => layer.stats.observationsEnded);
  series.counter('coap2mqtt_observe_refused_total', 'Observe registrations answered without Observe (an error answer, or coap.maxObservations reached).', () => layer.stats.observationsRefused);
  series.counter('coap2mqtt_observe_relations_moved_total', 'Observe relations that followed their device to a new address (NAT rebinding, a new DTLS session).', () => layer.stats.observationsMoved);
  series.counter('coap2mqtt_observe_relations_restored_total', 'Observe relations brought back from state.dir/sessions.sqlite at start and confirmed.', () => layer.stats.observationsRestored);
  const sessions = sources.sessions;
  if (sessions) {
    series.gauge('coap2mqtt_sessions_stored_relations', 'Observe relations held in state.dir/sessions.sqlite (or about to be written there).', () => sessions.stats().observations);
    series.gauge('coap2mqtt_sessions_stored_rpcs', 'RPCs not yet delivered, held in state.dir/sessions.sqlite (or about to be written there).', () => sessions.stats().rpcs);
    series.counter('coap2mqtt_sessions_write_failures_total', 'Commits of the session store the disk refused (retried every 10 s; logged once per 10 minutes).', () => sessions.stats().failedCommits);
  }
}

/** DTLS sessions and handshakes. */
function dtlsSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const dtls = sources.dtls;
  if (dtls) {
    const s = dtls.stats;
    series.gauge('coap2mqtt_dtls_sessions', 'DTLS sessions established now.', () => s.sessions);
    series.gauge('coap2mqtt_dtls_handshakes_in_progress', 'DTLS handshakes in progress now: the device echoed its cookie and has not finished (at most dtls.maxHandshakes).', () => s.handshakesInProgress);
    series.counter('coap2mqtt_dtls_handshakes_total', 'DTLS handshakes completed.', () => s.handshakes);
    series.labelledCounter('coap2mqtt_dtls_handshake_failures_total', 'DTLS handshakes that failed, by reason (unknown_psk_identity, certificate_refused, timeout: often a wrong PSK, table_full: dtls.maxSessions reached, other).', 'reason', () => ({
      unknown_psk_identity: s.handshakesRefusedIdentity,
      certificate_refused: s.handshakesRefusedCertificate,
      timeout: s.handshakeTimeouts,
      table_full: s.refusedTableFull,
      other: Math.max(0, s.handshakeFailures - s.handshakesRefusedIdentity - s.handshakesRefusedCertificate),
    }));
    series.counter('coap2mqtt_dtls_hello_verify_requests_total', 'Stateless cookie challenges (HelloVerifyRequest) sent to ClientHellos.', () => s.helloVerifyRequests);
    series.counter('coap2mqtt_dtls_dropped_datagrams_total', 'Datagrams from peers without a session that were not a ClientHello.', () => s.droppedDatagrams);
    series.counter('coap2mqtt_dtls_evictions_total', 'Idle DTLS sessions closed to make room when dtls.maxSessions was reached.', () => s.evictions);
    series.labelledCounter('coap2mqtt_dtls_handshakes_dropped_total', 'Unfinished DTLS handshakes dropped or refused to keep them bounded, by reason (pool_full: the stalest gave way to a new one at dtls.maxHandshakes, address_limit: dtls.maxHandshakesPerAddress, stalled: silent 3 s while more than half of dtls.maxHandshakes were open). Many of them: a flood of ClientHellos that echo their cookie, or a fleet reconnecting over slow links.', 'reason', () => s.handshakesDropped);
  }
}

/** The upstream MQTT connection. */
function upstreamSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const upstream = sources.upstream;
  series.gauge('coap2mqtt_upstream_connected', '1 while connected to the upstream MQTT broker (ThingsBoard), else 0.', () => (upstream.stats().connected ? 1 : 0));
  series.gauge('coap2mqtt_upstream_last_change_timestamp_seconds', 'When the upstream connection last came up or went down (Unix time); time() minus this is how long it has been so.', () => (upstream.stats().since ?? 0) / 1000);
  series.counter('coap2mqtt_upstream_reconnects_total', 'Upstream connections after the first one (each follows a lost connection).', () => Math.max(0, upstream.stats().connects - 1));
  series.counter('coap2mqtt_upstream_connect_failures_total', 'Upstream connection attempts that failed.', () => upstream.stats().failedAttempts);
  series.labelledCounter('coap2mqtt_upstream_publishes_total', 'MQTT publishes by outcome: acknowledged (PUBACK) or failed (not connected, queue full, timed out, connection lost).', 'outcome', () => {
    const stats = upstream.stats();
    return { acknowledged: stats.acknowledged, failed: stats.failed };
  });
  series.gauge('coap2mqtt_upstream_inflight_publishes', 'Publishes waiting for their PUBACK now.', () => upstream.stats().inflight);
  series.labelledCounter('coap2mqtt_upstream_refused_messages_total', 'Messages from ThingsBoard refused, by reason (too_large: over upstream.maxDownlinkBytes, too_deep: nested deeper than upstream.maxDownlinkDepth, not_utf8, not_json, malformed: not the Gateway API\'s shape or an RPC id outside 0..2147483647, unknown_device: for a device not in the device list). Each is logged once per 10 minutes.', 'reason', () => ({ ...sources.bridge.downlinkRefusals() }));
  series.gauge('coap2mqtt_upstream_queued_publishes', 'Publishes waiting for a free in-flight slot or ThingsBoard\'s rate limits now.', () => upstream.stats().queued);
  const puback = new Histogram({
    name: 'coap2mqtt_upstream_puback_latency_seconds',
    help: 'Time from handing a publish to the MQTT client to its PUBACK.',
    buckets: PUBACK_BUCKETS,
    registers: series.registers,
  });
  upstream.onPuback((seconds) => puback.observe(seconds));
}

/** The outbox. */
function outboxSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const outbox = sources.outbox;
  if (outbox) {
    // One stats() per scrape for all of them: it asks SQLite for the oldest row.
    let cached: { at: number; stats: OutboxStats } | undefined;
    const stats = (): OutboxStats => {
      const now = Date.now();
      if (!cached || now - cached.at > 100) cached = { at: now, stats: outbox.stats() };
      return cached.stats;
    };
    series.gauge('coap2mqtt_outbox_records', 'Readings stored in the outbox and not yet acknowledged upstream.', () => stats().records);
    series.gauge('coap2mqtt_outbox_bytes', 'Bytes of the readings stored in the outbox.', () => stats().bytes);
    series.gauge('coap2mqtt_outbox_oldest_age_seconds', 'Age of the oldest reading in the outbox; 0 when empty. Grows while the broker is unreachable.', () => (stats().oldestAgeMs ?? 0) / 1000);
    series.gauge('coap2mqtt_outbox_inflight_publishes', 'Outbox publishes waiting for their PUBACK.', () => stats().inflight);
    series.gauge('coap2mqtt_outbox_accepting', '1 while the outbox stores new readings; 0 while it answers them 5.03 (disk full, low disk, shutting down).', () => (outbox.refusing === undefined ? 1 : 0));
    series.counter('coap2mqtt_outbox_accepted_total', 'Readings answered 2.01 to their device: those that went straight upstream plus those stored first (see coap2mqtt_outbox_readings_total).', () => stats().accepted);
    series.labelledCounter('coap2mqtt_outbox_readings_total', 'Readings answered 2.01, by the path they took: direct (sent straight upstream and answered on the broker\'s PUBACK, nothing written to disk) or spilled (stored in the outbox before the answer: the broker was unreachable or slow, the window was full, earlier readings were waiting, or outbox.mode is "always"). Spilled readings are what write to the disk.', 'path', () => {
      const { direct, spilled } = stats();
      return { direct, spilled };
    });
    series.counter('coap2mqtt_outbox_delivered_total', 'Readings acknowledged upstream and removed from the outbox.', () => stats().delivered);
    series.counter('coap2mqtt_outbox_publishes_total', 'Publishes sent from the outbox (many readings each).', () => stats().publishes);
    series.counter('coap2mqtt_outbox_resent_total', 'Readings sent again after the connection was lost before their PUBACK (ThingsBoard may see them twice).', () => stats().resent);
    series.labelledCounter('coap2mqtt_outbox_dropped_total', 'Stored readings dropped without delivery, by reason (quota: outbox.maxBytes, expired: outbox.maxAgeHours, oversized: over ThingsBoard\'s message size).', 'reason', () => ({ ...stats().dropped }));
    series.labelledCounter('coap2mqtt_outbox_rejected_total', 'Readings answered 5.03 instead of stored, by reason (storage: the disk is full or failing, low_disk: below outbox.minFreeDiskBytes, stopping: shutting down).', 'reason', () => {
      const { storage, lowDisk, stopping } = stats().rejected;
      return { storage, low_disk: lowDisk, stopping };
    });
  }
}

/** Server-side RPC. */
function rpcSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const bridge = sources.bridge;
  series.counter('coap2mqtt_rpc_requests_total', 'Server-side RPCs received from ThingsBoard (v1/gateway/rpc).', () => bridge.rpcStats().received);
  series.gauge('coap2mqtt_rpc_pending', 'Server-side RPCs received and neither replied to by their device nor dropped yet.', () => bridge.rpcStats().pending);
  series.counter('coap2mqtt_rpc_unanswered_total', 'Server-side RPCs forgotten without a reply (one-way RPCs, or devices that never answered) after sessions.rpcQueueTtlMs plus 5 minutes.', () => bridge.rpcStats().unanswered);
  const roundTrip = new Histogram({
    name: 'coap2mqtt_rpc_round_trip_seconds',
    help: 'Server-side RPC from its arrival on v1/gateway/rpc to the device\'s reply (outcome replied) or to the gateway dropping it from a sleeping device\'s queue (outcome dropped: expired or queue full).',
    labelNames: ['outcome'],
    buckets: RPC_BUCKETS,
    registers: series.registers,
  });
  // Both series from the first scrape, so a rate() over them never starts from nothing.
  roundTrip.zero({ outcome: 'replied' });
  roundTrip.zero({ outcome: 'dropped' });
  bridge.onRpcEnd((end, seconds) => roundTrip.observe({ outcome: end }, seconds));
}

/** Provisioning and OTA packages. */
function provisioningAndFirmwareSeries(series: ScrapedSeries, sources: MetricsSources): void {
  series.labelledCounter('coap2mqtt_provision_requests_total', 'Provisioning requests by outcome (success, refused: NOT_FOUND or FAILURE, disabled: provision.mode off, timeout: ThingsBoard silent, unavailable: unreachable or too many at once, bad_answer).', 'outcome', () => ({ ...sources.provisioner.stats() }));
  const images = sources.images;
  series.counter('coap2mqtt_firmware_fetches_total', 'Package images downloaded from a source (one per package, however many devices ask).', () => images.stats().fetches);
  series.counter('coap2mqtt_firmware_fetch_failures_total', 'Package downloads that failed (source unreachable, not found, timed out).', () => images.stats().fetchFailures);
  series.counter('coap2mqtt_firmware_refused_total', 'Package images refused after download (checksum or size mismatch, too large, no checksum while firmware.requireChecksum).', () => images.stats().refused);
  series.gauge('coap2mqtt_firmware_memory_bytes', 'Bytes of verified package images held in memory for devices downloading them.', () => images.stats().memoryBytes);
}

/** The HTTP device API and the health and metrics endpoint. */
function httpSeries(series: ScrapedSeries, sources: MetricsSources): void {
  const deviceHttp = sources.deviceHttp;
  if (deviceHttp) {
    series.labelledCounter('coap2mqtt_device_http_requests_total', 'Requests to the HTTP device API by the status answered (200, 400, 401, 404, 405, 408: a long-poll without an update, 413, 429, 503, ...).', 'status', () => deviceHttp.stats().responses);
    series.gauge('coap2mqtt_device_http_polls', 'Long-polls (GET /rpc, /attributes/updates) waiting now on the HTTP device API.', () => deviceHttp.stats().polls);
    series.gauge('coap2mqtt_device_http_connections', 'TCP connections open now on the HTTP device API (deviceHttp.maxConnections at most).', () => deviceHttp.stats().connections.open);
    series.labelledCounter('coap2mqtt_device_http_connections_closed_total', 'HTTP device API connections the gateway closed by reason: timeout (no whole request head within 5 s of opening or of the last answer), evicted (idle, closed to make room at deviceHttp.maxConnections or maxConnectionsPerAddress), refused (no room: every connection held a request). Evictions and refusals mean a flood or a bound set too low.', 'reason', () => deviceHttp.stats().connections.closed);
  }
  const mqtt = sources.mqttDevices;
  if (mqtt) {
    const counters = () => mqtt.stats().counters;
    series.gauge('coap2mqtt_mqtt_device_connections', 'TCP connections open now on the MQTT device listeners (mqttDevices.maxConnections at most), connected or not yet.', () => mqtt.stats().connections);
    series.gauge('coap2mqtt_mqtt_devices_connected', 'Devices connected over MQTT now (one connection each).', () => mqtt.stats().devices);
    series.gauge('coap2mqtt_mqtt_device_sessions', 'Persistent MQTT sessions remembered (mqttDevices.maxSessions at most).', () => mqtt.stats().sessions);
    series.labelledCounter('coap2mqtt_mqtt_device_connects_total', 'MQTT CONNECTs by result: accepted, refused (unknown token or certificate, blocked address, a persistent session without client id).', 'result', () => ({ ...counters().connacks }));
    series.labelledCounter('coap2mqtt_mqtt_device_publishes_total', 'PUBLISHes from MQTT devices by outcome: accepted (safe, PUBACKed), answered (a question with its answer), dropped (a topic outside the API, or QoS 0 while upstream is away), refused (the connection was closed for it), retried (held back by a limit or an unavailable upstream and tried again).', 'outcome', () => ({ ...counters().publishes }));
    series.labelledCounter('coap2mqtt_mqtt_device_deliveries_total', 'PUBLISHes to MQTT devices (RPCs, attribute updates, answers) by result: acknowledged (QoS 1 PUBACK), sent (QoS 0), failed (the connection ended first).', 'result', () => ({ ...counters().delivered }));
    series.labelledCounter('coap2mqtt_mqtt_device_connections_closed_total', 'MQTT device connections ended, by reason (disconnect, peer-closed, keepalive, connect-timeout, taken-over, too-large, malformed, protocol, refused-publish, slow-reader, evicted, refused, revoked, stopping, ...).', 'reason', () => ({ ...counters().closed }));
  }
  const opsHttp = sources.opsHttp;
  if (opsHttp) {
    series.labelledCounter('coap2mqtt_http_connections_closed_total', 'Connections to this health and metrics endpoint it closed by reason: timeout (no request within 5 s), evicted (stalled, closed to make room at its 16 connections), refused (no room).', 'reason', () => opsHttp.stats().closed);
  }
}
