import type { Logger } from 'pino';
import type { AttributeStore } from '../devices/attribute-store.js';
import type { DeviceSessions } from '../devices/sessions.js';
import type { JsonValue } from '../model.js';
import type { AttributeAnswer } from '../upstream/gateway-api.js';
import type { UplinkContext } from './deliver.js';
import type { PendingAnswers } from './pending-answers.js';

/** Everything the bridge handlers share; built once by createBridge. */
export interface BridgeContext extends UplinkContext {
  readonly attributes: AttributeStore;
  readonly sessions: DeviceSessions;
  readonly attributeReads: PendingAnswers<AttributeAnswer>;
  readonly ownRpcs: PendingAnswers<JsonValue>;
  readonly log: Logger;
}
