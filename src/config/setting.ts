// One configuration setting as convict takes it, typed so that the schema is the only place a key's type is
// written: a setting's format names the type of its values, its default must be of that type (or it does
// not compile), and ConfigOf reads the configuration's TypeScript type off the schema itself.

declare const valueType: unique symbol;

/**
 * A convict format (a registered format's name, a list of allowed values, or String), marked with the type
 * of the values it lets through. The mark exists only for the compiler; at run time it is the bare format.
 */
export type Format<T> = (string | readonly unknown[] | StringConstructor) & { readonly [valueType]?: T };

export type Setting<T> = {
  readonly doc: string;
  readonly format: Format<T>;
  /** Of the format's type: the format alone decides T (a mismatched default is a compile error). */
  readonly default: T;
  readonly env: `COAP2MQTT_${string}`;
  /** Holds secrets: convict hides it, and error lines never echo its value. */
  readonly sensitive?: true;
};

/** A setting whose default is checked against its format at compile time. */
export function setting<T>(spec: { readonly format: Format<T>; readonly default: NoInfer<T> } & Omit<Setting<T>, 'format' | 'default'>): Setting<T> {
  return spec;
}

/** The values a schema (or a section of it) yields: a setting gives its format's type, a section an object. */
export type ConfigOf<S> = S extends Setting<infer T> ? T : { readonly [K in keyof S]: ConfigOf<S[K]> };

/** Marks a format (a registered name, or convict's own) with the type of the values it accepts. */
export function typedFormat<T>(format: string | readonly unknown[] | StringConstructor): Format<T> {
  return format as Format<T>;
}

export interface SettingAt {
  /** Dotted, e.g. "coap.port". */
  readonly key: string;
  readonly setting: Setting<unknown>;
}

/** Every setting of a schema with its dotted key, in schema order. */
export function settingsOf(node: object, prefix = ''): SettingAt[] {
  return Object.entries(node).flatMap(([name, child]: [string, object]) => {
    const key = prefix === '' ? name : `${prefix}.${name}`;
    return isSettingNode(child) ? [{ key, setting: child }] : settingsOf(child, key);
  });
}

function isSettingNode(node: object): node is Setting<unknown> {
  return 'doc' in node && 'default' in node;
}
