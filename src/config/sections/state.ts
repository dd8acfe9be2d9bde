// Where the gateway keeps what must survive a restart.
import { NON_EMPTY_STRING } from '../formats.js';
import { setting, type ConfigOf } from '../setting.js';

export const state = {
  dir: setting({
    doc: 'Directory for the gateway\'s persistent state; created at start if missing and must be writable.',
    format: NON_EMPTY_STRING,
    default: 'state',
    env: 'COAP2MQTT_STATE_DIR',
  }),
};

export type StateConfig = ConfigOf<typeof state>;
