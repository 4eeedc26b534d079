import { Clock, Effect, Option, Schema } from "effect"
import { Mempool } from "../actors/Mempool.js"
import { PROTOCOL_VERSION } from "../actors/Peer.js"
import { Network } from "../actors/PeerManager.js"
import { type BanError, parseSubnet, SpamFilter } from "../actors/SpamFilter.js"
import { defaultSpamPolicy } from "../actors/spamPolicy.js"
import type { StorageError } from "../layers/ChainStore.js"
import { UdpEndpoint } from "../layers/UdpEndpoint.js"
import { PeerAddressString, peerAddressText } from "../schema/config.js"
import { toHex } from "../schema/hex.js"
import { endpointKey } from "../schema/netaddr.js"
import { invalidParameter, method, miscError, RpcError } from "./Server.js"

/** userAgent is the subversion this node announces in version messages (BIP14 style). */
export const userAgent = (version: string): string => `/fibercoin:${version}/`

const peerAddress = PeerAddressString.pipe(
  Schema.annotations({
    message: () =>
      'expected "host:port" (IPv6 in brackets, port 0-65535) or "udp:<64-hex node key>@host:port"',
  }),
)

const networkError = (e: { readonly code: number; readonly message: string }) =>
  new RpcError({ code: e.code, message: e.message })

/** banError keeps a refused ban's bitcoind code (-23, -30); a storage failure is -1. */
const banError = (e: BanError | StorageError) =>
  e._tag === "BanError" ? new RpcError({ code: e.code, message: e.message }) : miscError(e.message)

const bantime = Schema.NullOr(
  Schema.Int.pipe(
    Schema.nonNegative(),
    Schema.annotations({ message: () => "expected a whole number of seconds >= 0" }),
  ),
)

const nowSeconds = Effect.map(Clock.currentTimeMillis, (ms) => Math.floor(ms / 1000))

/**
 * netMethods are the P2P RPCs, bitcoind-shaped: getpeerinfo, getconnectioncount, getnetworkinfo,
 * addnode, disconnectnode, setban, listbanned, clearbanned. They need the Network service (the
 * PeerManager) and the SpamFilter (the bans); each runs on the RPC server's request fiber.
 */
export const netMethods = (version: string) => [
  method(
    "getpeerinfo",
    Schema.Tuple(),
    () =>
      Effect.gen(function* () {
        const peers = yield* (yield* Network).peers
        return peers.map(({ info, stats }) => ({
          id: info.id,
          addr: endpointKey(info.addr),
          inbound: info.inbound,
          transport: info.transport,
          version: info.version,
          subver: info.subver,
          services: info.services,
          startingheight: info.startingHeight,
          synced_headers: stats.syncedHeaders,
          synced_blocks: stats.syncedBlocks,
          banscore: stats.banScore,
          bytessent: stats.bytesSent,
          bytesrecv: stats.bytesRecv,
          conntime: Math.floor(info.connectedAt / 1000),
          pingtime: stats.pingMs === undefined ? null : stats.pingMs / 1000,
        }))
      }),
    "connected peers: address, direction, version, sync heights, traffic, ping",
  ),
  method(
    "getconnectioncount",
    Schema.Tuple(),
    () =>
      Effect.map(
        Effect.flatMap(Network, (n) => n.connectionCount),
        (c) => c.inbound + c.outbound,
      ),
    "number of connected peers",
  ),
  method(
    "getnetworkinfo",
    Schema.Tuple(),
    () =>
      Effect.gen(function* () {
        const network = yield* Network
        const count = yield* network.connectionCount
        const local = yield* network.localAddresses
        const mempool = yield* (yield* Mempool).info
        const udp = yield* Effect.serviceOption(UdpEndpoint)
        const nat = Option.isSome(udp) ? yield* udp.value.nat : undefined
        return {
          version: PROTOCOL_VERSION,
          subversion: userAgent(version),
          connections: count.inbound + count.outbound,
          connections_in: count.inbound,
          connections_out: count.outbound,
          localaddresses: local.map((ep) => ({ address: ep.host, port: ep.port })),
          relayfee: mempool.mempoolminfee,
          // UDP (issue 8): the bound port, the NAT kind a rendezvous server told us, our public endpoint
          ...(Option.isSome(udp)
            ? { udp: { address: udp.value.local.host, port: udp.value.local.port } }
            : {}),
          nat: nat?.kind ?? "unknown",
          ...(nat?.publicAddress === undefined
            ? {}
            : { publicaddress: { address: nat.publicAddress.host, port: nat.publicAddress.port } }),
          // how others reach this node over UDP: its key through each server it is registered at
          ...(Option.isSome(udp)
            ? {
                nodekey: toHex(udp.value.nodeKey),
                udpaddresses: (nat?.registeredAt ?? []).map((server) =>
                  peerAddressText({ ...server, nodeKey: udp.value.nodeKey }),
                ),
              }
            : {}),
        }
      }),
    "network state: connections, local addresses as peers see them, relay fee",
  ),
  method(
    "addnode",
    Schema.Tuple(peerAddress, Schema.Literal("add", "remove", "onetry")),
    ([ep, command]) =>
      Effect.flatMap(Network, (n) => n.addNode(ep, command)).pipe(
        Effect.mapError(networkError),
        Effect.as(null),
      ),
    'keep a peer connected ("add"), stop ("remove"), or dial it once ("onetry"); udp:<node key>@<server> reaches a NAT\'d node over UDP',
    ["node", "command"],
  ),
  method(
    "disconnectnode",
    Schema.Tuple(peerAddress),
    ([ep]) =>
      Effect.flatMap(Network, (n) => n.disconnectNode(ep)).pipe(
        Effect.mapError(networkError),
        Effect.as(null),
      ),
    "close the connections to a peer",
    ["address"],
  ),
  method(
    "setban",
    Schema.Tuple(
      Schema.String,
      Schema.Literal("add", "remove"),
      Schema.optionalElement(bantime),
      Schema.optionalElement(Schema.Boolean),
    ),
    ([subnet, command, seconds, absolute]) =>
      Effect.gen(function* () {
        const spam = yield* SpamFilter
        if (command === "remove") return yield* Effect.as(Effect.mapError(spam.unban(subnet), banError), null)
        // the filter also bans a simulated host by name; an operator names IPs (bitcoind: no DNS here)
        if (parseSubnet(subnet)?._tag !== "Range")
          return yield* new RpcError({ code: -30, message: `Error: Invalid IP/Subnet: ${subnet}` })
        const given = seconds ?? 0
        const now = yield* nowSeconds
        if (absolute === true && given <= now)
          return yield* invalidParameter("Error: Absolute timestamp is in the past")
        // 0 or absent: the configured ban time; a node that bans nothing itself (0) still honours
        // an operator's ban, for bitcoind's default of a day
        const fallback = spam.policy.banSeconds > 0 ? spam.policy.banSeconds : defaultSpamPolicy.banSeconds
        const entry = yield* spam
          .ban(subnet, {
            ...(absolute === true ? { until: given } : { seconds: given > 0 ? given : fallback }),
            reason: "manually added",
            exclusive: true,
          })
          .pipe(Effect.mapError(banError))
        yield* (yield* Network).disconnectWhere(
          (host) => spam.matches(entry.subnet, host),
          `banned (${entry.subnet}) by setban`,
        )
        return null
      }),
    'ban an IP or subnet (CIDR) for bantime seconds (0: limits.banSeconds), or until the unix time bantime when absolute; connected peers in it are dropped. "remove" lifts a ban',
    ["subnet", "command", "bantime", "absolute"],
  ),
  method(
    "listbanned",
    Schema.Tuple(),
    () =>
      Effect.gen(function* () {
        const bans = yield* (yield* SpamFilter).banned.pipe(Effect.mapError(banError))
        const now = yield* nowSeconds
        return bans.map((b) => ({
          address: b.subnet,
          ban_created: b.createdAt,
          banned_until: b.until,
          ban_duration: b.until - b.createdAt,
          time_remaining: Math.max(0, b.until - now),
          ban_reason: b.reason,
        }))
      }),
    "the bans in force: address (CIDR), ban_created, banned_until, ban_duration, time_remaining (seconds), ban_reason",
  ),
  method(
    "clearbanned",
    Schema.Tuple(),
    () => Effect.flatMap(SpamFilter, (s) => s.clearBanned).pipe(Effect.mapError(banError), Effect.as(null)),
    "lift every ban",
  ),
]
