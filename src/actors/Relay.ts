import { Context, Duration, Effect, Layer } from "effect"
import type { InvMessage, NotFoundMessage } from "../schema/wire.js"
import { Mempool } from "./Mempool.js"
import type { PeerHandle, PeerId } from "./net.js"

/** RelayConfig: transaction relay timing and memory bounds. */
export interface RelayConfig {
  /** announcements to a peer are batched and sent this often (trickle) */
  readonly trickleInterval: Duration.Duration
  /** a requested transaction not delivered within this is asked of another announcer */
  readonly requestTimeout: Duration.Duration
  /** per-peer memory of transactions it knows (announced to us, sent by us, got from it) */
  readonly maxKnownPerPeer: number
}

export const defaultRelayConfig: RelayConfig = {
  trickleInterval: Duration.seconds(2),
  requestTimeout: Duration.seconds(60),
  maxKnownPerPeer: 50_000,
}

/** RelayMessage is what a Peer hands to Relay: inv/notfound holding transaction items only. */
export type RelayMessage = InvMessage | NotFoundMessage

/**
 * RelayService is the Relay actor: transaction inv → getdata → tx with one request per item at a
 * time (timeout, then another announcer), trickled announcements, nothing echoed to its source.
 */
export interface RelayService {
  readonly peerConnected: (peer: PeerHandle) => Effect.Effect<void>
  readonly peerDisconnected: (id: PeerId) => Effect.Effect<void>
  readonly receive: (peer: PeerHandle, msg: RelayMessage) => Effect.Effect<void>
  /** receiveTx: a `tx` frame's payload, undecoded (the Mempool decodes it) */
  readonly receiveTx: (peer: PeerHandle, payload: Uint8Array) => Effect.Effect<void>
}

export class Relay extends Context.Tag("fibercoin/Relay")<Relay, RelayService>() {}

export const layer = (_config: RelayConfig): Layer.Layer<Relay, never, Mempool> =>
  Layer.effect(
    Relay,
    Effect.gen(function* () {
      yield* Mempool
      return yield* Effect.dieMessage("Relay: not implemented yet")
    }),
  )
