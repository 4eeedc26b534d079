import { Context, type Effect, Schema, type Scope, type Stream } from "effect"
import type { Endpoint } from "./Transport.js"

/**
 * Datagram is the unreliable, unordered message edge under NAT traversal (issue 8): UDP in a node
 * (`layerUdp`, on node:dgram — Effect has no UDP abstraction), simulated in tests and sims
 * (`DatagramSim.ts`: seeded loss, duplication, reordering, latency, and NATs of the usual kinds).
 * The Rendezvous actor and the UDP session transport are its only users.
 */

/** MAX_DATAGRAM_BYTES is the largest payload sent: small enough for any path MTU (QUIC's 1,200). */
export const MAX_DATAGRAM_BYTES = 1_200

/** RECEIVE_BUFFER_DATAGRAMS bounds a socket's unread datagrams; beyond it new ones are dropped (UDP semantics). */
export const RECEIVE_BUFFER_DATAGRAMS = 1_024

/**
 * DatagramError: `in-use` (the address is bound), `too-large` (over MAX_DATAGRAM_BYTES), `closed`
 * (sent on a closed socket), `unreachable` (no route), `io` (anything else the OS reports).
 */
export class DatagramError extends Schema.TaggedError<DatagramError>()("DatagramError", {
  reason: Schema.Literal("in-use", "too-large", "closed", "unreachable", "io"),
  detail: Schema.String,
}) {
  override get message(): string {
    return `datagram ${this.reason}: ${this.detail}`
  }
}

/** ReceivedDatagram is one datagram and the address it came from (after any NAT on the way). */
export interface ReceivedDatagram {
  readonly from: Endpoint
  readonly data: Uint8Array
}

/**
 * DatagramSocket is one bound UDP socket. `send` never waits: the datagram is handed to the OS (or
 * the sim) or dropped, as UDP does; only local errors fail it. `received` is single-consumer and
 * bounded (RECEIVE_BUFFER_DATAGRAMS): when the owner does not keep up, new datagrams are dropped.
 */
export interface DatagramSocket {
  /** local is the bound address (the actual port when bound to port 0) */
  readonly local: Endpoint
  readonly send: (to: Endpoint, data: Uint8Array) => Effect.Effect<void, DatagramError>
  readonly received: Stream.Stream<ReceivedDatagram>
  /** close unbinds; `received` ends. Idempotent; also done when the bind's scope closes. */
  readonly close: Effect.Effect<void>
}

/** DatagramService is the contract every Datagram layer keeps (one contract test suite runs over both). */
export interface DatagramService {
  /** bind opens a socket at `at` (port 0: any free port), closed with the scope */
  readonly bind: (at: Endpoint) => Effect.Effect<DatagramSocket, DatagramError, Scope.Scope>
}

export class Datagrams extends Context.Tag("fibercoin/Datagrams")<Datagrams, DatagramService>() {}
