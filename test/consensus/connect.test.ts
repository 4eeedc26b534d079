import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { assembleBlock, makeCoinbase } from "../../src/consensus/assemble.js"
import { type Connected, connectBlock, disconnectBlock } from "../../src/consensus/checkBlock.js"
import { COINBASE_MATURITY } from "../../src/consensus/checkTx.js"
import { sha256, txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { blockSubsidy } from "../../src/consensus/pow.js"
import { MemoryUtxoSet, outpointKey, type UtxoDelta } from "../../src/consensus/utxo.js"
import type { Block } from "../../src/schema/block.js"
import { type BlockUndo, type Coin, decodeUndo, encodeCoin, encodeUndo } from "../../src/schema/coin.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, BlockHash, Height, PublicKey, TxId } from "../../src/schema/primitives.js"
import { encodeTx, type Tx, type TxOut } from "../../src/schema/tx.js"

const COIN = 100_000_000n

// ---------------------------------------------------------------------------------------------------
// Plans: what fast-check generates. A plan names no outpoints; the builder resolves its picks against
// whatever is unspent when the transaction is built, so every generated chain is valid by construction.
// ---------------------------------------------------------------------------------------------------

/** PickPlan chooses one unspent output: the n-th oldest, or (recent) the n-th newest, modulo the pool. */
interface PickPlan {
  readonly recent: boolean
  readonly n: number
}

/** OutPlan is one output: its share of the amount being paid and the byte its pubkey repeats. */
interface OutPlan {
  readonly weight: number
  readonly key: number
}

interface TxPlan {
  readonly picks: ReadonlyArray<PickPlan>
  readonly outputs: ReadonlyArray<OutPlan>
  /** percent of the inputs' total left as fee */
  readonly feePct: number
}

interface BlockPlan {
  readonly coinbase: ReadonlyArray<OutPlan>
  /** percent of subsidy + fees the coinbase claims (100: exactly the limit) */
  readonly claimPct: number
  readonly txs: ReadonlyArray<TxPlan>
}

interface SeedCoin {
  readonly value: bigint
  /** a coinbase seed coin (height 0) is mature only when the chain starts at height ≥ 99 */
  readonly coinbase: boolean
}

interface ChainPlan {
  /** height of the parent of the first block: 0 (heights 1..N) or 140 (crosses the halving at 150) */
  readonly start: number
  readonly seed: ReadonlyArray<SeedCoin>
  readonly blocks: ReadonlyArray<BlockPlan>
}

const outPlanArb: fc.Arbitrary<OutPlan> = fc.record({
  weight: fc.integer({ min: 1, max: 100 }),
  key: fc.integer({ min: 0, max: 255 }),
})

const txPlanArb: fc.Arbitrary<TxPlan> = fc.record({
  picks: fc.array(fc.record({ recent: fc.boolean(), n: fc.nat(63) }), { minLength: 1, maxLength: 3 }),
  outputs: fc.array(outPlanArb, { minLength: 1, maxLength: 3 }),
  feePct: fc.integer({ min: 0, max: 10 }),
})

const blockPlanArb: fc.Arbitrary<BlockPlan> = fc.record({
  coinbase: fc.array(outPlanArb, { minLength: 1, maxLength: 3 }),
  claimPct: fc.oneof(fc.constant(100), fc.integer({ min: 0, max: 100 })),
  txs: fc.array(txPlanArb, { maxLength: 8 }),
})

const seedArb: fc.Arbitrary<ReadonlyArray<SeedCoin>> = fc.array(
  fc.record({ value: fc.bigInt({ min: 1n, max: 10n * COIN }), coinbase: fc.boolean() }),
  { minLength: 1, maxLength: 24 },
)

const startArb = fc.constantFrom(0, 140)

const chainPlanArb = (maxBlocks: number): fc.Arbitrary<ChainPlan> =>
  fc.record({
    start: startArb,
    seed: seedArb,
    blocks: fc.array(blockPlanArb, { minLength: 1, maxLength: maxBlocks }),
  })

// ---------------------------------------------------------------------------------------------------
// The naive model and the builder that turns plans into blocks.
// ---------------------------------------------------------------------------------------------------

interface Entry {
  readonly txid: TxId
  readonly index: number
  readonly coin: Coin
}

/** BuiltBlock is a block with its txids and what the builder knows about its in-block spends. */
interface BuiltBlock {
  readonly block: Block
  readonly height: number
  readonly txids: ReadonlyArray<TxId>
  /** outputs created by one transaction of the block and spent by a later one */
  readonly spentInBlock: ReadonlySet<string>
  /** outputs the block spent that existed before it */
  readonly spentFromBefore: ReadonlySet<string>
  /** number of non-coinbase inputs: the length the undo must have */
  readonly inputCount: number
}

const seedTxid = (i: number): TxId => sha256(new TextEncoder().encode(`connect-test-seed-${i}`)) as TxId
const pubkeyOf = (key: number): PublicKey => new Uint8Array(32).fill(key) as PublicKey
const zeroSignature = (): Uint8Array => new Uint8Array(64)
const dummyPrev = new Uint8Array(32) as BlockHash

/** split divides `total` by weight; every output gets its floor share, so the sum never exceeds `total`. */
const split = (total: bigint, outs: ReadonlyArray<OutPlan>): Array<TxOut> => {
  const sum = BigInt(outs.reduce((s, o) => s + o.weight, 0))
  return outs.map((o) => ({ value: ((total * BigInt(o.weight)) / sum) as Amount, pubkey: pubkeyOf(o.key) }))
}

const sumValues = (values: ReadonlyArray<{ readonly value: bigint }>): bigint =>
  values.reduce((s, v) => s + v.value, 0n)

/**
 * Model is the naive UTXO set: a Map updated transaction by transaction (delete each input, add each
 * output), sharing no code with connectBlock. It also builds blocks from plans against its own state.
 */
class Model {
  constructor(readonly coins: Map<string, Entry> = new Map()) {}

  static seeded(seed: ReadonlyArray<SeedCoin>): Model {
    const model = new Model()
    seed.forEach((s, i) => {
      const txid = seedTxid(i)
      const index = i % 3
      const coin: Coin = {
        value: s.value as Amount,
        pubkey: pubkeyOf(i),
        height: 0 as Height,
        coinbase: s.coinbase,
      }
      model.coins.set(outpointKey(txid, index), { txid, index, coin })
    })
    return model
  }

  clone(): Model {
    return new Model(new Map(this.coins))
  }

  /** build turns a plan into the block at `height`; `tag` makes coinbases of rival branches differ. */
  build(plan: BlockPlan, height: number, tag: number): BuiltBlock {
    const txs: Array<Tx> = []
    const txids: Array<TxId> = []
    const createdHere = new Set<string>()
    const spentInBlock = new Set<string>()
    const spentFromBefore = new Set<string>()
    let inputCount = 0
    let fees = 0n
    for (const txPlan of plan.txs) {
      const pool = [...this.coins.values()].filter(
        (e) => !e.coin.coinbase || height - e.coin.height >= COINBASE_MATURITY,
      )
      const chosen: Array<Entry> = []
      for (const pick of txPlan.picks) {
        if (pool.length === 0) break
        const at = pick.n % pool.length
        chosen.push(pool.splice(pick.recent ? pool.length - 1 - at : at, 1)[0]!)
      }
      if (chosen.length === 0) continue
      const valueIn = sumValues(chosen.map((e) => e.coin))
      const outputs = split(valueIn - (valueIn * BigInt(txPlan.feePct)) / 100n, txPlan.outputs)
      const tx: Tx = {
        version: 1,
        inputs: chosen.map((e) => ({ prevout: { txid: e.txid, index: e.index }, witness: zeroSignature() })),
        outputs,
        lockTime: 0,
      }
      const txid = txidOf(encodeTx(tx))
      for (const e of chosen) {
        const key = outpointKey(e.txid, e.index)
        this.coins.delete(key)
        if (createdHere.has(key)) spentInBlock.add(key)
        else spentFromBefore.add(key)
      }
      this.addOutputs(txid, outputs, height, false, createdHere)
      inputCount += chosen.length
      fees += valueIn - sumValues(outputs)
      txs.push(tx)
      txids.push(txid)
    }
    const claim = ((blockSubsidy(height, regtest.halvingInterval) + fees) * BigInt(plan.claimPct)) / 100n
    const coinbase = makeCoinbase(height, split(claim, plan.coinbase), Uint8Array.of(tag))
    const coinbaseTxid = txidOf(encodeTx(coinbase))
    this.addOutputs(coinbaseTxid, coinbase.outputs, height, true, createdHere)
    const block = assembleBlock({ prev: dummyPrev, time: 0, bits: regtest.powLimitBits }, [coinbase, ...txs])
    return { block, height, txids: [coinbaseTxid, ...txids], spentInBlock, spentFromBefore, inputCount }
  }

  private addOutputs(
    txid: TxId,
    outputs: ReadonlyArray<TxOut>,
    height: number,
    coinbase: boolean,
    createdHere: Set<string>,
  ): void {
    outputs.forEach((output, index) => {
      const key = outpointKey(txid, index)
      const coin: Coin = { value: output.value, pubkey: output.pubkey, height: height as Height, coinbase }
      this.coins.set(key, { txid, index, coin })
      createdHere.add(key)
    })
  }
}

/** buildChain builds consecutive blocks after `start` on `model` (which it advances). */
const buildChain = (
  model: Model,
  plans: ReadonlyArray<BlockPlan>,
  start: number,
  tag: number,
): Array<BuiltBlock> => plans.map((plan, i) => model.build(plan, start + 1 + i, tag))

// ---------------------------------------------------------------------------------------------------
// Snapshots and the connect / disconnect drivers.
// ---------------------------------------------------------------------------------------------------

type Snapshot = ReadonlyArray<readonly [string, string]>

const byKey = (a: readonly [string, string], b: readonly [string, string]): number =>
  a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0

/** snapshot is a UTXO map as sorted [key, hex(encodeCoin(coin))]: value, pubkey, height and coinbase flag. */
const snapshot = (coins: Iterable<readonly [string, Coin]>): Snapshot =>
  [...coins].map(([key, coin]) => [key, toHex(encodeCoin(coin))] as const).sort(byKey)

const snapshotOfModel = (model: Model): Snapshot =>
  snapshot([...model.coins].map(([key, e]) => [key, e.coin] as const))

const utxoSetOf = (model: Model): MemoryUtxoSet => {
  const set = new MemoryUtxoSet()
  set.apply({ spent: [], created: [...model.coins].map(([key, e]) => [key, e.coin] as const) })
  return set
}

const connectOrFail = (built: BuiltBlock, set: MemoryUtxoSet): Connected => {
  const r = connectBlock(built.block, built.txids, built.height, set, regtest)
  if (Either.isLeft(r)) throw new Error(`block at height ${built.height} rejected: ${r.left.message}`)
  return r.right
}

/** roundTrip stores undo data and reads it back, as the chain does between connect and disconnect. */
const roundTrip = (undo: BlockUndo): BlockUndo => {
  const decoded = decodeUndo(encodeUndo(undo))
  if (Either.isLeft(decoded)) throw new Error(`undo did not decode: ${decoded.left.message}`)
  return decoded.right
}

const disconnectOrFail = (built: BuiltBlock, undo: BlockUndo): UtxoDelta => {
  const r = disconnectBlock(built.block, built.txids, undo)
  if (Either.isLeft(r)) throw new Error(`block at height ${built.height} not disconnected: ${r.left.message}`)
  return r.right
}

/** connectAll connects and applies every block, returning each block's undo. */
const connectAll = (blocks: ReadonlyArray<BuiltBlock>, set: MemoryUtxoSet): Array<BlockUndo> =>
  blocks.map((built) => {
    const connected = connectOrFail(built, set)
    set.apply(connected.delta)
    return connected.undo
  })

/** disconnectAll disconnects the blocks tip first, each with its undo read back from storage. */
const disconnectAll = (
  blocks: ReadonlyArray<BuiltBlock>,
  undos: ReadonlyArray<BlockUndo>,
  set: MemoryUtxoSet,
): void => {
  for (let i = blocks.length - 1; i >= 0; i--) set.apply(disconnectOrFail(blocks[i]!, roundTrip(undos[i]!)))
}

const sortedStrings = (xs: Iterable<string>): Array<string> => [...xs].sort()

// Coverage: the properties are vacuous unless the generated chains really spend coins, chain spends
// inside a block, and spend matured coinbases; these counters prove they did.
const coverage = { spends: 0, inBlockSpends: 0, coinbaseSpends: 0 }

// ---------------------------------------------------------------------------------------------------

describe("connectBlock and disconnectBlock over random chains", () => {
  it("disconnecting each block (undo stored and read back) restores the exact UTXO set from before it", () => {
    fc.assert(
      fc.property(chainPlanArb(30), (plan) => {
        const model = Model.seeded(plan.seed)
        const set = utxoSetOf(model)
        const seedSnapshot = snapshot(set.coins)
        const blocks: Array<BuiltBlock> = []
        const undos: Array<BlockUndo> = []
        const before: Array<Snapshot> = []
        plan.blocks.forEach((blockPlan, i) => {
          const built = model.build(blockPlan, plan.start + 1 + i, 0)
          const connected = connectOrFail(built, set)
          before.push(snapshot(set.coins))
          set.apply(connected.delta)
          blocks.push(built)
          undos.push(connected.undo)
          coverage.spends += built.inputCount
          coverage.inBlockSpends += built.spentInBlock.size
          coverage.coinbaseSpends += connected.undo.filter((c) => c.coinbase).length
        })
        for (let i = blocks.length - 1; i >= 0; i--) {
          const stored = roundTrip(undos[i]!)
          expect(stored).toEqual(undos[i])
          set.apply(disconnectOrFail(blocks[i]!, stored))
          expect(snapshot(set.coins)).toEqual(before[i])
        }
        expect(snapshot(set.coins)).toEqual(seedSnapshot)
      }),
      { seed: 0x5eed_0001, numRuns: 200 },
    )
    expect(coverage.spends).toBeGreaterThan(0)
    expect(coverage.inBlockSpends).toBeGreaterThan(0)
    expect(coverage.coinbaseSpends).toBeGreaterThan(0)
  })

  it("the UTXO set after each connected block equals a naive model updated transaction by transaction", () => {
    fc.assert(
      fc.property(chainPlanArb(30), (plan) => {
        const model = Model.seeded(plan.seed)
        const set = utxoSetOf(model)
        plan.blocks.forEach((blockPlan, i) => {
          const built = model.build(blockPlan, plan.start + 1 + i, 0)
          set.apply(connectOrFail(built, set).delta)
          expect(sortedStrings(set.coins.keys())).toEqual(sortedStrings(model.coins.keys()))
          expect(snapshot(set.coins)).toEqual(snapshotOfModel(model))
        })
      }),
      { seed: 0x5eed_0002, numRuns: 200 },
    )
  })

  it("the undo data lists every spent coin in input order, coinbase excluded", () => {
    fc.assert(
      fc.property(chainPlanArb(10), (plan) => {
        const model = Model.seeded(plan.seed)
        const set = utxoSetOf(model)
        plan.blocks.forEach((blockPlan, i) => {
          const view = new Map(model.coins)
          const built = model.build(blockPlan, plan.start + 1 + i, 0)
          const connected = connectOrFail(built, set)
          // Resolve every input against the coins before the block plus the block's own earlier outputs.
          built.block.txs.forEach((tx, t) => {
            tx.outputs.forEach((output, index) => {
              const coin: Coin = {
                value: output.value,
                pubkey: output.pubkey,
                height: built.height as Height,
                coinbase: t === 0,
              }
              view.set(outpointKey(built.txids[t]!, index), { txid: built.txids[t]!, index, coin })
            })
          })
          const expected = built.block.txs
            .slice(1)
            .flatMap((tx) =>
              tx.inputs.map((input) => view.get(outpointKey(input.prevout.txid, input.prevout.index))),
            )
          expect(connected.undo).toHaveLength(built.inputCount)
          expect(connected.undo).toEqual(expected.map((e) => e?.coin))
          set.apply(connected.delta)
        })
      }),
      { seed: 0x5eed_0003, numRuns: 80 },
    )
  })

  it("the delta is the net change: an output created and spent inside the block is neither spent nor created", () => {
    let chained = 0
    fc.assert(
      fc.property(chainPlanArb(12), (plan) => {
        const model = Model.seeded(plan.seed)
        const set = utxoSetOf(model)
        plan.blocks.forEach((blockPlan, i) => {
          const built = model.build(blockPlan, plan.start + 1 + i, 0)
          const { delta } = connectOrFail(built, set)
          const createdKeys = delta.created.map(([key]) => key)
          for (const key of built.spentInBlock) {
            expect(delta.spent).not.toContain(key)
            expect(createdKeys).not.toContain(key)
          }
          expect(new Set(delta.spent).size).toBe(delta.spent.length)
          expect(sortedStrings(delta.spent)).toEqual(sortedStrings(built.spentFromBefore))
          const survivors = built.block.txs.flatMap((tx, t) =>
            tx.outputs
              .map((_, n) => outpointKey(built.txids[t]!, n))
              .filter((k) => !built.spentInBlock.has(k)),
          )
          expect(sortedStrings(createdKeys)).toEqual(sortedStrings(survivors))
          chained += built.spentInBlock.size
          set.apply(delta)
        })
      }),
      { seed: 0x5eed_0004, numRuns: 150 },
    )
    expect(chained).toBeGreaterThan(0)
  })

  it("a reorg (connect prefix+A, disconnect A, connect B) leaves the same UTXO set as replaying prefix+B", () => {
    fc.assert(
      fc.property(
        startArb,
        seedArb,
        fc.array(blockPlanArb, { maxLength: 10 }),
        fc.array(blockPlanArb, { minLength: 1, maxLength: 10 }),
        fc.array(blockPlanArb, { minLength: 1, maxLength: 10 }),
        (start, seed, prefixPlans, aPlans, bPlans) => {
          const model = Model.seeded(seed)
          const initial = utxoSetOf(model)
          const prefix = buildChain(model, prefixPlans, start, 0)
          const fork = start + prefix.length
          const branchA = buildChain(model.clone(), aPlans, fork, 1)
          const modelB = model.clone()
          const branchB = buildChain(modelB, bPlans, fork, 2)

          const reorged = utxoSetOf(Model.seeded(seed))
          connectAll(prefix, reorged)
          const atFork = snapshot(reorged.coins)
          const undosA = connectAll(branchA, reorged)
          disconnectAll(branchA, undosA, reorged)
          expect(snapshot(reorged.coins)).toEqual(atFork)
          connectAll(branchB, reorged)

          connectAll([...prefix, ...branchB], initial)
          expect(snapshot(reorged.coins)).toEqual(snapshot(initial.coins))
          expect(snapshot(reorged.coins)).toEqual(snapshotOfModel(modelB))
        },
      ),
      { seed: 0x5eed_0005, numRuns: 100 },
    )
  })
})

describe("disconnectBlock with undo data that does not fit the block", () => {
  /** builtChain connects a generated chain and returns each block with the undo connectBlock produced. */
  const builtChain = (plan: ChainPlan): Array<{ built: BuiltBlock; undo: BlockUndo }> => {
    const model = Model.seeded(plan.seed)
    const set = utxoSetOf(model)
    return plan.blocks.map((blockPlan, i) => {
      const built = model.build(blockPlan, plan.start + 1 + i, 0)
      const connected = connectOrFail(built, set)
      set.apply(connected.delta)
      return { built, undo: connected.undo }
    })
  }

  const reasonOf = (built: BuiltBlock, undo: BlockUndo): string =>
    Either.match(disconnectBlock(built.block, built.txids, undo), {
      onLeft: (e) => e.reason,
      onRight: () => "fits",
    })

  const extraCoin: Coin = { value: 1n as Amount, pubkey: pubkeyOf(7), height: 0 as Height, coinbase: false }

  it('is refused as "bad-undo", never thrown, when coins are missing from the end', () => {
    fc.assert(
      fc.property(chainPlanArb(6), fc.nat(), (plan, cut) => {
        for (const { built, undo } of builtChain(plan)) {
          expect(reasonOf(built, undo)).toBe("fits")
          if (undo.length === 0) continue
          const shorter = undo.slice(0, cut % undo.length)
          expect(reasonOf(built, shorter)).toBe("bad-undo")
        }
      }),
      { seed: 0x5eed_0006, numRuns: 100 },
    )
  })

  it('is refused as "bad-undo", never thrown, when it carries extra coins', () => {
    fc.assert(
      fc.property(chainPlanArb(6), fc.integer({ min: 1, max: 3 }), (plan, extra) => {
        for (const { built, undo } of builtChain(plan)) {
          const longer = [...undo, ...Array.from({ length: extra }, () => extraCoin)]
          expect(reasonOf(built, longer)).toBe("bad-undo")
        }
      }),
      { seed: 0x5eed_0007, numRuns: 100 },
    )
  })

  it('is refused as "bad-undo" for a coinbase-only block given any coin, and fits with none', () => {
    const built = new Model().build({ coinbase: [{ weight: 1, key: 1 }], claimPct: 100, txs: [] }, 1, 0)
    expect(reasonOf(built, [])).toBe("fits")
    expect(reasonOf(built, [extraCoin])).toBe("bad-undo")
  })

  it('is refused as "bad-undo" for a spending block given no coins at all', () => {
    const model = Model.seeded([{ value: COIN, coinbase: false }])
    const plan: BlockPlan = {
      coinbase: [{ weight: 1, key: 1 }],
      claimPct: 100,
      txs: [{ picks: [{ recent: false, n: 0 }], outputs: [{ weight: 1, key: 2 }], feePct: 1 }],
    }
    const built = model.build(plan, 1, 0)
    expect(built.inputCount).toBe(1)
    expect(reasonOf(built, [])).toBe("bad-undo")
  })
})
