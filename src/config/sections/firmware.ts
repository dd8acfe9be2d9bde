// Where firmware images come from and how they are kept; and the check of the image directory.
import { BOOLEAN, FIRMWARE_SOURCES, HTTP_URL, integer, TEXT } from '../formats.js';
import { accessSync, constants } from 'node:fs';
import { setting, type ConfigOf } from '../setting.js';

export const firmware = {
  sources: setting({
    doc: 'Where firmware and software images come from, tried in this order; a source that does not apply is skipped. "dir": firmware.dir; "url": the package\'s fw_url; "thingsboard": ThingsBoard\'s HTTP device API at firmware.thingsboardUrl with the device\'s own access token (registry tokens must then be ThingsBoard tokens). Every image is checked against fw_checksum before it is served.',
    format: FIRMWARE_SOURCES,
    default: ['dir', 'url', 'thingsboard'],
    env: 'COAP2MQTT_FIRMWARE_SOURCES',
  }),
  dir: setting({
    doc: 'Local directory of images, looked up as <dir>/<title>/<version>, <dir>/<title>-<version>.bin or <dir>/<title>-<version>; empty: none.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_FIRMWARE_DIR',
  }),
  thingsboardUrl: setting({
    doc: 'Base URL of ThingsBoard\'s HTTP API for the "thingsboard" source, e.g. "https://thingsboard.example.com"; empty: that source is skipped.',
    format: HTTP_URL,
    default: '',
    env: 'COAP2MQTT_FIRMWARE_THINGSBOARD_URL',
  }),
  cacheDir: setting({
    doc: 'Where verified images are kept, fetched once for all devices and across restarts; empty: <state.dir>/firmware. Elsewhere, the systemd unit only lets the service write there with ReadWritePaths= in a drop-in.',
    format: TEXT,
    default: '',
    env: 'COAP2MQTT_FIRMWARE_CACHE_DIR',
  }),
  cacheMaxBytes: setting({
    doc: 'Disk space the image cache may use; the least recently served images are deleted beyond it.',
    format: integer(1024 * 1024, 64 * 1024 * 1024 * 1024),
    default: 256 * 1024 * 1024,
    env: 'COAP2MQTT_FIRMWARE_CACHE_MAX_BYTES',
  }),
  maxImageBytes: setting({
    doc: 'Largest image the gateway fetches and serves; larger packages are refused (5.02) with a log line.',
    format: integer(1024, 1024 * 1024 * 1024),
    default: 16 * 1024 * 1024,
    env: 'COAP2MQTT_FIRMWARE_MAX_IMAGE_BYTES',
  }),
  fetchTimeoutMs: setting({
    doc: 'How long one download of an image from a source may take.',
    format: integer(1000, 3_600_000),
    default: 120_000,
    env: 'COAP2MQTT_FIRMWARE_FETCH_TIMEOUT_MS',
  }),
  requireChecksum: setting({
    doc: 'Refuse to serve an image whose package has no fw_checksum (URL packages may have none). false serves such images unverified, with a warning.',
    format: BOOLEAN,
    default: true,
    env: 'COAP2MQTT_FIRMWARE_REQUIRE_CHECKSUM',
  }),
};

export type FirmwareConfig = ConfigOf<typeof firmware>;

export function checkFirmware(config: { readonly firmware: FirmwareConfig }, warnings: string[]): void {
  // An empty firmware.thingsboardUrl is not warned about: most sites serve no packages, and a package
  // that no source can give is answered (and logged) with what to set.
  const { dir } = config.firmware;
  if (dir !== '') {
    try {
      accessSync(dir, constants.R_OK | constants.X_OK);
    } catch {
      warnings.push(`firmware.dir: cannot read directory "${dir}"; the "dir" firmware source finds nothing there`);
    }
  }
}
