import {
  Clock,
  Context,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  PubSub,
  type Queue,
  Ref,
  Schema,
} from "effect"
import { assembleBlock, makeCoinbase } from "../consensus/assemble.js"
import { headerHash } from "../consensus/checkBlock.js"
import type { NetworkParams } from "../consensus/params.js"
import { blockSubsidy, compactToTarget, nextWorkRequired } from "../consensus/pow.js"
import * as MiningKernel from "../layers/MiningKernel.js"
import { type Block, encodeBlock, MAX_BLOCK_BYTES } from "../schema/block.js"
import { bytesEqual } from "../schema/hex.js"
import type { Amount, BlockHash, PublicKey } from "../schema/primitives.js"
import { Chain, type ChainEvent } from "./Chain.js"
import { Mempool } from "./Mempool.js"

/** MinerError: a block this node built was refused by its own chain (a bug), or mining is not allowed. */
export class MinerError extends Schema.TaggedError<MinerError>()("MinerError", { message: Schema.String }) {}

/** MinerInfo is what getmininginfo reports of the miner itself. */
export interface MinerInfo {
  readonly mining: boolean
  /** header hashes per second over the last mining run */
  readonly hashespersec: number
}

/**
 * MinerService builds blocks from the mempool (highest package fee rate first), searches their nonces
 * with the MiningKernel and submits them through the Chain actor. The hashing runs on `workers` worker
 * threads (a midstate SHA-256d kernel in WebAssembly), so RPC and the other fibers keep the main thread;
 * the work is abandoned at once when the Chain actor announces a new tip.
 */
export interface MinerService {
  /** generate mines `n` blocks paying `pubkey` now (generatetoaddress; instant on regtest). */
  readonly generate: (n: number, pubkey: PublicKey) => Effect.Effect<ReadonlyArray<BlockHash>, MinerError>
  readonly info: Effect.Effect<MinerInfo>
}

/** Miner is the service tag. */
export class Miner extends Context.Tag("fibercoin/Miner")<Miner, MinerService>() {}

/** MinerConfig: `enabled` starts the background miner; it pays `pubkey` and waits for `minTxs` pool transactions. */
export interface MinerConfig {
  readonly params: NetworkParams
  readonly enabled: boolean
  readonly pubkey?: PublicKey
  /** mine only when the mempool holds at least this many transactions; 0 mines continuously */
  readonly minTxs: number
  /**
   * worker threads that hash (config `mining.workers`); default 1. They start on the first target
   * that is not trivial, so regtest never starts them. 0 hashes on the node's own thread in ~1.5 ms
   * slices between other fibers.
   */
  readonly workers?: number
}
/** TEMPLATE_BYTES leaves room under the block cap for the header and the coinbase. */
const TEMPLATE_BYTES = MAX_BLOCK_BYTES - 10_000

/** make builds the miner service and, when enabled, forks the background mining loop in the current scope. */
export const make = (config: MinerConfig) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const mempool = yield* Mempool
    const params = config.params
    const kernel =
      config.workers === 0
        ? MiningKernel.makeInline()
        : yield* MiningKernel.makePool({ workers: config.workers ?? 1 })
    const rate = yield* Ref.make(0)
    const running = yield* Ref.make(false)
    let extraNonce = 0

    /** template builds the next block on the tip: coinbase (subsidy + fees) and pool transactions. */
    const template = (pubkey: PublicKey) =>
      Effect.gen(function* () {
        const tip = yield* chain.tip
        const entries = yield* mempool.template(TEMPLATE_BYTES)
        const height = tip.height + 1
        const fees = entries.reduce((sum, e) => sum + e.fee, 0n)
        const extra = new Uint8Array(8)
        new DataView(extra.buffer).setUint32(0, extraNonce++, true)
        const coinbase = makeCoinbase(
          height,
          [{ value: (blockSubsidy(height, params.halvingInterval) + fees) as Amount, pubkey }],
          extra,
        )
        let intervalStartTime = tip.header.time
        if (!params.noRetargeting && height % params.retargetInterval === 0) {
          const start = yield* chain.hashAt(height - params.retargetInterval)
          const entry = Option.isSome(start) ? yield* chain.entry(start.value) : Option.none()
          if (Option.isSome(entry)) intervalStartTime = entry.value.header.time
        }
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const bits = nextWorkRequired(params, {
          height,
          prevBits: tip.header.bits,
          prevTime: tip.header.time,
          intervalStartTime,
        })
        const block = assembleBlock({ prev: tip.hash, time: Math.max(now, tip.medianTimePast + 1), bits }, [
          coinbase,
          ...entries.map((e) => e.tx),
        ])
        return { block, tip: tip.hash }
      })

    /** tipMoved completes when the Chain actor announces a tip other than `tip`. */
    const tipMoved = (events: Queue.Dequeue<ChainEvent>, tip: BlockHash) =>
      Effect.gen(function* () {
        while (true) {
          const event = yield* events.take
          if (event._tag === "TipChanged" && !bytesEqual(event.hash, tip)) return Option.none<number>()
        }
      })

    /**
     * solve builds a template and searches its nonces: none when the tip moved first (the work is stale:
     * the search is interrupted, which stops the workers within a batch) or the nonce space ran out.
     */
    const solve = (pubkey: PublicKey) =>
      Effect.scoped(
        Effect.gen(function* () {
          // subscribed before the template reads the tip, so no tip change can slip in between
          const events = yield* PubSub.subscribe(chain.events)
          const { block, tip } = yield* template(pubkey)
          const { target, negative, overflow } = compactToTarget(block.header.bits)
          if (negative || overflow || target === 0n || target > params.powLimit) {
            return yield* new MinerError({
              message: `template bits ${block.header.bits} are not a valid target`,
            })
          }
          const before = (yield* kernel.stats).hashes
          const t0 = yield* Clock.currentTimeMillis
          // a trivial target (regtest) is met within microseconds on this fiber: nothing to abandon,
          // and racing a tip watcher would cost more than the search
          const search = kernel.search(block.header, target)
          const nonce =
            MiningKernel.expectedHashes(target) <= MiningKernel.inlineExpectedHashes
              ? yield* search
              : yield* Effect.raceFirst(search, tipMoved(events, tip))
          const elapsed = (yield* Clock.currentTimeMillis) - t0
          if (elapsed > 0) yield* Ref.set(rate, (((yield* kernel.stats).hashes - before) / elapsed) * 1000)
          return Option.map(nonce, (n): Block => ({ header: { ...block.header, nonce: n }, txs: block.txs }))
        }),
      )

    /**
     * mineOne solves one template and submits the block; none when the work went stale or the nonce
     * space ran out (the next template gets a new extra nonce).
     */
    const mineOne = (pubkey: PublicKey) =>
      Effect.gen(function* () {
        const found = yield* solve(pubkey)
        if (Option.isNone(found)) return Option.none()
        const submitted = yield* Effect.either(chain.submitBlock(encodeBlock(found.value)))
        if (Either.isLeft(submitted)) {
          return yield* new MinerError({ message: `own block refused: ${submitted.left.message}` })
        }
        return Option.some(headerHash(found.value.header))
      })

    const generate = (n: number, pubkey: PublicKey) =>
      Effect.gen(function* () {
        const hashes: Array<BlockHash> = []
        while (hashes.length < n) {
          const mined = yield* mineOne(pubkey)
          if (Option.isSome(mined)) hashes.push(mined.value)
        }
        return hashes
      })

    if (config.enabled && config.pubkey !== undefined) {
      const pubkey = config.pubkey
      const loop = Effect.gen(function* () {
        yield* Ref.set(running, true)
        while (true) {
          if (config.minTxs > 0 && (yield* mempool.info).size < config.minTxs) {
            yield* Effect.sleep(Duration.millis(250))
            continue
          }
          const mined = yield* mineOne(pubkey)
          if (Option.isSome(mined)) yield* Effect.logInfo(`mined block ${(yield* chain.tip).height}`)
          // regtest's proof of work is trivial: pace continuous mining to the block spacing so a node
          // left running does not produce thousands of blocks a second
          if (params.noRetargeting && config.minTxs === 0)
            yield* Effect.sleep(Duration.seconds(params.targetSpacingSeconds))
        }
      }).pipe(
        Effect.catchAll((e) => Effect.logError(`miner stopped: ${e.message}`)),
        Effect.ensuring(Ref.set(running, false)),
      )
      yield* Effect.forkScoped(loop)
    }

    const service: MinerService = {
      generate,
      info: Effect.all({ mining: Ref.get(running), hashespersec: Ref.get(rate) }),
    }
    return service
  })

/** layer provides the Miner; it needs the Chain and the Mempool. */
export const layer = (config: MinerConfig): Layer.Layer<Miner, never, Chain | Mempool> =>
  Layer.scoped(Miner, make(config))
