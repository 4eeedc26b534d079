import { createHash } from "node:crypto"
import {
  Cause,
  Clock,
  type Context,
  Duration,
  Effect,
  Either,
  ExecutionStrategy,
  Exit,
  Fiber,
  FiberRef,
  HashSet,
  Layer,
  Logger,
  LogLevel,
  Option,
  Random,
  Scope,
} from "effect"
import { Chain } from "../actors/Chain.js"
import { Mempool } from "../actors/Mempool.js"
import { Miner } from "../actors/Miner.js"
import type { ProbeEvent } from "../actors/net.js"
import { WALLET_COINBASE_DEPTH, Wallet } from "../actors/Wallet.js"
import { decodeAddress } from "../consensus/address.js"
import { blockHashOf, txidOf } from "../consensus/hash.js"
import { regtest } from "../consensus/params.js"
import { outpointKey } from "../consensus/utxo.js"
import { ChainStore, makeMemoryStore } from "../layers/ChainStore.js"
import { makeDatagramSim } from "../layers/DatagramSim.js"
import * as Entropy from "../layers/Entropy.js"
import * as Keystore from "../layers/Keystore.js"
import { layerDefault } from "../layers/Signatures.js"
import { makeSimNetwork } from "../layers/TransportSim.js"
import { decodeBlock } from "../schema/block.js"
import { toHex } from "../schema/hex.js"
import type { PublicKey } from "../schema/primitives.js"
import { encodeTx } from "../schema/tx.js"
import { encodePayload, payloadSize } from "../schema/wire.js"
import { type CrashRecord, drawSkews, offsetClock } from "./faults.js"
import type { SimOptions } from "./options.js"
import { SimClock, scheduler } from "./SimClock.js"
import { P2P_PORT, type SimNode, simConfig, startNode, UDP_PORT } from "./simnet.js"
import { type Placement, place, RENDEZVOUS_HOST } from "./topology.js"

/**
 * Simulator.ts runs one fault-injection run: N real nodes on the sim transport and sim datagrams in
 * this process, time moved by the loop below on a SimClock, every random choice (the network's
 * faults, the nodes' `Random` and `Entropy`, the mining and payment schedules) drawn from PRNGs seeded
 * by the run's seed. It records every message in a trace hash and checks the invariants at the end.
 */

/** SIM_EPOCH is when simulated time starts: a realistic date, so block timestamps are neither too new nor too old. */
const SIM_EPOCH = Date.UTC(2026, 10, 25, 12, 0, 0)
/** STEP_MS is the loop's time step: events (mining, payments, splits, heals) land on its multiples. */
const STEP_MS = 100
/** POLL_MS spaces the convergence polls (each reads every node's tip). */
const POLL_MS = 1_000
/** SETTLE_MS is how long the network runs without mining or payments before mempools are checked. */
const SETTLE_MS = 5_000
/** SETUP_LIMIT_MS bounds the premine's propagation before the run starts. */
const SETUP_LIMIT_MS = 10 * 60_000
/** SHUTDOWN_LIMIT_MS bounds how long stopping the nodes may take in simulated time. */
const SHUTDOWN_LIMIT_MS = 60_000
/** MAX_PAYERS bounds the wallets the premine funds. */
const MAX_PAYERS = 10
/** PAYMENT_UNITS is what each simulated payment sends. */
const PAYMENT_UNITS = 100_000n
/** FRAME_HEADER_BYTES is the wire frame header counted with each payload (magic, command, length, checksum). */
const FRAME_HEADER_BYTES = 24

/** InvariantResult is one invariant's verdict and, when it failed, why. */
export interface InvariantResult {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

/** NodeTraffic is what one node's peers sent and received: messages and bytes (frame headers included). */
export interface NodeTraffic {
  readonly node: number
  readonly host: string
  readonly messagesSent: number
  readonly messagesReceived: number
  readonly bytesSent: number
  readonly bytesReceived: number
}

/** Percentiles of a sample in milliseconds; undefined values when the sample is empty. */
export interface Percentiles {
  readonly samples: number
  readonly p50: number | undefined
  readonly p95: number | undefined
  readonly max: number | undefined
}

/** SimReport is a run's outcome: what happened, the trace hash and the invariants. */
export interface SimReport {
  readonly options: SimOptions
  /** simulated milliseconds of the run itself (without the premine's setup) */
  readonly simulatedMs: number
  /** simulated milliseconds of the setup before it (the premine reaching every node) */
  readonly setupMs: number
  readonly realMs: number
  readonly blocksMined: number
  readonly finalHeight: number
  readonly finalTip: string
  /** per heal, simulated ms from the heal to one tip everywhere (undefined: not within the bound) */
  readonly convergenceAfterHealMs: ReadonlyArray<number | undefined>
  /** simulated ms from the end of mining to one tip everywhere (undefined: not within the bound) */
  readonly finalConvergenceMs: number | undefined
  /** block propagation: first announcement of a block (its mining) to its arrival at each other node */
  readonly propagation: Percentiles
  readonly payments: { readonly attempted: number; readonly accepted: number }
  readonly traffic: ReadonlyArray<NodeTraffic>
  readonly traceHash: string
  readonly traceMessages: number
  /** sleepers the clock woke: the timers and delayed deliveries the run cost */
  readonly clockWakes: number
  readonly invariants: ReadonlyArray<InvariantResult>
  readonly ok: boolean
  /** each node's crash and restart (`--crash`), in the order they happened */
  readonly crashes?: ReadonlyArray<CrashRecord>
  /** each node's clock offset in ms (`--clock-skew`) */
  readonly clockSkewMs?: ReadonlyArray<number>
}

/** percentiles of `values` (nearest rank). */
export const percentiles = (values: ReadonlyArray<number>): Percentiles => {
  if (values.length === 0) return { samples: 0, p50: undefined, p95: undefined, max: undefined }
  const sorted = [...values].sort((a, b) => a - b)
  const rank = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]
  return { samples: sorted.length, p50: rank(0.5), p95: rank(0.95), max: sorted[sorted.length - 1] }
}

/** minerKey is a fixed coinbase key per run and node (never spent: a sha256 of the seed and index). */
const minerKey = (seed: number, index: number): PublicKey =>
  new Uint8Array(createHash("sha256").update(`fibercoin-sim:${seed}:${index}`).digest()) as PublicKey

/** Recorder is the probe's state: the trace hash, traffic counters and block arrivals. */
class Recorder {
  readonly trace = createHash("sha256")
  messages = 0
  readonly traffic: Array<{ sent: number; received: number; bytesSent: number; bytesReceived: number }>
  /** blocks mined during the run: hex → simulated ms when mined, and the nodes that have it */
  readonly mined = new Map<string, { readonly at: number; readonly seen: Set<number> }>()
  readonly arrivals: Array<number> = []

  constructor(
    count: number,
    /** now is simulated ms since the network was built */
    readonly now: () => number,
  ) {
    this.traffic = Array.from({ length: count }, () => ({
      sent: 0,
      received: 0,
      bytesSent: 0,
      bytesReceived: 0,
    }))
  }

  observe(node: number, event: ProbeEvent): void {
    const traffic = this.traffic[node]!
    const bytes =
      event.payload ??
      (event.direction === "out" && event.message !== undefined ? encodePayload(event.message) : undefined)
    const size =
      FRAME_HEADER_BYTES + (bytes?.length ?? (event.message === undefined ? 0 : payloadSize(event.message)))
    if (event.direction === "out") {
      traffic.sent += 1
      traffic.bytesSent += size
      const digest = createHash("sha256")
        .update(bytes ?? new Uint8Array(0))
        .digest("hex")
      this.trace.update(
        `${this.now()} ${event.local.host}:${event.local.port} ${event.remote.host}:${event.remote.port} ${event.command} ${digest}\n`,
      )
      this.messages += 1
      return
    }
    traffic.received += 1
    traffic.bytesReceived += size
    if (event.command === "block" && event.payload !== undefined && event.payload.length >= 80) {
      const block = this.mined.get(toHex(blockHashOf(event.payload.subarray(0, 80))))
      if (block !== undefined && !block.seen.has(node)) {
        block.seen.add(node)
        this.arrivals.push(this.now() - block.at)
      }
    }
  }
}

/** tipsOf reads every node's tip hash (hex). */
const tipsOf = (nodes: ReadonlyArray<SimNode>) =>
  Effect.forEach(nodes, (n) => n.run(Effect.flatMap(Chain, (c) => c.tip)))

const converged = (nodes: ReadonlyArray<SimNode>) =>
  Effect.map(tipsOf(nodes), (tips) => new Set(tips.map((t) => toHex(t.hash))).size === 1)

/**
 * mempoolConflicts lists a node's pool transactions that conflict with its tip: an input that is
 * neither an unspent coin of the chain nor an output of another pool transaction, or an input two
 * pool transactions spend. Empty when the pool is consistent.
 */
const mempoolConflicts = (node: SimNode) =>
  node.run(
    Effect.gen(function* () {
      const mempool = yield* Mempool
      const store = yield* ChainStore
      const txids = yield* mempool.txids
      const entries = (yield* Effect.forEach(txids, (t) => mempool.get(t))).flatMap((o) =>
        Option.isSome(o) ? [o.value] : [],
      )
      const poolOutputs = new Set<string>()
      for (const e of entries)
        for (let n = 0; n < e.tx.outputs.length; n++) poolOutputs.add(outpointKey(e.txid, n))
      const spent = new Set<string>()
      const problems: Array<string> = []
      for (const e of entries) {
        for (const input of e.tx.inputs) {
          const key = outpointKey(input.prevout.txid, input.prevout.index)
          if (spent.has(key)) problems.push(`${toHex(e.txid)} double-spends ${key}`)
          spent.add(key)
          if (store.coins.get(key) === undefined && !poolOutputs.has(key)) {
            problems.push(`${toHex(e.txid)} spends ${key}, neither unspent at the tip nor a pool output`)
          }
        }
      }
      return problems
    }),
  )

/** chainTxs lists the non-coinbase transactions of a node's active chain: txid hex → block height. */
const chainTxs = (node: SimNode) =>
  node.run(
    Effect.gen(function* () {
      const chain = yield* Chain
      const tip = yield* chain.tip
      const out = new Map<string, number>()
      for (let h = 1; h <= tip.height; h++) {
        const hash = yield* chain.hashAt(h)
        if (Option.isNone(hash)) continue
        const bytes = yield* Effect.orDie(chain.block(hash.value))
        if (Option.isNone(bytes)) continue
        const block = decodeBlock(bytes.value)
        if (Either.isLeft(block)) continue
        for (const tx of block.right.txs.slice(1)) out.set(toHex(txidOf(encodeTx(tx))), h)
      }
      return out
    }),
  )

/** hashesAt reads a node's active-chain hashes at `heights`. */
const hashesAt = (node: SimNode, heights: ReadonlyArray<number>) =>
  node.run(
    Effect.flatMap(Chain, (chain) =>
      Effect.forEach(heights, (h) =>
        Effect.map(chain.hashAt(h), (o) => (Option.isSome(o) ? toHex(o.value) : undefined)),
      ),
    ),
  )

/**
 * captureDefects runs `effect` with its logs (and every fiber's it forks) going to `defects` instead
 * of the console: whatever is logged at Error level or above (an actor crash is), and any log whose
 * cause holds a defect. A fiber that ends with an unhandled failure is logged at Warning with its
 * cause, so a defect there counts and an expected failure (a reset connection) does not. `verbose`
 * also prints every log at Warning and above to stderr.
 */
export const captureDefects =
  (defects: Array<string>, verbose: boolean) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
    const logger = Logger.make(({ logLevel, message, cause }) => {
      const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
      if (verbose)
        console.error(`[${logLevel.label}] ${text}${Cause.isEmpty(cause) ? "" : `\n${Cause.pretty(cause)}`}`)
      if (LogLevel.greaterThanEqual(logLevel, LogLevel.Error) || Cause.isDie(cause)) {
        defects.push(
          `${logLevel.label}: ${text}${Cause.isEmpty(cause) ? "" : ` — ${Cause.pretty(cause).split("\n")[0]}`}`,
        )
      }
    })
    return effect.pipe(
      Effect.locally(FiberRef.currentLoggers, HashSet.make(logger)),
      Logger.withMinimumLogLevel(LogLevel.Warning),
      Effect.locally(FiberRef.unhandledErrorLogLevel, Option.some(LogLevel.Warning)),
    )
  }

/** RunHooks let a caller watch a run (tests). */
export interface RunHooks {
  /** verbose prints every node log at Warning and above to stderr */
  readonly verbose?: boolean
}

/**
 * runSim runs `options` to the end and reports; it never fails (a crash of the run itself is the
 * failed "no uncaught error" invariant). It brings its own clock and scheduler, so it runs the same
 * under a test runner and from the `sim` command.
 */
export const runSim = (options: SimOptions, hooks: RunHooks = {}): Effect.Effect<SimReport> =>
  Effect.gen(function* () {
    const realStart = yield* Clock.currentTimeMillis
    const sim = new SimClock(SIM_EPOCH)
    const defects: Array<string> = []
    const exit = yield* Effect.exit(
      withShutdown(body(options, sim), sim, defects).pipe(
        captureDefects(defects, hooks.verbose === true),
        Effect.withRandom(Random.make(options.seed)),
        Effect.withClock(sim.clock),
        Effect.withScheduler(scheduler),
      ),
    )
    const realMs = (yield* Clock.currentTimeMillis) - realStart
    if (Exit.isSuccess(exit)) {
      const noDefects: InvariantResult = {
        name: "no uncaught error in any fiber",
        ok: defects.length === 0,
        detail: defects.length === 0 ? "none logged" : `${defects.length}: ${defects.slice(0, 5).join("; ")}`,
      }
      const invariants = [...exit.value.invariants, noDefects]
      return { ...exit.value, realMs, invariants, ok: invariants.every((i) => i.ok) }
    }
    const failed: InvariantResult = {
      name: "no uncaught error in any fiber",
      ok: false,
      detail: `the run itself failed: ${Cause.pretty(exit.cause).split("\n").slice(0, 3).join(" ")}`,
    }
    return {
      options,
      simulatedMs: 0,
      setupMs: 0,
      realMs,
      blocksMined: 0,
      finalHeight: -1,
      finalTip: "",
      convergenceAfterHealMs: [],
      finalConvergenceMs: undefined,
      propagation: percentiles([]),
      payments: { attempted: 0, accepted: 0 },
      traffic: [],
      traceHash: "",
      traceMessages: 0,
      clockWakes: sim.wakes,
      invariants: [failed],
      ok: false,
    }
  })

/**
 * withShutdown runs `run` in a scope of its own and closes it (every node stops) while the clock
 * keeps moving, for finalizers that wait on timers; a shutdown that has not finished after
 * SHUTDOWN_LIMIT_MS of simulated time is recorded as a defect and left behind.
 */
const withShutdown = <A, E>(run: Effect.Effect<A, E, Scope.Scope>, clock: SimClock, defects: Array<string>) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const exit = yield* Effect.exit(Scope.extend(run, scope))
    const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
    for (let t = 0; t < SHUTDOWN_LIMIT_MS && Option.isNone(yield* Fiber.poll(closing)); t += STEP_MS) {
      yield* clock.advanceTo(clock.millis + STEP_MS)
    }
    if (Option.isNone(yield* Fiber.poll(closing))) {
      defects.push(
        `shutdown: the nodes had not stopped ${SHUTDOWN_LIMIT_MS} ms of simulated time after the run`,
      )
    }
    return yield* exit
  })

/** body is the run: build the network, set it up, run the schedule, drain, check. */
const body = (options: SimOptions, clock: SimClock) =>
  Effect.gen(function* () {
    const t0 = clock.millis
    const rng = Random.make(`fibercoin-sim:${options.seed}`)
    const link = {
      latency: Duration.millis(options.latencyMs),
      ...(options.bandwidth === undefined ? {} : { bandwidthBytesPerSecond: options.bandwidth }),
      loss: options.loss,
      duplicate: options.dup,
      reorder: options.reorder,
    }
    const tcp = yield* makeSimNetwork({ seed: options.seed, defaultLink: link })
    const udp = yield* makeDatagramSim({
      seed: options.seed + 1,
      defaultLink: {
        latency: Duration.millis(options.latencyMs),
        loss: options.loss,
        duplicate: options.dup,
        reorder: options.reorder,
      },
    })
    const placements = yield* place(options.topology, options.nodes, rng)
    for (const p of placements) {
      if (p.natPublicHost !== undefined) {
        yield* udp.addNat({ publicHost: p.natPublicHost, type: "port-restricted", privateHosts: [p.host] })
      }
    }
    const recorder = new Recorder(options.nodes, () => clock.millis - t0)
    // each node's storage and Entropy outlive it: a crash closes its scope, a restart builds it again over them
    const skews = yield* drawSkews(options.seed, options.nodes, options.clockSkewMs ?? 0)
    const parentScope = yield* Effect.scope
    const boot = (p: Placement) =>
      Effect.gen(function* () {
        const scope = yield* Scope.fork(parentScope, ExecutionStrategy.sequential)
        const nodeClock = offsetClock(clock.clock, skews[p.index]!)
        const node = yield* Scope.extend(
          startNode(tcp, configOf(p), {
            datagramSim: udp,
            entropy: Layer.succeedContext(entropies[p.index]!),
            store: Layer.succeed(ChainStore, stores[p.index]!),
            keystore: Layer.succeedContext(keystores[p.index]!),
            probe: (event) => recorder.observe(p.index, event),
            ...(options.plantedBug === undefined ? {} : { plantedBug: options.plantedBug }),
          }),
          scope,
        ).pipe(Effect.withClock(nodeClock))
        const skewed: SimNode = {
          ...node,
          run: (effect) => node.run(effect).pipe(Effect.withClock(nodeClock)),
        }
        return { node: skewed, scope }
      })
    const stores = placements.map(() => makeMemoryStore())
    const entropies: Array<Context.Context<Entropy.Entropy>> = []
    for (const p of placements) {
      entropies.push(yield* Layer.build(Entropy.layerSeeded(Entropy.deriveSeed(options.seed, p.host))))
    }
    // the wallet's keys: in memory, but kept like wallet.json across a restart
    const keystores: Array<Context.Context<Keystore.Keystore>> = []
    for (const [i, entropy] of entropies.entries()) {
      keystores.push(
        yield* Layer.build(
          Keystore.layer({ network: regtest }).pipe(
            Layer.provide(layerDefault),
            Layer.provide(Layer.succeedContext(entropy)),
          ),
        ).pipe(Effect.orDieWith((e) => new Error(`node ${i}'s keystore: ${e}`))),
      )
    }
    const nodes: Array<SimNode> = []
    const scopes: Array<Scope.CloseableScope> = []
    for (const p of placements) {
      const booted = yield* boot(p)
      nodes.push(booted.node)
      scopes.push(booted.scope)
    }
    /** down: the crashed nodes, their scopes closing (until the fiber is done) */
    const down = new Map<number, Fiber.RuntimeFiber<void>>()
    const live = () => nodes.filter((_, i) => !down.has(i))
    const crashSchedule = (options.crashes ?? []).flatMap((c) =>
      c.nodes.map((i) => ({ ...c, node: i, crashed: false, restarted: false })),
    )
    const crashes: Array<CrashRecord> = []
    const balanceOf = (node: SimNode) =>
      node.run(Effect.flatMap(Wallet, (w) => w.balance(1))).pipe(Effect.map(Number))
    const crashOrRestart = (t: number) =>
      Effect.gen(function* () {
        for (const c of crashSchedule) {
          if (!c.crashed && c.startMs <= t) {
            c.crashed = true
            const heightAtCrash = (yield* nodes[c.node]!.run(Effect.flatMap(Chain, (ch) => ch.tip))).height
            const balanceAtCrash = yield* balanceOf(nodes[c.node]!)
            down.set(c.node, yield* Effect.fork(Scope.close(scopes[c.node]!, Exit.void)))
            crashes.push({
              node: c.node,
              host: placements[c.node]!.host,
              crashedAtMs: t,
              restartedAtMs: undefined,
              heightAtCrash,
              heightAtRestart: undefined,
              balanceAtCrash,
              balanceAtRestart: undefined,
            })
          }
          const closing = down.get(c.node)
          if (c.crashed && !c.restarted && c.endMs <= t && closing !== undefined) {
            // a node restarts once its old self has stopped (its finalizers may wait on timers)
            if (Option.isNone(yield* Fiber.poll(closing))) {
              if (t - c.endMs < SHUTDOWN_LIMIT_MS) continue
              c.restarted = true
              yield* Effect.logError(
                `sim: node ${c.node} had not stopped ${SHUTDOWN_LIMIT_MS} ms after its crash`,
              )
              continue
            }
            c.restarted = true
            const booted = yield* boot(placements[c.node]!)
            nodes[c.node] = booted.node
            scopes[c.node] = booted.scope
            down.delete(c.node)
            const heightAtRestart = (yield* booted.node.run(Effect.flatMap(Chain, (ch) => ch.tip))).height
            const balanceAtRestart = yield* balanceOf(booted.node)
            const k = crashes.findIndex((r) => r.node === c.node && r.restartedAtMs === undefined)
            if (k >= 0) crashes[k] = { ...crashes[k]!, restartedAtMs: t, heightAtRestart, balanceAtRestart }
          }
        }
      })
    const step = (ms: number) =>
      Effect.gen(function* () {
        yield* clock.advanceTo(clock.millis + ms)
      })
    /** waitConverged advances in polls until one tip everywhere; the simulated ms it took or undefined past `limit`. */
    const waitConverged = (limit: number) =>
      Effect.gen(function* () {
        for (let t = 0; t <= limit; t += POLL_MS) {
          if (yield* converged(nodes)) return t
          yield* step(POLL_MS)
        }
        return undefined
      })

    // -- setup: with payments, fund up to MAX_PAYERS wallets and mature the coinbases ------------
    const payments = { attempted: 0, accepted: 0 }
    const payers: Array<number> = []
    const addresses: Array<string> = []
    let setupMs = 0
    if (options.txRate > 0 && options.nodes > 1) {
      for (const n of nodes) addresses.push(yield* n.run(Effect.flatMap(Wallet, (w) => w.newAddress)))
      const count = Math.min(MAX_PAYERS, options.nodes)
      for (let k = 0; k < count; k++) payers.push(Math.floor((k * options.nodes) / count))
      const origin = nodes[0]!
      yield* origin.run(
        Effect.gen(function* () {
          const miner = yield* Miner
          for (const i of payers) {
            const key = Either.getOrThrow(decodeAddress(regtest.hrp, addresses[i]!))
            yield* miner.generate(1, key)
          }
          yield* miner.generate(WALLET_COINBASE_DEPTH, minerKey(options.seed, 0))
        }),
      )
      const height = payers.length + WALLET_COINBASE_DEPTH
      for (setupMs = 0; setupMs < SETUP_LIMIT_MS; setupMs += POLL_MS) {
        const tips = yield* tipsOf(nodes)
        if (tips.every((t) => t.height >= height)) break
        yield* step(POLL_MS)
      }
    }
    const runStart = clock.millis
    const now = () => clock.millis - runStart

    // -- the schedule -------------------------------------------------------------------------------
    const expo = (meanMs: number) => Effect.map(rng.next, (u) => -Math.log(1 - u) * meanMs)
    const minerNodes = Array.from({ length: options.miners }, (_, k) =>
      Math.floor((k * options.nodes) / options.miners),
    )
    const nextMine: Array<number> = []
    for (const _ of minerNodes) nextMine.push(yield* expo(options.blockIntervalMs))
    let nextPay =
      options.txRate > 0 && payers.length > 0 ? yield* expo(1000 / options.txRate) : Number.POSITIVE_INFINITY
    const hostsOf = (group: ReadonlyArray<number>) => group.map((i) => placements[i]!.host)
    const splits = options.partitions.map((p) => ({ ...p, split: false, healed: false }))
    const heals: Array<{ at: number; convergedAfter: number | undefined; limit: number }> = []
    let blocksMined = 0

    const mine = (k: number) =>
      Effect.gen(function* () {
        const i = minerNodes[k]!
        if (down.has(i)) return
        const address = addresses[i]
        const key =
          address === undefined
            ? minerKey(options.seed, i)
            : Either.getOrThrow(decodeAddress(regtest.hrp, address))
        // the recorder's time, which the arrivals are measured in
        const at = recorder.now()
        const hashes = yield* nodes[i]!.run(Effect.flatMap(Miner, (m) => m.generate(1, key))).pipe(
          Effect.catchAll((e) => Effect.as(Effect.logWarning(`sim: node ${i} could not mine: ${e}`), [])),
        )
        for (const h of hashes) recorder.mined.set(toHex(h), { at, seen: new Set([i]) })
        blocksMined += hashes.length
      })

    const pay = Effect.gen(function* () {
      const from = payers[yield* rng.nextIntBetween(0, payers.length)]!
      let to = yield* rng.nextIntBetween(0, options.nodes - 1)
      if (to >= from) to += 1
      if (down.has(from) || down.has(to)) return
      payments.attempted += 1
      const ok = yield* nodes[from]!.run(
        Effect.flatMap(Wallet, (w) => w.send(addresses[to]!, PAYMENT_UNITS)),
      ).pipe(Effect.isSuccess)
      if (ok) payments.accepted += 1
    })

    const splitOrHeal = (t: number) =>
      Effect.gen(function* () {
        for (const s of splits) {
          if (!s.split && s.startMs <= t) {
            s.split = true
            const groups = s.groups.map(hostsOf)
            yield* tcp.partition(groups)
            yield* udp.partition(groups)
          }
          if (s.split && !s.healed && s.endMs <= t) {
            s.healed = true
            yield* tcp.heal
            yield* udp.heal
            heals.push({ at: t, convergedAfter: undefined, limit: t + options.convergeWithinMs })
          }
        }
      })
    for (let t = 0; t < options.durationMs; t += STEP_MS) {
      yield* splitOrHeal(t)
      yield* crashOrRestart(t)
      for (let k = 0; k < minerNodes.length; k++) {
        if (nextMine[k]! <= t) {
          yield* mine(k)
          nextMine[k] = t + (yield* expo(options.blockIntervalMs))
        }
      }
      while (nextPay <= t) {
        yield* pay
        nextPay += yield* expo(1000 / options.txRate)
      }
      if (t % POLL_MS === 0 && heals.some((h) => h.convergedAfter === undefined && t <= h.limit)) {
        if (yield* converged(live())) {
          for (const h of heals)
            if (h.convergedAfter === undefined && t <= h.limit) h.convergedAfter = t - h.at
        }
      }
      yield* clock.advanceTo(runStart + t + STEP_MS)
    }

    // a heal at the run's end is still a heal, a restart still a restart
    yield* splitOrHeal(options.durationMs)
    for (
      let t = options.durationMs;
      down.size > 0 && t <= options.durationMs + SHUTDOWN_LIMIT_MS;
      t += STEP_MS
    ) {
      yield* crashOrRestart(t)
      if (down.size > 0) yield* clock.advanceTo(runStart + t + STEP_MS)
    }

    // -- drain: no more mining or payments; one tip everywhere within the bound ------------------
    const drainStart = now()
    const finalConvergenceMs = yield* waitConverged(options.convergeWithinMs)
    for (const h of heals) {
      if (
        h.convergedAfter === undefined &&
        finalConvergenceMs !== undefined &&
        drainStart + finalConvergenceMs <= h.limit
      ) {
        h.convergedAfter = drainStart + finalConvergenceMs - h.at
      }
    }
    yield* step(SETTLE_MS)
    const simulatedMs = now()

    // -- invariants -----------------------------------------------------------------------------------
    const tips = yield* tipsOf(nodes)
    const tipHexes = tips.map((t) => toHex(t.hash))
    const best = tips.reduce((a, b) => (b.height > a.height ? b : a))
    const bestHex = toHex(best.hash)
    const off = tipHexes.flatMap((h, i) => (h === bestHex ? [] : [i]))
    const invariants: Array<InvariantResult> = []
    invariants.push({
      name: "all nodes converge on one most-work tip",
      ok: off.length === 0 && finalConvergenceMs !== undefined,
      detail:
        finalConvergenceMs !== undefined && off.length === 0
          ? `height ${best.height}, one tip ${finalConvergenceMs} ms after mining stopped`
          : `not one tip within ${options.convergeWithinMs} ms after mining stopped${
              off.length === 0
                ? ` (only ${SETTLE_MS} ms later, at height ${best.height})`
                : `: ${off.length} node(s) not on ${bestHex.slice(0, 16)}… at height ${best.height}: ${off
                    .slice(0, 8)
                    .map((i) => `node ${i} at ${tips[i]!.height}`)
                    .join(", ")}`
            }`,
    })
    const lateHeals = heals.filter((h) => h.convergedAfter === undefined)
    if (heals.length > 0) {
      invariants.push({
        name: "one tip everywhere within the bound after each heal",
        ok: lateHeals.length === 0,
        detail:
          lateHeals.length === 0
            ? heals.map((h) => `healed at ${h.at} ms, one tip ${h.convergedAfter} ms later`).join("; ")
            : lateHeals
                .map((h) => `healed at ${h.at} ms, not one tip within ${options.convergeWithinMs} ms`)
                .join("; "),
      })
    }
    const conflicts: Array<string> = []
    for (let i = 0; i < nodes.length; i++) {
      for (const p of yield* mempoolConflicts(nodes[i]!)) conflicts.push(`node ${i}: ${p}`)
    }
    invariants.push({
      name: "every mempool is consistent with its node's tip",
      ok: conflicts.length === 0,
      detail:
        conflicts.length === 0
          ? "no pool transaction conflicts with its chain"
          : conflicts.slice(0, 5).join("; "),
    })
    const reference = nodes[tipHexes.indexOf(bestHex)]!
    const confirmed = yield* chainTxs(reference)
    const heights = [...new Set(confirmed.values())].sort((a, b) => a - b)
    const refHashes = yield* hashesAt(reference, heights)
    const missing: Array<string> = []
    for (let i = 0; i < nodes.length; i++) {
      const hashes = yield* hashesAt(nodes[i]!, heights)
      const lost = heights.filter((_, k) => hashes[k] !== refHashes[k])
      if (lost.length > 0)
        missing.push(`node ${i} lacks the blocks at heights ${lost.slice(0, 5).join(", ")}`)
    }
    invariants.push({
      name: "no transaction confirmed on the final chain is missing from any node's chain",
      ok: missing.length === 0,
      detail:
        missing.length === 0
          ? `${confirmed.size} confirmed transaction(s) on every node's chain`
          : missing.slice(0, 5).join("; "),
    })

    const report: SimReport = {
      options,
      simulatedMs,
      setupMs,
      realMs: 0,
      blocksMined,
      finalHeight: best.height,
      finalTip: bestHex,
      convergenceAfterHealMs: heals.map((h) => h.convergedAfter),
      finalConvergenceMs,
      propagation: percentiles(recorder.arrivals),
      payments,
      traffic: recorder.traffic.map((t, i) => ({
        node: i,
        host: placements[i]!.host,
        messagesSent: t.sent,
        messagesReceived: t.received,
        bytesSent: t.bytesSent,
        bytesReceived: t.bytesReceived,
      })),
      traceHash: recorder.trace.digest("hex"),
      traceMessages: recorder.messages,
      clockWakes: clock.wakes,
      invariants,
      ok: invariants.every((i) => i.ok),
      ...(crashes.length > 0 ? { crashes } : {}),
      ...((options.clockSkewMs ?? 0) > 0 ? { clockSkewMs: skews } : {}),
    }
    return report
  })

/** configOf is node `p`'s config: a regtest full node in memory dialling its placement's peers. */
const configOf = (p: Placement) => {
  if (p.natPublicHost === undefined) {
    return simConfig(p.host, p.dials)
  }
  // behind a NAT: TCP out to the rendezvous node (kept, not exclusive), UDP through it
  return {
    ...simConfig(p.host),
    rendezvous: [{ host: RENDEZVOUS_HOST, port: UDP_PORT }],
    addnode: [{ host: RENDEZVOUS_HOST, port: P2P_PORT }],
    listen: { host: p.host, port: 0 },
  }
}
