import { Context, Duration, Effect, Layer } from "effect"
import type { HeadersMessage, InvMessage, NotFoundMessage, SendHeadersMessage } from "../schema/wire.js"
import { Chain } from "./Chain.js"
import type { PeerHandle, PeerId } from "./net.js"

/** SyncConfig: block download limits and timeouts (Core's defaults where it has them). */
export interface SyncConfig {
  /** blocks requested from one peer at a time (Core's MAX_BLOCKS_IN_TRANSIT_PER_PEER) */
  readonly maxInFlightPerPeer: number
  /** blocks fetched at most this far above the active tip (Core's BLOCK_DOWNLOAD_WINDOW) */
  readonly window: number
  /** a peer holding the block the window waits on for this long is a staller: dropped, its blocks re-assigned */
  readonly stallTimeout: Duration.Duration
  /** any block request unanswered for this long is re-assigned and the peer dropped */
  readonly blockTimeout: Duration.Duration
  /** how often timeouts are checked */
  readonly tick: Duration.Duration
  /** how often a progress line is logged while behind the best header */
  readonly progressEvery: Duration.Duration
}

export const defaultSyncConfig: SyncConfig = {
  maxInFlightPerPeer: 16,
  window: 1024,
  stallTimeout: Duration.seconds(5),
  blockTimeout: Duration.seconds(60),
  tick: Duration.seconds(1),
  progressEvery: Duration.seconds(10),
}

/** SyncMessage is what a Peer hands to Sync: headers, and inv/notfound holding block items only. */
export type SyncMessage = HeadersMessage | InvMessage | NotFoundMessage | SendHeadersMessage

/**
 * SyncService is the Sync actor: headers-first block download from every synced peer and block
 * announcements (headers to peers that sent sendheaders, inv to the others).
 */
export interface SyncService {
  /** peerConnected: a peer finished its handshake (Sync sends it getheaders if it serves blocks) */
  readonly peerConnected: (peer: PeerHandle) => Effect.Effect<void>
  /** peerDisconnected: its in-flight blocks go back to the queue */
  readonly peerDisconnected: (id: PeerId) => Effect.Effect<void>
  readonly receive: (peer: PeerHandle, msg: SyncMessage) => Effect.Effect<void>
  /** receiveBlock: a `block` frame's payload, undecoded (the Chain decodes it) */
  readonly receiveBlock: (peer: PeerHandle, payload: Uint8Array) => Effect.Effect<void>
}

export class Sync extends Context.Tag("fibercoin/Sync")<Sync, SyncService>() {}

export const layer = (_config: SyncConfig): Layer.Layer<Sync, never, Chain> =>
  Layer.effect(
    Sync,
    Effect.gen(function* () {
      yield* Chain
      return yield* Effect.dieMessage("Sync: not implemented yet")
    }),
  )
