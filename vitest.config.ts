import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // End-to-end tests start real brokers and libcoap clients; CoAP retransmission alone takes seconds.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: keep parallel workers modest so timing-sensitive exchanges stay realistic.
    maxWorkers: 2,
  },
});
