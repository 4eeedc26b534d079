import { Effect, Either } from "effect"
import { initialPeerStats, type PeerHandle, type PeerInfo } from "../../src/actors/net.js"
import { type Misbehavior, scoreOf } from "../../src/actors/spamPolicy.js"
import { type Command, decodePayload, type WireMessage } from "../../src/schema/wire.js"

/** Sent is one message a fake peer was sent: decoded, also when it was sent raw. */
export interface Sent {
  readonly command: Command
  readonly message: WireMessage
  /** the payload when it was sent with sendRaw */
  readonly raw: Uint8Array | undefined
}

/** FakePeer is a PeerHandle that records what the actor under test sends it, for unit tests of Sync, Relay, AddrBook. */
export interface FakePeer extends PeerHandle {
  readonly sent: Array<Sent>
  /** misbehaviors lists what the actor under test reported (each also raises stats.banScore by its score) */
  readonly misbehaviors: Array<Misbehavior>
  /** disconnected holds the reason once `disconnect` was called */
  disconnected: string | undefined
  /** sentOf lists the messages of one command */
  readonly sentOf: <C extends Command>(command: C) => Array<Extract<WireMessage, { readonly _tag: C }>>
  /** clear forgets what was sent so far */
  readonly clear: () => void
}

/** fakePeer makes a handshaken peer `id` at 10.0.<id>.1:18444 (full node, outbound) with `info` overrides. */
export const fakePeer = (id: number, info: Partial<PeerInfo> = {}): FakePeer => {
  let stats = initialPeerStats
  const sent: Array<Sent> = []
  const misbehaviors: Array<Misbehavior> = []
  const peer: FakePeer = {
    info: {
      id,
      addr: { host: `10.0.${id & 0xff}.1`, port: 18444 },
      inbound: false,
      transport: "tcp",
      static: false,
      version: 1,
      subver: "/fake/",
      services: 1,
      startingHeight: 0,
      listenPort: 18444,
      theirView: { host: "10.9.9.9", port: 18444 },
      connectedAt: 0,
      ...info,
    },
    sent,
    misbehaviors,
    disconnected: undefined,
    send: (message) => Effect.sync(() => void sent.push({ command: message._tag, message, raw: undefined })),
    sendRaw: (command, payload) =>
      Effect.sync(() => {
        const decoded = decodePayload(command, payload)
        if (Either.isLeft(decoded)) throw new Error(`sendRaw ${command}: ${decoded.left.message}`)
        sent.push({ command, message: decoded.right, raw: payload })
      }),
    disconnect: (reason) =>
      Effect.sync(() => {
        peer.disconnected ??= reason
      }),
    stats: Effect.sync(() => stats),
    updateStats: (f) =>
      Effect.sync(() => {
        stats = f(stats)
      }),
    misbehave: (m) =>
      Effect.sync(() => {
        misbehaviors.push(m)
        stats = { ...stats, banScore: stats.banScore + scoreOf(m) }
      }),
    sentOf: <C extends Command>(command: C) =>
      sent
        .filter((s) => s.command === command)
        .map((s) => s.message as Extract<WireMessage, { readonly _tag: C }>),
    clear: () => {
      sent.length = 0
    },
  }
  return peer
}
