import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, TestClock } from "effect"
import * as ChainActor from "../../src/actors/Chain.js"
import { Chain } from "../../src/actors/Chain.js"
import * as MempoolActor from "../../src/actors/Mempool.js"
import { Mempool } from "../../src/actors/Mempool.js"
import * as WalletActor from "../../src/actors/Wallet.js"
import { Wallet, type WalletError } from "../../src/actors/Wallet.js"
import { decodeAddress, encodeAddress } from "../../src/consensus/address.js"
import { assembleBlock, grind, makeCoinbase } from "../../src/consensus/assemble.js"
import { headerHash } from "../../src/consensus/checkBlock.js"
import { MAX_MONEY } from "../../src/consensus/checkTx.js"
import { txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { blockSubsidy } from "../../src/consensus/pow.js"
import { ChainStore, makeMemoryStore } from "../../src/layers/ChainStore.js"
import * as Keystore from "../../src/layers/Keystore.js"
import { layerDefault, loadDefaultBackend } from "../../src/layers/Signatures.js"
import * as SigVerifier from "../../src/layers/SigVerifier.js"
import { encodeBlock } from "../../src/schema/block.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, BlockHash, PublicKey, TxId } from "../../src/schema/primitives.js"
import { encodeTx, type Tx, txSize } from "../../src/schema/tx.js"
import { testKey } from "../support/chain.js"

// The real Mempool actor (src/actors/Mempool.ts) runs under the wallet in these tests.

const backend = loadDefaultBackend().backend
const COIN = 100_000_000n
const SUBSIDY = 50n * COIN
/** someone else: payments leave the wallet to this key, and side-branch blocks pay it */
const outsider = testKey(backend, 99)
const outsiderAddress = encodeAddress(regtest.hrp, outsider.pubkey)

/** services runs the Chain, the Mempool, a memory Keystore and the Wallet over a fresh memory store. */
const services = () => {
  const verifier = SigVerifier.layerInline().pipe(Layer.provide(layerDefault))
  const base = Layer.mergeAll(Layer.succeed(ChainStore, makeMemoryStore()), layerDefault, verifier)
  const chain = ChainActor.layer(ChainActor.defaultChainConfig(regtest)).pipe(Layer.provideMerge(base))
  const pool = MempoolActor.layer(MempoolActor.defaultMempoolPolicy).pipe(Layer.provideMerge(chain))
  const keystore = Keystore.layer({ network: regtest }).pipe(Layer.provide(layerDefault))
  return WalletActor.layer({ network: regtest }).pipe(Layer.provideMerge(Layer.merge(pool, keystore)))
}

/** The node's clock: two days after genesis, so no test block is too new. */
const setClock = TestClock.setTime((regtest.genesis.header.time + 86_400 * 2) * 1000)

/** Tip is where a test chain ends: enough to build the next block on it. */
interface Tip {
  readonly hash: BlockHash
  readonly height: number
  readonly time: number
}
const genesis: Tip = { hash: regtest.genesisHash, height: 0, time: regtest.genesis.header.time }

/** mine submits `n` blocks on `from`, each paying its subsidy to `payTo`; `txs` go into the first. */
const mine = (from: Tip, n: number, payTo: Uint8Array, txs: ReadonlyArray<Tx> = []) =>
  Effect.gen(function* () {
    const chain = yield* Chain
    let tip = from
    for (let i = 0; i < n; i++) {
      const height = tip.height + 1
      const coinbase = makeCoinbase(height, [
        { value: blockSubsidy(height, regtest.halvingInterval) as Amount, pubkey: payTo as PublicKey },
      ])
      const block = grind(
        assembleBlock({ prev: tip.hash, time: tip.time + 60, bits: regtest.powLimitBits }, [
          coinbase,
          ...(i === 0 ? txs : []),
        ]),
        regtest.powLimit,
      )!
      yield* chain.submitBlock(encodeBlock(block))
      tip = { hash: headerHash(block.header), height, time: block.header.time }
    }
    return tip
  })

/** keyOf is the x-only key an address of this wallet pays. */
const keyOf = (address: string): PublicKey => {
  const key = decodeAddress(regtest.hrp, address)
  if (key._tag === "Left") throw new Error(key.left.message)
  return key.right
}

/** sendError runs a send that must fail and returns its WalletError. */
const sendError = (address: string, amount: bigint, options?: { feeRate?: number }) =>
  Effect.flip(Effect.flatMap(Wallet, (w) => w.send(address, amount, options)))

/** size of a signed payment with `inputs` inputs and `outputs` outputs */
const sizeOf = (inputs: number, outputs: number) => 4 + 1 + inputs * (32 + 4 + 1 + 64) + 1 + outputs * 40 + 4

describe("Wallet actor: coins, balance, payments", () => {
  it.scoped("a coinbase counts once mature; a payment spends it, and its change counts once confirmed", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      const mempool = yield* Mempool
      const address = yield* wallet.newAddress
      const key = keyOf(address)

      let tip = yield* mine(genesis, 100, key)
      expect(yield* wallet.balance()).toBe(0n)
      expect(yield* wallet.balance(0)).toBe(0n)
      tip = yield* mine(tip, 1, key)
      // 101 blocks: the first coinbase has 101 confirmations and is the only spendable one
      expect(yield* wallet.balance()).toBe(SUBSIDY)
      expect(yield* wallet.balance(0)).toBe(SUBSIDY)
      const unspent = yield* wallet.listUnspent()
      expect(unspent).toHaveLength(1)
      expect(unspent[0]).toMatchObject({ vout: 0, address, amount: SUBSIDY, confirmations: 101 })
      expect(yield* wallet.listUnspent(102)).toEqual([])

      const txid = yield* wallet.send(outsiderAddress, 10n * COIN)
      const entry = Option.getOrThrow(yield* mempool.get(txid))
      expect(entry.tx.inputs).toHaveLength(1)
      expect(entry.tx.outputs).toHaveLength(2)
      // the fee is the default 2 units per byte of the exact size
      expect(entry.size).toBe(sizeOf(1, 2))
      expect(entry.size).toBe(txSize(entry.tx))
      expect(entry.fee).toBe(BigInt(2 * sizeOf(1, 2)))
      const change = SUBSIDY - 10n * COIN - entry.fee
      const changeOutput = entry.tx.outputs.find((o) => o.value === change)!
      expect(toHex(changeOutput.pubkey)).not.toBe(toHex(key))
      expect(entry.tx.outputs.find((o) => o.value === 10n * COIN)!.pubkey).toEqual(outsider.pubkey)

      // in the mempool: the spent coin no longer counts; the change counts only with minconf 0
      expect(yield* wallet.balance()).toBe(0n)
      expect(yield* wallet.balance(0)).toBe(change)
      const pending = yield* wallet.listUnspent(0)
      expect(pending).toEqual([
        {
          txid: toHex(txid),
          vout: entry.tx.outputs.indexOf(changeOutput),
          address: encodeAddress(regtest.hrp, changeOutput.pubkey),
          amount: change,
          confirmations: 0,
        },
      ])

      // confirmed in block 102 (paying the outsider): the change counts, and so does coinbase 2, now mature
      tip = yield* mine(tip, 1, outsider.pubkey, [entry.tx])
      expect(Option.isNone(yield* mempool.get(txid))).toBe(true)
      expect(yield* wallet.balance()).toBe(change + SUBSIDY)
      expect(yield* wallet.balance(0)).toBe(change + SUBSIDY)
      const rows = yield* wallet.listUnspent()
      expect(rows.map((r) => [r.amount, r.confirmations])).toEqual([
        [SUBSIDY, 101],
        [change, 1],
      ])
      expect(tip.height).toBe(102)
    }).pipe(Effect.provide(services())),
  )

  it.scoped("refusals carry the RPC codes: -5 address, -3 amount, -8 fee rate, -6 funds, -26 mempool", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      yield* mine(genesis, 101, keyOf(yield* wallet.newAddress))

      const codeOf = (e: WalletError) => [e.code, e.reason] as const
      expect(codeOf(yield* sendError("not-an-address", COIN))).toEqual([-5, "invalid-address"])
      const testnetAddress = encodeAddress("tfc", outsider.pubkey)
      const wrongNetwork = yield* sendError(testnetAddress, COIN)
      expect(codeOf(wrongNetwork)).toEqual([-5, "invalid-address"])
      expect(wrongNetwork.message).toContain("testnet")
      const mistyped = `${outsiderAddress.slice(0, -1)}${outsiderAddress.endsWith("q") ? "p" : "q"}`
      expect((yield* sendError(mistyped, COIN)).code).toBe(-5)

      expect(codeOf(yield* sendError(outsiderAddress, 0n))).toEqual([-3, "invalid-amount"])
      expect((yield* sendError(outsiderAddress, -1n)).code).toBe(-3)
      expect((yield* sendError(outsiderAddress, MAX_MONEY + 1n)).code).toBe(-3)
      expect((yield* sendError(outsiderAddress, COIN, { feeRate: -1 })).code).toBe(-8)
      expect((yield* sendError(outsiderAddress, COIN, { feeRate: Number.NaN })).code).toBe(-8)

      const short = yield* sendError(outsiderAddress, 60n * COIN)
      expect(codeOf(short)).toEqual([-6, "insufficient-funds"])
      expect(short.message).toContain("Insufficient funds")
      // the whole coin cannot pay itself and a fee
      expect((yield* sendError(outsiderAddress, SUBSIDY)).code).toBe(-6)

      // below the mempool's 1 unit/byte minimum: the mempool's own reason comes back with -26
      const lowFee = yield* sendError(outsiderAddress, COIN, { feeRate: 0.5 })
      expect(codeOf(lowFee)).toEqual([-26, "min-fee-not-met"])
      // nothing changed: the coin is still there
      expect(yield* wallet.balance()).toBe(SUBSIDY)
    }).pipe(Effect.provide(services())),
  )

  it.scoped("change below the dust threshold goes to the fee instead of a tiny output", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      const mempool = yield* Mempool
      yield* mine(genesis, 101, keyOf(yield* wallet.newAddress))
      // 1 input, 1 output costs 2 × 151 = 302 units; 500 more would be 420 units of change after the
      // bigger fee of a second output: under 1000, so there is no change output and the fee is 802
      const amount = SUBSIDY - BigInt(2 * sizeOf(1, 1)) - 500n
      const txid = yield* wallet.send(outsiderAddress, amount)
      const entry = Option.getOrThrow(yield* mempool.get(txid))
      expect(entry.tx.outputs).toHaveLength(1)
      expect(entry.fee).toBe(BigInt(2 * sizeOf(1, 1)) + 500n)
      expect(yield* wallet.balance(0)).toBe(0n)
      expect((yield* sendError(outsiderAddress, COIN)).code).toBe(-6)
    }).pipe(Effect.provide(services())),
  )

  it.scoped("own unconfirmed change pays a second payment before the first confirms", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      const mempool = yield* Mempool
      yield* mine(genesis, 101, keyOf(yield* wallet.newAddress))
      const first = yield* wallet.send(outsiderAddress, 10n * COIN)
      const second = yield* wallet.send(outsiderAddress, 5n * COIN)
      const parent = Option.getOrThrow(yield* mempool.get(first))
      const child = Option.getOrThrow(yield* mempool.get(second))
      expect(child.parents.map(toHex)).toEqual([toHex(first)])
      expect(yield* wallet.balance(0)).toBe(SUBSIDY - 15n * COIN - parent.fee - child.fee)
      expect(yield* wallet.balance()).toBe(0n)
    }).pipe(Effect.provide(services())),
  )

  it.scoped("a reorg that removes the blocks paying the wallet takes their coins away", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      yield* mine(genesis, 101, keyOf(yield* wallet.newAddress))
      expect(yield* wallet.balance()).toBe(SUBSIDY)
      expect(yield* wallet.listUnspent(0)).toHaveLength(1)
      // a heavier branch from genesis paying someone else
      const other = yield* mine({ ...genesis, time: genesis.time + 7 }, 102, outsider.pubkey)
      expect((yield* (yield* Chain).tip).height).toBe(102)
      expect(toHex((yield* (yield* Chain).tip).hash)).toBe(toHex(other.hash))
      expect(yield* wallet.balance()).toBe(0n)
      expect(yield* wallet.balance(0)).toBe(0n)
      expect(yield* wallet.listUnspent(0)).toEqual([])
    }).pipe(Effect.provide(services())),
  )

  it.scoped(
    "a reorg that removes a payment's block gives back the coin it spent, spent again by the mempool",
    () =>
      Effect.gen(function* () {
        yield* setClock
        const wallet = yield* Wallet
        const mempool = yield* Mempool
        const key = keyOf(yield* wallet.newAddress)
        const at101 = yield* mine(genesis, 101, key)
        const txid = yield* wallet.send(outsiderAddress, 10n * COIN)
        const entry = Option.getOrThrow(yield* mempool.get(txid))
        const change = SUBSIDY - 10n * COIN - entry.fee
        yield* mine(at101, 1, outsider.pubkey, [entry.tx])
        expect(yield* wallet.balance()).toBe(change + SUBSIDY)

        // replace block 102 by two blocks without the payment: it goes back to the mempool, so coinbase 1
        // is restored but spent there, the change is unconfirmed again, and coinbases 2 and 3 are mature
        yield* mine({ ...at101, time: at101.time + 7 }, 2, outsider.pubkey)
        expect(Option.isSome(yield* mempool.get(txid))).toBe(true)
        expect(yield* wallet.balance()).toBe(2n * SUBSIDY)
        const pending = yield* wallet.listUnspent(0)
        expect(pending.map((r) => [r.amount, r.confirmations])).toEqual([
          [SUBSIDY, 102],
          [SUBSIDY, 101],
          [change, 0],
        ])
        expect(yield* wallet.balance(0)).toBe(2n * SUBSIDY + change)
      }).pipe(Effect.provide(services())),
  )

  it.scoped("keys within the lookahead are watched, and a restarted wallet finds its coins in one scan", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      const keystore = yield* Keystore.Keystore
      // key 7 was never handed out (count is 0) but is within the lookahead of 20
      const ahead = keystore.publicKey(7)
      yield* mine(genesis, 101, ahead)
      expect(yield* wallet.balance()).toBe(SUBSIDY)
      const first = yield* wallet.newAddress
      expect(first).toBe(encodeAddress(regtest.hrp, keystore.publicKey(0)))
      expect(yield* wallet.newAddress).not.toBe(first)

      // a second wallet actor over the same store and keystore rebuilds the same view from the UTXO set
      const restarted = yield* WalletActor.make({ network: regtest }).pipe(
        Effect.provide(WalletActor.sourceFromChain),
      )
      expect(yield* restarted.balance()).toBe(SUBSIDY)
      expect(yield* restarted.listUnspent()).toEqual(yield* wallet.listUnspent())
    }).pipe(Effect.provide(services())),
  )

  it.scoped("a payment's txid is the hash of the transaction the mempool holds", () =>
    Effect.gen(function* () {
      yield* setClock
      const wallet = yield* Wallet
      const mempool = yield* Mempool
      yield* mine(genesis, 101, keyOf(yield* wallet.newAddress))
      const txid: TxId = yield* wallet.send(outsiderAddress, COIN, { feeRate: 5 })
      const entry = Option.getOrThrow(yield* mempool.get(txid))
      expect(toHex(txidOf(encodeTx(entry.tx)))).toBe(toHex(txid))
      expect(entry.fee).toBe(BigInt(5 * sizeOf(1, 2)))
    }).pipe(Effect.provide(services())),
  )
})
