import { Effect, Schema } from "effect"
import { Mempool } from "../actors/Mempool.js"
import { PROTOCOL_VERSION } from "../actors/Peer.js"
import { Network } from "../actors/PeerManager.js"
import { HostPortString } from "../schema/config.js"
import { endpointKey } from "../schema/netaddr.js"
import { method, RpcError } from "./Server.js"

/** userAgent is the subversion this node announces in version messages (BIP14 style). */
export const userAgent = (version: string): string => `/fibercoin:${version}/`

const hostPort = HostPortString.pipe(
  Schema.annotations({ message: () => 'expected "host:port" (IPv6 in brackets) with a port 0-65535' }),
)

const networkError = (e: { readonly code: number; readonly message: string }) =>
  new RpcError({ code: e.code, message: e.message })

/**
 * netMethods are the P2P RPCs, bitcoind-shaped: getpeerinfo, getconnectioncount, getnetworkinfo,
 * addnode, disconnectnode. They need the Network service (the PeerManager).
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
          transport: "tcp",
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
        return {
          version: PROTOCOL_VERSION,
          subversion: userAgent(version),
          connections: count.inbound + count.outbound,
          connections_in: count.inbound,
          connections_out: count.outbound,
          localaddresses: local.map((ep) => ({ address: ep.host, port: ep.port })),
          relayfee: mempool.mempoolminfee,
        }
      }),
    "network state: connections, local addresses as peers see them, relay fee",
  ),
  method(
    "addnode",
    Schema.Tuple(hostPort, Schema.Literal("add", "remove", "onetry")),
    ([ep, command]) =>
      Effect.flatMap(Network, (n) => n.addNode(ep, command)).pipe(
        Effect.mapError(networkError),
        Effect.as(null),
      ),
    'keep a peer connected ("add"), stop ("remove"), or dial it once ("onetry")',
    ["node", "command"],
  ),
  method(
    "disconnectnode",
    Schema.Tuple(hostPort),
    ([ep]) =>
      Effect.flatMap(Network, (n) => n.disconnectNode(ep)).pipe(
        Effect.mapError(networkError),
        Effect.as(null),
      ),
    "close the connections to a peer",
    ["address"],
  ),
]
