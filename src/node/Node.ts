import * as os from "node:os"
import * as path from "node:path"
import { Clock, Context, Deferred, Duration, Effect, Either, Layer, Option, Ref, Schedule } from "effect"
import * as AddrBookActor from "../actors/AddrBook.js"
import * as ChainActor from "../actors/Chain.js"
import { Chain } from "../actors/Chain.js"
import * as FilterIndexActor from "../actors/FilterIndex.js"
import * as LightClientActor from "../actors/LightClient.js"
import { LightClient } from "../actors/LightClient.js"
import * as LightMempool from "../actors/LightMempool.js"
import * as MempoolActor from "../actors/Mempool.js"
import * as MinerActor from "../actors/Miner.js"
import { defaultPeerTimings } from "../actors/Peer.js"
import * as PeerManager from "../actors/PeerManager.js"
import * as RelayActor from "../actors/Relay.js"
import * as RendezvousActor from "../actors/Rendezvous.js"
import { Rendezvous, type RendezvousLimits, type RendezvousService } from "../actors/Rendezvous.js"
import * as SnapshotsActor from "../actors/Snapshots.js"
import * as SpamFilterActor from "../actors/SpamFilter.js"
import * as SyncActor from "../actors/Sync.js"
import { defaultSpamPolicy, type SpamPolicy } from "../actors/spamPolicy.js"
import * as WalletActor from "../actors/Wallet.js"
import { Wallet } from "../actors/Wallet.js"
import { decodeAddress } from "../consensus/address.js"
import { networks } from "../consensus/params.js"
import { type ChainStore, layerMemory } from "../layers/ChainStore.js"
import { layerLmdb } from "../layers/ChainStoreLmdb.js"
import { DatagramError, Datagrams } from "../layers/Datagram.js"
import { layerUdp } from "../layers/DatagramUdp.js"
import * as Entropy from "../layers/Entropy.js"
import * as Keystore from "../layers/Keystore.js"
import * as NodeIdentity from "../layers/NodeIdentity.js"
import { layerDefault, type Signatures } from "../layers/Signatures.js"
import { layerInline, layerPool } from "../layers/SigVerifier.js"
import { type Endpoint, layerTcp, type Transport } from "../layers/Transport.js"
import { type NatStatus, UdpEndpoint } from "../layers/UdpEndpoint.js"
import { makeSessionEndpoint, sessionKeysFromSecret } from "../layers/UdpSession.js"
import { lightChainMethods } from "../rpc/lightMethods.js"
import { chainMethods, walletMethods } from "../rpc/methods.js"
import { netMethods, userAgent } from "../rpc/netMethods.js"
import { proofMethods } from "../rpc/proofMethods.js"
import * as RpcServer from "../rpc/Server.js"
import { snapshotMethods } from "../rpc/snapshotMethods.js"
import { ConfigError, type NodeConfig } from "../schema/config.js"
import { endpointKey } from "../schema/netaddr.js"
import type { PublicKey } from "../schema/primitives.js"
import { SERVICE_FILTERS, SERVICE_FULL, SERVICE_LIGHT, SERVICE_MINER } from "../schema/wire.js"
import { VERSION } from "../version.js"
import { snapshotsAtStart, startFromSnapshot } from "./snapshot.js"

/**
 * services builds every service of a node from its configuration, without the RPC server: storage
 * (LMDB in the data directory, or memory), signatures, the verification pool, the Chain, Mempool,
 * Keystore and Wallet actors. The library entry embeds a node with this layer.
 */
export const services = (config: NodeConfig, options: NodeOptions = {}) =>
  (config.role === "light" ? lightServices(config, options) : fullServices(config, options)).pipe(
    Layer.provide(entropyOf(options)),
  )

/**
 * entropyOf is the node's Entropy (the OS CSPRNG unless `options.entropy` seeds it). `services` and
 * `udp` both take it; one layer value, so a node builds it once and a seeded stream is not repeated.
 */
const entropyOf = (options: NodeOptions): Layer.Layer<Entropy.Entropy> =>
  options.entropy ?? Entropy.layerCrypto

/** base is storage, signatures and the verification pool: what every role runs on. */
const base = (config: NodeConfig, options: NodeOptions) => {
  // the LMDB layer keeps its files in <dataDir>/chainstate and locks the whole data directory
  // a simulation's crash-restart passes the store that outlives the node (`options.store`)
  const store = options.store ?? (config.storage === "lmdb" ? layerLmdb(config.dataDir) : layerMemory)
  const verifier =
    options.verifier === "inline"
      ? layerInline().pipe(Layer.provide(layerDefault))
      : layerPool({ workers: os.availableParallelism() })
  return Layer.mergeAll(store, layerDefault, verifier)
}

/** keystoreOf is the wallet's keystore: in the data directory (LMDB) or memory, with the configured passphrase. */
const keystoreOf = (config: NodeConfig, options: NodeOptions) => {
  if (options.keystore !== undefined) return options.keystore
  const passphrase = config.wallet.passphrase ?? process.env.FIBERCOIN_WALLET_PASSPHRASE
  return Keystore.layer({
    ...(config.storage === "lmdb" ? { dataDir: config.dataDir } : {}),
    ...(passphrase === undefined ? {} : { passphrase }),
    network: networks[config.network],
  }).pipe(Layer.provide(layerDefault))
}

/**
 * lightServices is a light node's (issue 9): the Chain actor for headers only (Sync feeds it no
 * blocks), the LightClient (filters, matching blocks, the wallet's coins) as the wallet's source,
 * the light pool (only transactions made here) as the Mempool, and the Wallet over them.
 */
const lightServices = (config: NodeConfig, options: NodeOptions) => {
  const params = networks[config.network]
  const chain = ChainActor.layer(chainConfigOf(params, options)).pipe(
    Layer.provideMerge(base(config, options)),
  )
  const client = LightClientActor.layer(LightClientActor.defaultLightClientConfig(params)).pipe(
    Layer.provideMerge(Layer.merge(chain, keystoreOf(config, options))),
  )
  const source = Layer.effect(
    WalletActor.WalletSource,
    Effect.map(LightClient, (l): WalletActor.WalletSourceService => l),
  ).pipe(Layer.provideMerge(client))
  const pool = LightMempool.layer.pipe(Layer.provideMerge(source))
  return WalletActor.layerOver({ network: params }).pipe(Layer.provideMerge(pool))
}

/** chainConfigOf is the Chain's config, with the simulator's planted bug when a test asks for one. */
const chainConfigOf = (
  params: ChainActor.ChainConfig["params"],
  options: NodeOptions,
): ChainActor.ChainConfig => ({
  ...ChainActor.defaultChainConfig(params),
  ...(options.plantedBug === undefined ? {} : { plantedBug: options.plantedBug }),
})

const fullServices = (config: NodeConfig, options: NodeOptions) => {
  const params = networks[config.network]
  const chain = ChainActor.layer(chainConfigOf(params, options)).pipe(
    Layer.provideMerge(base(config, options)),
  )
  const mempool = MempoolActor.layer({
    ...MempoolActor.defaultMempoolPolicy,
    maxBytes: config.limits.maxMempoolBytes,
  }).pipe(Layer.provideMerge(chain))
  return WalletActor.layer({ network: params }).pipe(
    Layer.provideMerge(Layer.merge(mempool, keystoreOf(config, options))),
  )
}

/** servicesOf is the SERVICE_* bits a role announces; full and miner nodes run the FilterIndex and serve filters. */
export const servicesOf = (role: NodeConfig["role"]): number =>
  role === "light"
    ? SERVICE_LIGHT
    : role === "miner"
      ? SERVICE_FULL | SERVICE_MINER | SERVICE_FILTERS
      : SERVICE_FULL | SERVICE_FILTERS

/**
 * filterIndexOf is the compact filter index (issue 9) on full and miner nodes, below the PeerManager
 * so their Peers serve getcfilters/getcfheaders/getcfcheckpt; nothing on a light node.
 */
const filterIndexOf = (config: NodeConfig): Layer.Layer<never, never, Chain | ChainStore> =>
  config.role === "light" ? Layer.empty : FilterIndexActor.layer

/**
 * netConfigOf derives the PeerManager's settings from the node config: the network's magic, the
 * role's services, the handshake timeout and connection limits; Core's timings for the rest.
 */
export const netConfigOf = (config: NodeConfig): PeerManager.NetConfig => ({
  peer: {
    ...defaultPeerTimings,
    magic: networks[config.network].magic,
    services: servicesOf(config.role),
    userAgent: userAgent(VERSION),
    handshakeTimeout: Duration.seconds(config.limits.handshakeTimeoutSeconds),
  },
  // a light node serves no blocks: it neither listens nor announces an address others would dial
  listen: config.role === "light" ? undefined : config.listen,
  connect: config.connect,
  addnode: config.addnode,
  maxOutbound: config.limits.maxOutbound,
  maxOutboundUdp: config.limits.maxOutboundUdp,
  maxInbound: config.limits.maxInbound,
  connectTimeout: Duration.seconds(10),
  retryBase: Duration.seconds(1),
  retryMax: Duration.minutes(1),
  tick: Duration.seconds(1),
  feelerInterval: Duration.minutes(2),
  selfAnnounceInterval: Duration.hours(24),
})

/**
 * spamPolicyOf is the spam policy a config asks for: its `spam` keys over the defaults, bans of
 * limits.banSeconds. The registration caps (`spam.maxRegistrations`, `spam.maxRegistrationsPerIp`)
 * are the Rendezvous's, not the filter's: `udp` takes them.
 */
export const spamPolicyOf = (config: NodeConfig): SpamPolicy => {
  const { maxRegistrations: _total, maxRegistrationsPerIp: _perIp, ...policy } = config.spam
  const given = Object.entries(policy).filter(([, v]) => v !== undefined)
  return { ...defaultSpamPolicy, ...Object.fromEntries(given), banSeconds: config.limits.banSeconds }
}

/** NodeOptions are what an embedding program or a simulation swaps: the transport (default TCP). */
export interface NodeOptions {
  readonly transport?: Layer.Layer<Transport>
  /** the datagram layer `udp` is bound on (default node:dgram; sims pass `DatagramSim.layer(host)`) */
  readonly datagrams?: Layer.Layer<Datagrams>
  /** the node's identity (default `<dataDir>/nodekey` with LMDB storage, a fresh one in memory) */
  readonly identity?: Layer.Layer<NodeIdentity.NodeIdentity, never, Signatures>
  /** overrides of the Rendezvous limits and timers */
  readonly rendezvous?: Partial<RendezvousLimits>
  /** overrides of the derived network settings (simulations shorten timeouts) */
  readonly net?: Partial<PeerManager.NetConfig>
  readonly sync?: SyncActor.SyncConfig
  readonly relay?: RelayActor.RelayConfig
  /** overrides of the spam policy derived from the config */
  readonly spam?: Partial<SpamPolicy>
  /** "inline" verifies signatures on the calling fiber (simulations: no threads); default a worker pool */
  readonly verifier?: "pool" | "inline"
  /**
   * the source of keys, wallet seeds, signature aux and rendezvous secrets (default the OS CSPRNG;
   * simulations pass `Entropy.layerSeeded`, never a production node)
   */
  readonly entropy?: Layer.Layer<Entropy.Entropy>
  /**
   * a deliberate bug for the simulator's planted-bug check (tests and `sim --planted-bug` only; never
   * from node.json or the node's flags)
   */
  readonly plantedBug?: ChainActor.PlantedBug
  /**
   * the storage layer instead of the config's (simulations: one memory store kept across a node's
   * crash and restart, as LMDB keeps its files)
   */
  readonly store?: Layer.Layer<ChainStore>
  /** the wallet's keystore instead of the config's (simulations: one kept across a crash and restart) */
  readonly keystore?: Layer.Layer<Keystore.Keystore>
}

/**
 * network is the P2P side of a node over the given services: the Sync, Relay and AddrBook actors and
 * the PeerManager (which listens and runs one Peer actor per connection). It takes the SpamFilter
 * from below (`udp` builds it), so TCP peers and datagrams answer to the same filter and bans.
 */
const network = (config: NodeConfig, options: NodeOptions) => {
  const actors = Layer.mergeAll(
    // a light node syncs headers only and fetches no one else's transactions (issue 9)
    SyncActor.layer({
      ...(options.sync ?? SyncActor.defaultSyncConfig),
      ...(config.role === "light" ? { downloadBlocks: false } : {}),
    }),
    RelayActor.layer({
      ...(options.relay ?? RelayActor.defaultRelayConfig),
      ...(config.role === "light" ? { requestTransactions: false } : {}),
    }),
    AddrBookActor.layer(AddrBookActor.defaultAddrBookConfig).pipe(Layer.provide(entropyOf(options))),
    SnapshotsActor.layer(SnapshotsActor.defaultSnapshotsConfig(networks[config.network])),
  )
  return PeerManager.layer({ ...netConfigOf(config), ...options.net }).pipe(
    Layer.provideMerge(actors),
    Layer.provideMerge(filterIndexOf(config)),
    Layer.provideMerge(options.transport ?? layerTcp),
  )
}

/** natRetry spaces NAT discovery attempts after a failure: 5 s doubling, at most 10 minutes apart. */
const natRetry = Schedule.exponential(Duration.seconds(5)).pipe(
  Schedule.union(Schedule.spaced(Duration.minutes(10))),
)

/**
 * discoverNat runs on its own fiber at start (the node does not wait for it): echo against the
 * rendezvous servers classifies the NAT. A node seen at its own endpoint ("open": reachable from
 * outside) serves rendezvous for others; behind a cone NAT it registers at every server (the
 * Rendezvous keeps the registrations alive with keepalives, which also hold the NAT mapping open).
 * A probe that fails, or registrations that all fail, are retried with `natRetry`.
 */
const discoverNat = (
  rendezvous: RendezvousService,
  servers: ReadonlyArray<Endpoint>,
  status: Ref.Ref<NatStatus>,
) => {
  const attempt = Effect.gen(function* () {
    const report = yield* rendezvous.probeNat
    const publicAddress = report.observed[0]?.observed
    yield* Ref.set(status, { kind: report.kind, publicAddress, registeredAt: [] })
    const seen = publicAddress === undefined ? "unknown" : endpointKey(publicAddress)
    if (report.kind === "open") {
      yield* rendezvous.setServing(true)
      yield* Effect.logInfo(`udp: not behind a NAT (seen at ${seen}); serving rendezvous for others`)
      return
    }
    if (report.kind !== "cone") {
      yield* Effect.logInfo(
        `udp: NAT ${report.kind}, public endpoint ${seen}${report.kind === "symmetric" ? " (hole punching will fail; not registering)" : ""}`,
      )
      return
    }
    const results = yield* Effect.forEach(servers, (server) => Effect.either(rendezvous.register(server)))
    const registered = servers.filter((_, i) => Either.isRight(results[i]!))
    const failed = results.find(Either.isLeft)
    if (registered.length === 0 && failed !== undefined) return yield* Effect.fail(failed.left)
    yield* Ref.update(status, (s) => ({ ...s, registeredAt: registered }))
    yield* Effect.logInfo(
      `udp: NAT cone, public endpoint ${seen}, registered at ${registered.map(endpointKey).join(", ")}`,
    )
  })
  return attempt.pipe(
    Effect.tapError((e) => Effect.logWarning(`udp: NAT discovery failed (${e.message}); will retry`)),
    Effect.retry(natRetry),
  )
}

/**
 * udp is the node's UDP side (issue 8): `config.udp` bound on the datagram layer, the session
 * endpoint on it with the identity's session keys, and the Rendezvous actor on the endpoint's `other`
 * view of the same port. With rendezvous servers configured the node probes its NAT in the background
 * and serves once the probe says it is reachable ("open"), or registers when behind a cone NAT; with
 * none it serves others from the start. It builds the node's one SpamFilter (the policy of
 * `spamPolicyOf`): rendezvous requests and session OPENs pass its datagram admission, and `network`
 * takes it from here for the PeerManager, so a ban (setban or misbehaviour) silences an IP's TCP
 * connections and datagrams alike. Provides Rendezvous, UdpEndpoint, NodeIdentity and SpamFilter. A
 * `udp` address in use fails the start.
 */
const udp = (config: NodeConfig, options: NodeOptions) => {
  const identity =
    options.identity ??
    (config.storage === "lmdb" ? NodeIdentity.layerFile(config.dataDir) : NodeIdentity.layerRandom)
  const stack = Layer.scopedContext(
    Effect.gen(function* () {
      const id = yield* NodeIdentity.NodeIdentity
      const socket = yield* (yield* Datagrams).bind(config.udp).pipe(
        Effect.mapError(
          (e) =>
            new DatagramError({
              reason: e.reason,
              detail: `udp ${endpointKey(config.udp)}: ${e.detail}${e.reason === "in-use" ? " (another process holds this port: set udp in node.json or --udp)" : ""}`,
            }),
        ),
      )
      const filter = yield* SpamFilterActor.SpamFilter
      const sessions = yield* makeSessionEndpoint(socket, {
        keys: sessionKeysFromSecret(id.sessionSecret),
        admitOpen: (from) => filter.admitDatagram(from.host, "open"),
      })
      const servers = config.rendezvous
      const { maxRegistrations, maxRegistrationsPerIp } = config.spam
      const rendezvous = yield* RendezvousActor.makeOnSocket(
        {
          nodeSecretKey: id.secretKey,
          sessionPublicKey: sessions.publicKey,
          servers,
          serve: servers.length === 0,
          limits: {
            ...RendezvousActor.defaultRendezvousLimits,
            ...(maxRegistrations === undefined ? {} : { maxRegistrations }),
            ...(maxRegistrationsPerIp === undefined ? {} : { maxRegistrationsPerIp }),
            ...options.rendezvous,
          },
        },
        sessions.other,
      )
      const status = yield* Ref.make<NatStatus>({
        kind: "unknown",
        publicAddress: undefined,
        registeredAt: [],
      })
      if (servers.length > 0)
        yield* Effect.forkScoped(Effect.interruptible(discoverNat(rendezvous, servers, status)))
      return Context.make(Rendezvous, rendezvous).pipe(
        Context.add(UdpEndpoint, {
          nodeKey: rendezvous.nodeKey,
          local: socket.local,
          sessions,
          nat: Ref.get(status),
        }),
      )
    }),
  )
  const spamFilter = SpamFilterActor.layer({ ...spamPolicyOf(config), ...options.spam })
  return stack.pipe(
    Layer.provideMerge(Layer.merge(identity, spamFilter)),
    Layer.provide(options.datagrams ?? layerUdp),
    Layer.provide(entropyOf(options)),
  )
}

/** miningKey is the key the miner pays: mining.address, else a fresh wallet address. */
const miningKey = (config: NodeConfig) =>
  Effect.gen(function* () {
    const params = networks[config.network]
    const address = config.mining.address ?? (yield* (yield* Wallet).newAddress)
    const key = decodeAddress(params.hrp, address)
    if (Either.isLeft(key)) return yield* new ConfigError({ message: `mining.address: ${key.left.message}` })
    return key.right as PublicKey
  })

/**
 * layer is a whole node without its RPC server, built from a config value: storage, signatures, the
 * verification pool, the Chain, Mempool, Wallet and Miner actors, the P2P network (over TCP unless
 * `options.transport` swaps it) and the UDP side (`udp`: session endpoint and Rendezvous, over
 * node:dgram unless `options.datagrams` swaps it) (the Miner mines in the background
 * when `mining.enabled`). Another program embeds a node with it and talks to the actors directly;
 * `storage: "memory"` keeps nothing on disk. With `reindex`, the chain state is rebuilt first.
 */
export const layer = (config: NodeConfig, options: NodeOptions = {}) => {
  const params = networks[config.network]
  const miner = Layer.unwrapEffect(
    Effect.gen(function* () {
      if (config.reindex) yield* Effect.flatMap(Chain, (c) => c.reindex)
      if (config.snapshot !== undefined)
        yield* startFromSnapshot(config.snapshot, params, config.snapshotHash)
      const key = config.mining.enabled ? yield* miningKey(config) : undefined
      return MinerActor.layer({
        params,
        enabled: config.mining.enabled,
        minTxs: config.mining.minTxs,
        workers: config.mining.workers,
        ...(key === undefined ? {} : { pubkey: key }),
      })
    }),
  )
  // the network is built over the UDP side, so the PeerManager takes UDP sessions as connections
  return Layer.merge(
    miner,
    snapshotsAtStart(config, params).pipe(
      Layer.provideMerge(network(config, options).pipe(Layer.provideMerge(udp(config, options)))),
    ),
  ).pipe(Layer.provideMerge(services(config, options)))
}

/**
 * run starts a node and serves until the `stop` RPC or an interruption (SIGINT/SIGTERM), then shuts
 * down cleanly: every layer's finalizer runs (actors finish their command, LMDB closes, the cookie and
 * the lock are removed).
 */
export const run = (config: NodeConfig) =>
  Effect.gen(function* () {
    const params = networks[config.network]
    const shutdown = yield* Deferred.make<void>()
    const startedAt = yield* Clock.currentTimeMillis
    yield* Effect.logInfo(
      `fibercoin ${VERSION} starting: ${params.name}, data in ${path.resolve(config.dataDir)}, storage ${config.storage}`,
    )
    const ctx = { params, startedAt, shutdown }
    const rpc = RpcServer.layer({
      listen: config.rpc.listen,
      auth:
        config.rpc.user !== undefined && config.rpc.password !== undefined
          ? { user: config.rpc.user, password: config.rpc.password }
          : { cookieFile: path.join(config.dataDir, ".cookie") },
      methods: [
        ...(config.role === "light"
          ? lightChainMethods(ctx)
          : [...chainMethods(ctx), ...proofMethods(), ...snapshotMethods(params)]),
        ...walletMethods(),
        ...netMethods(VERSION),
      ],
    })
    const node = Effect.gen(function* () {
      const tip = yield* (yield* Chain).tip
      const p2p = Option.match((yield* PeerManager.Network).listening, {
        onNone: () => "off",
        onSome: endpointKey,
      })
      const udpLocal = (yield* UdpEndpoint).local
      yield* Effect.logInfo(
        `ready: tip ${tip.height}, RPC on ${config.rpc.listen.host}:${config.rpc.listen.port}, P2P on ${p2p}, UDP on ${endpointKey(udpLocal)}, mining ${config.mining.enabled ? "on" : "off"}`,
      )
      yield* Deferred.await(shutdown).pipe(Effect.onInterrupt(() => Effect.logInfo("stopping (signal)")))
      yield* Effect.logInfo("stopping")
    })
    yield* node.pipe(Effect.provide(rpc.pipe(Layer.provideMerge(layer(config)))), Effect.scoped)
    yield* Effect.logInfo("stopped")
  })
