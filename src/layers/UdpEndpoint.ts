import { Context, type Effect } from "effect"
import type { Endpoint } from "./Transport.js"
import type { SessionEndpoint } from "./UdpSession.js"

/**
 * UdpEndpoint is a node's one UDP port as its other parts see it (issue 8): the session endpoint
 * (UDP sessions in and out; the Rendezvous runs on its `other` view of the same port) and what the
 * node learned about its NAT. Node.ts builds it from `udp` in the config; the PeerManager will take
 * sessions from `sessions` and the RPC reports `nat` in getnetworkinfo.
 */

/** NatStatusKind: `unknown` until a rendezvous server answered (or with none configured), else the probe's verdict. */
export type NatStatusKind = "open" | "cone" | "symmetric" | "unknown"

/**
 * NatStatus is the latest NAT probe's result: the kind and, once a server saw us, our public endpoint;
 * `registeredAt` lists the rendezvous servers that keep a registration for us (others reach us as
 * `udp:<node key>@<server>` through any of them).
 */
export interface NatStatus {
  readonly kind: NatStatusKind
  readonly publicAddress: Endpoint | undefined
  readonly registeredAt: ReadonlyArray<Endpoint>
}

/** UdpEndpointService: the bound port, its sessions, and the NAT status (read by any fiber). */
export interface UdpEndpointService {
  /** nodeKey is this node's x-only key: what registrations are signed with and NAT'd peers are named by */
  readonly nodeKey: Uint8Array
  /** local is the bound UDP address (the actual port when `udp` asked for port 0) */
  readonly local: Endpoint
  readonly sessions: SessionEndpoint
  readonly nat: Effect.Effect<NatStatus>
}

export class UdpEndpoint extends Context.Tag("fibercoin/UdpEndpoint")<UdpEndpoint, UdpEndpointService>() {}
