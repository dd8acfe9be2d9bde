// `npm run docs:config`: rewrites docs/configuration.md from the schema (see reference.ts).
import { writeFileSync } from 'node:fs';
import { configurationReference, REFERENCE_PATH } from './reference.js';

const target = new URL(`../../${REFERENCE_PATH}`, import.meta.url);
writeFileSync(target, configurationReference());
process.stdout.write(`wrote ${REFERENCE_PATH}\n`);
