// The upstream side most end-to-end files need: a real mosquitto standing in for ThingsBoard's broker and the
// ThingsBoard double on it, started once per file. After each test the cleanups the test registered run
// (newest first), gateway processes are killed when the file starts them, and the double forgets what it saw.
import { afterAll, afterEach, beforeAll } from 'vitest';
import { killAllGatewayProcesses } from './gateway-process.js';
import { Mosquitto } from './mosquitto.js';
import { ThingsBoardDouble } from './thingsboard-double.js';

export class UpstreamRig {
  /** Set before the file's first test. */
  broker!: Mosquitto;
  tb!: ThingsBoardDouble;
  readonly cleanups: Array<() => unknown> = [];
}

/** Registers the file's hooks; the rig's broker and double are there from the first test on. */
export function upstreamRig(options: { readonly gatewayProcesses?: boolean } = {}): UpstreamRig {
  const rig = new UpstreamRig();
  beforeAll(async () => {
    rig.broker = await Mosquitto.start();
    rig.tb = await ThingsBoardDouble.connect(rig.broker.url);
  });
  afterAll(async () => {
    await rig.tb?.close();
    await rig.broker?.dispose();
  });
  afterEach(async () => {
    if (options.gatewayProcesses) await killAllGatewayProcesses();
    for (const cleanup of rig.cleanups.splice(0).reverse()) await cleanup();
    rig.tb.clear();
  });
  return rig;
}
