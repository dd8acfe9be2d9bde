// MQTT packets read with mqtt-packet's parser, one whole frame at a time (framing.ts cut it), so a single
// parser serves every connection, each with its protocol level: it holds no half-read packet between
// frames, and no connection pays for a parser of its own (it would also keep the last CONNECT, password
// included, as its settings).
import mqttPacket, { type Packet, type Parser } from 'mqtt-packet';

/** The parser keeps the settings of the last CONNECT it read (mqtt-packet's parser.js). */
type SettingsParser = Parser & { settings: { protocolVersion: number } };

export class PacketReader {
  private parser = this.fresh();
  private packet: Packet | undefined;
  private error: Error | undefined;

  /**
   * The one packet a frame holds, or why it is not a packet the gateway can read. `protocolVersion`: the
   * connection's (a CONNECT says its own).
   */
  read(frame: Buffer, protocolVersion: number): Packet | Error {
    this.packet = undefined;
    this.error = undefined;
    this.parser.settings = { protocolVersion };
    this.parser.parse(frame);
    // The parser keeps the last CONNECT (its password too) as its settings: not past this frame.
    this.parser.settings = { protocolVersion: 4 };
    const { packet, error } = this;
    if (error || !packet) {
      // Whatever it kept of a bad frame must not spill into the next one.
      this.parser = this.fresh();
      return error ?? new Error('incomplete packet');
    }
    return packet;
  }

  private fresh(): SettingsParser {
    const parser = mqttPacket.parser({ protocolVersion: 4 }) as SettingsParser;
    parser.on('packet', (packet: Packet) => {
      this.packet = packet;
    });
    parser.on('error', (error: Error) => {
      this.error = error;
    });
    return parser;
  }
}
