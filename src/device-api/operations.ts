// The gateway's device operations, as the request metrics label them, whatever the dialect's paths or the
// transport. Never the path itself, which holds the device's access token.

/**
 * `unknown`: under a dialect's prefix but no known feature, or refused for its options before its path was
 * read; `other`: a path outside every dialect.
 */
export const OPERATIONS = [
  'unknown',
  'other',
  'telemetry',
  'attributes',
  'attributes_read',
  'attributes_observe',
  'rpc_observe',
  'rpc_reply',
  'client_rpc',
  'claim',
  'provision',
  'firmware',
  'values_read',
] as const;
export type OperationName = (typeof OPERATIONS)[number];
export const Operation = Object.fromEntries(OPERATIONS.map((name, index) => [name, index])) as { readonly [K in OperationName]: number };
