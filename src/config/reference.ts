// docs/configuration.md, written from the schema alone: every key with its meaning, default, environment
// variable and format. `npm run docs:config` writes it; a unit test fails when the file is stale.
import { describeFormat } from './formats.js';
import { schema } from './schema.js';
import { settingsOf, type SettingAt } from './setting.js';

export const REFERENCE_PATH = 'docs/configuration.md';
export const REFERENCE_COMMAND = 'npm run docs:config';

/** Defaults longer than this are left out of the overview table (the key's own entry shows them). */
const OVERVIEW_DEFAULT_MAX = 40;

export function configurationReference(): string {
  const settings = settingsOf(schema);
  const sections = Object.keys(schema).map((section) => ({
    section,
    settings: settings.filter(({ key }) => key === section || key.startsWith(`${section}.`)),
  }));
  return [
    '# Configuration reference',
    '',
    `<!-- Generated from src/config/schema.ts and src/config/sections/ by \`${REFERENCE_COMMAND}\`; do not edit by hand. -->`,
    '',
    'The gateway takes its defaults, then the file (`--config FILE` or `COAP2MQTT_CONFIG`, JSON or JSON5), then',
    'environment variables, which win. Lists and objects in environment variables are written as JSON, e.g.',
    '`COAP2MQTT_FIRMWARE_SOURCES=\'["dir"]\'`. `coap2mqtt check-config` reports every problem at once, naming',
    'the key, the offending value and what is expected; `config/example.json5` shows every key with a comment.',
    '',
    '## Overview',
    '',
    '| Key | Default | Environment |',
    '|---|---|---|',
    ...settings.map(overviewRow),
    // A top-level setting (devices) is its own section: one heading, so its anchor stays its key's.
    ...sections.flatMap(({ section, settings: inSection }) =>
      inSection.length === 1 && inSection[0]?.key === section ? entry(inSection[0], '##') : ['', `## ${section}`, ...inSection.flatMap((one) => entry(one, '###'))],
    ),
    '',
  ].join('\n');
}

/** A key's heading anchor as GitHub and most renderers make it: "coap.port" → "coapport". */
export function anchorOf(key: string): string {
  return key.toLowerCase().replace(/[^a-z0-9 -]/g, '');
}

function overviewRow({ key, setting }: SettingAt): string {
  const fallback = JSON.stringify(setting.default);
  const shown = fallback.length > OVERVIEW_DEFAULT_MAX ? '(see the key)' : `\`${fallback}\``;
  return `| [\`${key}\`](#${anchorOf(key)}) | ${shown} | \`${setting.env}\` |`;
}

function entry({ key, setting }: SettingAt, heading: '##' | '###'): string[] {
  return [
    '',
    `${heading} \`${key}\``,
    '',
    // "<state.dir>" would be read as an HTML tag and vanish.
    setting.doc.replace(/</g, '&lt;').replace(/>/g, '&gt;'),
    '',
    `- Default: \`${JSON.stringify(setting.default)}\``,
    `- Environment: \`${setting.env}\``,
    `- Format: ${describeFormat(setting.format)}`,
    ...(setting.sensitive ? ['- Secret: its value is never printed, not even in error messages'] : []),
  ];
}
