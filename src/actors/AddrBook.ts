import { Context, Effect, Layer, type Option } from "effect"
import { ChainStore } from "../layers/ChainStore.js"
import type { Endpoint } from "../layers/Transport.js"
import type { AddrEntry } from "../schema/wire.js"
import type { PeerInfo } from "./net.js"

/** AddrBookConfig: sizes of the book and the outbound subnet caps. */
export interface AddrBookConfig {
  /** outbound peers per /24 (IPv6 /64) among non-static peers */
  readonly maxOutboundPer24: number
  /** outbound peers per /16 (IPv6 /48) among non-static peers */
  readonly maxOutboundPer16: number
  /** outbound peers per /8 (IPv6 /32) among non-static peers */
  readonly maxOutboundPer8: number
}

export const defaultAddrBookConfig: AddrBookConfig = {
  maxOutboundPer24: 1,
  maxOutboundPer16: 2,
  maxOutboundPer8: 4,
}

/**
 * AddrBookService is the AddrBook actor: addresses in new/tried buckets keyed by network group
 * (no /16 can fill the book), persisted in ChainStore's `addr` table.
 */
export interface AddrBookService {
  /**
   * addGossip stores entries from a peer's addr message (bucketed by the sender's group too) and
   * returns those fit to relay onward: new to us, gossipable, within the sender's addr rate limit.
   * An entry whose host is the sender's own host is a self-announcement (see addSelfAnnounced).
   */
  readonly addGossip: (from: PeerInfo, entries: ReadonlyArray<AddrEntry>) => Effect.Effect<ReadonlyArray<AddrEntry>>
  /**
   * addSelfAnnounced stores a peer's own address (its host and version listenPort) as unverified:
   * it may be dialled, but is never gossiped until markGood proves it.
   */
  readonly addSelfAnnounced: (peer: PeerInfo) => Effect.Effect<void>
  /** markAttempt records a dial (for backoff and dropping addresses that never answer) */
  readonly markAttempt: (ep: Endpoint) => Effect.Effect<void>
  /** markGood: an outbound connection to `ep` completed its handshake: tried, verified, gossipable */
  readonly markGood: (ep: Endpoint, services: number) => Effect.Effect<void>
  /**
   * select picks an address for a new outbound connection that keeps the subnet caps given the
   * current non-static outbound peers `current`, skipping `exclude` (endpointKey strings: connected,
   * being dialled); none when nothing fits.
   */
  readonly select: (
    current: ReadonlyArray<Endpoint>,
    exclude: ReadonlySet<string>,
  ) => Effect.Effect<Option.Option<Endpoint>>
  /** getAddr answers a getaddr: a cached random sample of gossipable addresses (never the whole book) */
  readonly getAddr: Effect.Effect<ReadonlyArray<AddrEntry>>
  readonly size: Effect.Effect<{ readonly new: number; readonly tried: number }>
}

export class AddrBook extends Context.Tag("fibercoin/AddrBook")<AddrBook, AddrBookService>() {}

export const layer = (_config: AddrBookConfig): Layer.Layer<AddrBook, never, ChainStore> =>
  Layer.effect(
    AddrBook,
    Effect.gen(function* () {
      yield* ChainStore
      return yield* Effect.dieMessage("AddrBook: not implemented yet")
    }),
  )
