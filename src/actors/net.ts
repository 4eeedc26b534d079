import { Context, type Effect } from "effect"
import type { Endpoint } from "../layers/Transport.js"
import type { Command, WireMessage } from "../schema/wire.js"
import type { Misbehavior } from "./spamPolicy.js"

/**
 * net.ts holds what the P2P actors share: the handle of a connected peer (Peer.ts makes one per
 * connection), its statistics, and the probe tests use to count messages. The actors themselves:
 *
 * - Peer (one per connection): handshake, ping, timeouts, send budget; routes what it reads.
 * - PeerManager: which connections exist (outbound targets, inbound slots, eviction, backoff) and
 *   the network RPCs.
 * - Sync: headers-first block download and block announcements.
 * - Relay: transaction announcements, requests and their retries.
 * - AddrBook: known addresses in new/tried buckets, outbound selection, getaddr answers.
 */

/** PeerId numbers connections in the order they were made, from 1; never reused within a run. */
export type PeerId = number

/**
 * PeerInfo is what the handshake told us about a peer; fixed once the handshake is done.
 */
export interface PeerInfo {
  readonly id: PeerId
  /** the remote end of the connection (for inbound peers: their ephemeral port) */
  readonly addr: Endpoint
  readonly inbound: boolean
  /** the medium: a TCP connection or a UDP session (NAT traversal) */
  readonly transport: "tcp" | "udp"
  /** a configured peer (`connect`/`addnode`): never evicted, outside the subnet caps */
  readonly static: boolean
  readonly version: number
  readonly subver: string
  /** SERVICE_* bits */
  readonly services: number
  readonly startingHeight: number
  /** the port the peer says it listens on (0: none); with `addr.host`, its self-announced address */
  readonly listenPort: number
  /** the address the peer sees us at (its public-IP echo), as a host string and port */
  readonly theirView: Endpoint
  /** connection time, ms since the epoch (Clock) */
  readonly connectedAt: number
}

/**
 * PeerStats change while the peer is connected: the Peer actor keeps the byte counts and ping time,
 * Sync the synced heights; the ban score mirrors the spam filter's misbehaviour score.
 */
export interface PeerStats {
  readonly bytesSent: number
  readonly bytesRecv: number
  /** last measured ping round trip, ms; undefined until the first pong */
  readonly pingMs: number | undefined
  /** height of the last header we know the peer has (-1: none yet) */
  readonly syncedHeaders: number
  /** height of the last block we know the peer has (-1: none yet) */
  readonly syncedBlocks: number
  readonly banScore: number
  /** ms since the epoch of the last block / transaction this peer was first to give us (eviction protection) */
  readonly lastBlockAt: number
  readonly lastTxAt: number
}

/** initialPeerStats are a peer's stats at its handshake: nothing sent or measured yet. */
export const initialPeerStats: PeerStats = {
  bytesSent: 0,
  bytesRecv: 0,
  pingMs: undefined,
  syncedHeaders: -1,
  syncedBlocks: -1,
  banScore: 0,
  lastBlockAt: 0,
  lastTxAt: 0,
}

/**
 * PeerHandle is how other actors talk to one connected peer. Sends never wait: the frame is queued
 * on the connection, and a peer whose unsent bytes exceed its send budget is disconnected (a peer that
 * does not read is dropped, not buffered without bound).
 */
export interface PeerHandle {
  readonly info: PeerInfo
  /** send encodes and queues one message */
  readonly send: (msg: WireMessage) => Effect.Effect<void>
  /** sendRaw queues an already-encoded payload (a stored block, a mempool tx) without re-encoding it */
  readonly sendRaw: (command: Command, payload: Uint8Array) => Effect.Effect<void>
  /** disconnect closes the connection (idempotent); `reason` goes to the log */
  readonly disconnect: (reason: string) => Effect.Effect<void>
  readonly stats: Effect.Effect<PeerStats>
  /** updateStats changes the stats that other actors own (synced heights, last block/tx times) */
  readonly updateStats: (f: (s: PeerStats) => PeerStats) => Effect.Effect<void>
  /**
   * misbehave reports what the peer did wrong to the spam filter (its score goes up by the policy's
   * mapping); at the ban threshold the peer is disconnected and its address banned
   */
  readonly misbehave: (m: Misbehavior) => Effect.Effect<void>
}

/** ProbeEvent is one message crossing a connection, as the probe sees it. */
export interface ProbeEvent {
  readonly direction: "in" | "out"
  readonly local: Endpoint
  readonly remote: Endpoint
  readonly peer: PeerId
  readonly command: Command
  /** the decoded message; undefined for raw payloads (blocks, transactions) */
  readonly message: WireMessage | undefined
  /** the raw payload for `block` and `tx` frames */
  readonly payload: Uint8Array | undefined
}

/**
 * NetProbe observes every message a node's peers send and receive. The default does nothing; the
 * multi-node tests provide one that counts messages (no inv twice from one peer, nothing echoed back).
 */
export class NetProbe extends Context.Reference<NetProbe>()("fibercoin/NetProbe", {
  defaultValue: () => ({ observe: (_event: ProbeEvent): void => {} }),
}) {}
