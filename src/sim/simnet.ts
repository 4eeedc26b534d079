/**
 * simnet.ts builds real fibercoin nodes on a simulated network in one process: the production node
 * layer with memory storage, inline signature checks, the sim transport and sim datagrams, under the
 * TestClock. The simulator (`Simulator.ts`) and the multi-node tests share it.
 */
import { createHash } from "node:crypto"
import {
  type Context,
  Duration,
  Effect,
  Layer,
  Logger,
  LogLevel,
  Option,
  type Scope,
  TestClock,
} from "effect"
import type { AddrBook } from "../actors/AddrBook.js"
import type { Chain } from "../actors/Chain.js"
import type { Mempool } from "../actors/Mempool.js"
import type { Miner } from "../actors/Miner.js"
import { NetProbe, type ProbeEvent } from "../actors/net.js"
import type { Network } from "../actors/PeerManager.js"
import type { Rendezvous } from "../actors/Rendezvous.js"
import type { SpamFilter } from "../actors/SpamFilter.js"
import type { Wallet } from "../actors/Wallet.js"
import type { ChainStore } from "../layers/ChainStore.js"
import { type DatagramSim, makeDatagramSim } from "../layers/DatagramSim.js"
import * as NodeIdentity from "../layers/NodeIdentity.js"
import type { SimNetwork } from "../layers/TransportSim.js"
import type { UdpEndpoint } from "../layers/UdpEndpoint.js"
import * as Node from "../node/Node.js"
import { type NodeConfig, resolveConfig } from "../schema/config.js"

/** P2P_PORT is the port every sim node listens on (each host has its own port space). */
export const P2P_PORT = 18444

/** SimServices are what a sim node's context holds for a test or the simulator. */
export type SimServices =
  | Chain
  | ChainStore
  | Mempool
  | Wallet
  | Miner
  | Network
  | AddrBook
  | SpamFilter
  | Rendezvous
  | UdpEndpoint
  | NodeIdentity.NodeIdentity

/** UDP_PORT is the port every sim node binds for UDP (its `udp` config). */
export const UDP_PORT = 18445

/** simIdentity is a fixed identity per host (seeded sims stay deterministic): 64 bytes of SHA-256 of the host name. */
export const simIdentity = (host: string): Uint8Array => {
  const a = createHash("sha256").update(`nodekey:${host}`).digest()
  const b = createHash("sha256").update(`sessionkey:${host}`).digest()
  return new Uint8Array(Buffer.concat([a, b]))
}

/** SimNode is one node of a simulated network, built from the real node layer over the sim transport. */
export interface SimNode {
  readonly host: string
  readonly context: Context.Context<SimServices>
  /** run runs an effect against this node's services */
  readonly run: <A, E>(effect: Effect.Effect<A, E, SimServices>) => Effect.Effect<A, E>
}

/** simConfig is a regtest full node in memory at `host`, not mining in the background. */
export const simConfig = (host: string, connect: ReadonlyArray<string> = []): NodeConfig => {
  const base = resolveConfig(
    {},
    {
      storage: "memory",
      role: "full",
      listen: { host, port: P2P_PORT },
      udp: { host, port: UDP_PORT },
      ...(connect.length > 0 ? { connect: connect.map((h) => ({ host: h, port: P2P_PORT })) } : {}),
    },
  )
  // workers 0: the miner hashes on the calling fiber (regtest targets are instant)
  return { ...base, mining: { ...base.mining, enabled: false, workers: 0 } }
}

/**
 * startNode builds a node at `host` on `sim` in the current scope: real actors, memory storage, inline
 * signature checks, the sim transport, and `probe` (if given) seeing every message. Its UDP side runs
 * on `datagramSim` (a DatagramSim shared by the test's nodes; default a private one per node, so sims
 * never bind real ports) with the fixed identity `simIdentity(host)`.
 */
export const startNode = (
  sim: SimNetwork,
  config: NodeConfig,
  options: Omit<Node.NodeOptions, "datagrams"> & {
    readonly probe?: (event: ProbeEvent) => void
    readonly datagramSim?: DatagramSim
  } = {},
): Effect.Effect<SimNode, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const host = config.listen.host
    const datagrams = options.datagramSim ?? (yield* makeDatagramSim({ seed: 0 }))
    const layer = Node.layer(config, {
      verifier: "inline",
      identity: NodeIdentity.layerFrom(simIdentity(host)),
      ...options,
      transport: sim.layer(host),
      datagrams: datagrams.layer(host),
    })
    const withProbe =
      options.probe === undefined
        ? layer
        : layer.pipe(Layer.provide(Layer.succeed(NetProbe, { observe: options.probe })))
    const context = (yield* Layer.build(withProbe)) as Context.Context<SimServices>
    return {
      host,
      context,
      run: <A, E>(effect: Effect.Effect<A, E, SimServices>) => Effect.provide(effect, context),
    }
  })

/** settle lets every fiber woken so far run: a few turns of the real event loop. */
export const settle = Effect.forEach(
  [1, 2, 3, 4],
  () => Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))),
  { discard: true },
)

/** advance moves the TestClock forward by `by` in steps of `step`, letting fibers run after each. */
export const advance = (by: Duration.DurationInput, step: Duration.DurationInput = "10 millis") =>
  Effect.gen(function* () {
    const total = Duration.toMillis(by)
    const s = Duration.toMillis(step)
    for (let t = 0; t < total; t += s) {
      yield* TestClock.adjust(Duration.millis(s))
      yield* settle
    }
  })

/**
 * waitUntil advances simulated time in `step`s until `condition` holds, failing after `within` of
 * simulated time (every loop is bounded). Answers the simulated milliseconds it took.
 */
export const waitUntil = (
  condition: Effect.Effect<boolean, unknown>,
  within: Duration.DurationInput,
  step: Duration.DurationInput = "20 millis",
): Effect.Effect<number, Error> =>
  Effect.gen(function* () {
    const limit = Duration.toMillis(within)
    const s = Duration.toMillis(step)
    for (let t = 0; t <= limit; t += s) {
      if (yield* Effect.orDie(condition)) return t
      yield* TestClock.adjust(Duration.millis(s))
      yield* settle
    }
    return yield* Effect.fail(new Error(`condition not met within ${limit} ms of simulated time`))
  })

/** simTime starts the TestClock at a realistic date, so block timestamps are neither too new nor too old. */
export const simTime = TestClock.setTime(Date.UTC(2026, 10, 25, 12, 0, 0))

/** quiet keeps the nodes' info logs out of the test output. */
export const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Logger.withMinimumLogLevel(LogLevel.Warning))

/** first is Option's value or a failure naming what was missing. */
export const first = <A>(o: Option.Option<A>, what: string): Effect.Effect<A, Error> =>
  Option.match(o, { onNone: () => Effect.fail(new Error(`${what} missing`)), onSome: Effect.succeed })
