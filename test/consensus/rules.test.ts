import { Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { assembleBlock, makeCoinbase } from "../../src/consensus/assemble.js"
import {
  checkBlock,
  connectBlock,
  headerHash,
  txidsOf,
  validateBlock,
} from "../../src/consensus/checkBlock.js"
import { checkTransaction, MAX_MONEY } from "../../src/consensus/checkTx.js"
import { txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { checkProofOfWork } from "../../src/consensus/pow.js"
import { outpointKey, type UtxoView } from "../../src/consensus/utxo.js"
import { loadDefaultBackend } from "../../src/layers/Signatures.js"
import type { Block } from "../../src/schema/block.js"
import type { Coin } from "../../src/schema/coin.js"
import type { Amount, BlockHash, Height } from "../../src/schema/primitives.js"
import { encodeTx, type Tx } from "../../src/schema/tx.js"
import { fakeTxid, pay, type Spendable, TestChain, type TestKey, testKey } from "../support/chain.js"

const COIN = 100_000_000n
const backend = loadDefaultBackend().backend
let chain: TestChain
let alice: TestKey
let bob: TestKey
/** a mature coinbase coin of 50 coins owned by the miner */
let coin: Spendable
let coin2: Spendable
/** a valid spend of `coin`: 50 coins → 49 to bob, 1 coin fee */
let spend: Tx

beforeAll(() => {
  alice = testKey(backend, 1)
  bob = testKey(backend, 2)
  chain = new TestChain(regtest, backend, alice)
  chain.registerKey(bob)
  chain.mine(102)
  const mature = chain.matureCoins()
  coin = mature[0]!
  coin2 = mature[1]!
  spend = chain.spend([coin], [pay(bob, 49n * COIN)])
})

const subsidy = () => (50n * COIN) >> BigInt(Math.floor((chain.height + 1) / regtest.halvingInterval))
const reasonOf = (block: Block, view: UtxoView = chain.utxos) =>
  Either.match(validateBlock(block, chain.context(), view, backend), {
    onLeft: (e) => ({ reason: e.reason, banScore: e.banScore }),
    onRight: () => ({ reason: "valid", banScore: 0 }),
  })
/** withHeader re-grinds a block after changing its header fields. */
const withHeader = (block: Block, change: Partial<Block["header"]>): Block =>
  chain.grind({ header: { ...block.header, ...change, nonce: 0 }, txs: block.txs })
/** raw assembles a block with exactly these txs (no automatic coinbase). */
const raw = (txs: ReadonlyArray<Tx>, time?: number): Block =>
  chain.grind(
    assembleBlock(
      { prev: chain.tip, time: time ?? chain.context().medianTimePast + 600, bits: regtest.powLimitBits },
      txs,
    ),
  )
const cb = (value = subsidy(), height = chain.height + 1, extra?: Uint8Array) =>
  makeCoinbase(height, [pay(alice, value)], extra)
const unsigned = (tx: Tx, change: Partial<Tx>): Tx => ({ ...tx, ...change })
/** viewWith overlays extra coins on the chain's UTXO set. */
const viewWith = (extra: Record<string, Coin>): UtxoView => ({
  get: (key) => extra[key] ?? chain.utxos.get(key),
})

describe("block and transaction rules: each case breaks exactly one rule and gets exactly its reason", () => {
  it("the unbroken fixture block is valid", () => {
    expect(reasonOf(chain.candidate([spend]))).toEqual({ reason: "valid", banScore: 0 })
  })

  const cases: ReadonlyArray<{
    reason: string
    banScore: number
    rule: string
    build: () => Block | [Block, UtxoView]
  }> = [
    {
      rule: "proof of work: the hash must meet the target",
      reason: "high-hash",
      banScore: 50,
      build: () => {
        const ok = chain.candidate([spend])
        let header = ok.header
        while (checkProofOfWork(headerHash(header), header.bits, regtest.powLimit)) {
          header = { ...header, nonce: header.nonce + 1 }
        }
        return { header, txs: ok.txs }
      },
    },
    {
      rule: "bits must equal the required difficulty",
      reason: "bad-diffbits",
      banScore: 100,
      build: () => withHeader(chain.candidate([spend]), { bits: 0x207ffffe }),
    },
    {
      rule: "the header must link to the tip",
      reason: "bad-prevblk",
      banScore: 0,
      build: () =>
        withHeader(chain.candidate([spend]), { prev: fakeTxid("elsewhere") as unknown as BlockHash }),
    },
    {
      rule: "time must be after the median-time-past",
      reason: "time-too-old",
      banScore: 100,
      build: () => withHeader(chain.candidate([spend]), { time: chain.context().medianTimePast }),
    },
    {
      rule: "time must be at most two hours ahead of the node's clock",
      reason: "time-too-new",
      banScore: 0,
      build: () => withHeader(chain.candidate([spend]), { time: chain.context().now + 2 * 3600 + 1 }),
    },
    {
      rule: "the merkle root must commit to the transactions",
      reason: "bad-txnmrklroot",
      banScore: 100,
      build: () => withHeader(chain.candidate([spend]), { merkleRoot: new Uint8Array(32) }),
    },
    {
      rule: "a duplicated last subtree (CVE-2012-2459) is a mutated block",
      reason: "bad-txns-duplicate",
      banScore: 100,
      build: () => {
        const other = chain.spend([coin2], [pay(bob, 49n * COIN)])
        const b = raw([cb(subsidy() + 2n * COIN), spend, other])
        return { header: b.header, txs: [...b.txs, other] }
      },
    },
    {
      rule: "the same transaction twice (not adjacent)",
      reason: "bad-txns-duplicate",
      banScore: 100,
      build: () => {
        const other = chain.spend([coin2], [pay(bob, 49n * COIN)])
        return raw([cb(), spend, other, spend])
      },
    },
    {
      rule: "a block needs at least one transaction",
      reason: "bad-blk-length",
      banScore: 100,
      build: () => raw([]),
    },
    {
      rule: "the first transaction must be a coinbase",
      reason: "bad-cb-missing",
      banScore: 100,
      build: () => raw([spend]),
    },
    {
      rule: "only the first transaction may be a coinbase",
      reason: "bad-cb-multiple",
      banScore: 100,
      build: () => raw([cb(), cb(1n, chain.height + 1, Uint8Array.of(1))]),
    },
    {
      rule: "a transaction needs inputs",
      reason: "bad-txns-vin-empty",
      banScore: 100,
      build: () => chain.candidate([unsigned(spend, { inputs: [] })]),
    },
    {
      rule: "a transaction needs outputs",
      reason: "bad-txns-vout-empty",
      banScore: 100,
      build: () => chain.candidate([unsigned(spend, { outputs: [] })]),
    },
    {
      rule: "a transaction is at most 1,000,000 bytes",
      reason: "bad-txns-oversize",
      banScore: 100,
      build: () =>
        chain.candidate([unsigned(spend, { outputs: Array.from({ length: 25_000 }, () => pay(bob, 1n)) })]),
    },
    {
      rule: "an output is at most MAX_MONEY",
      reason: "bad-txns-vout-toolarge",
      banScore: 100,
      build: () => chain.candidate([unsigned(spend, { outputs: [pay(bob, MAX_MONEY + 1n)] })]),
    },
    {
      rule: "the outputs together are at most MAX_MONEY",
      reason: "bad-txns-txouttotal-toolarge",
      banScore: 100,
      build: () => chain.candidate([unsigned(spend, { outputs: [pay(bob, MAX_MONEY), pay(bob, 1n)] })]),
    },
    {
      rule: "a transaction spends an outpoint once",
      reason: "bad-txns-inputs-duplicate",
      banScore: 100,
      build: () => chain.candidate([unsigned(spend, { inputs: [spend.inputs[0]!, spend.inputs[0]!] })]),
    },
    {
      rule: "coinbase data is 4..100 bytes",
      reason: "bad-cb-length",
      banScore: 100,
      build: () => raw([cb(subsidy(), chain.height + 1, new Uint8Array(97))]),
    },
    {
      rule: "a spending input may not use the null outpoint",
      reason: "bad-txns-prevout-null",
      banScore: 100,
      build: () =>
        chain.candidate([
          unsigned(spend, {
            inputs: [spend.inputs[0]!, { prevout: cb().inputs[0]!.prevout, witness: new Uint8Array(64) }],
          }),
        ]),
    },
    {
      rule: "a spending input carries exactly one 64-byte signature",
      reason: "bad-txns-sig-size",
      banScore: 100,
      build: () =>
        chain.candidate([
          unsigned(spend, { inputs: [{ prevout: spend.inputs[0]!.prevout, witness: new Uint8Array(63) }] }),
        ]),
    },
    {
      rule: "every transaction is final (height lock not yet reached)",
      reason: "bad-txns-nonfinal",
      banScore: 100,
      build: () => chain.candidate([chain.spend([coin], [pay(bob, 49n * COIN)], chain.height + 1)]),
    },
    {
      rule: "the coinbase commits to the block's height",
      reason: "bad-cb-height",
      banScore: 100,
      build: () => raw([cb(subsidy(), chain.height), spend]),
    },
    {
      rule: "inputs must exist",
      reason: "bad-txns-inputs-missingorspent",
      banScore: 100,
      build: () =>
        chain.candidate([
          chain.spend([{ ...coin, outpoint: { txid: fakeTxid("nowhere"), index: 0 } }], [pay(bob, 1n)]),
        ]),
    },
    {
      rule: "no double spend inside a block",
      reason: "bad-txns-inputs-missingorspent",
      banScore: 100,
      build: () => chain.candidate([spend, chain.spend([coin], [pay(alice, 48n * COIN)])]),
    },
    {
      rule: "a transaction may not spend an output created later in the block",
      reason: "bad-txns-inputs-missingorspent",
      banScore: 100,
      build: () => {
        const child = chain.spend(
          [
            {
              outpoint: { txid: txidOf(encodeTx(spend)), index: 0 },
              coin: { ...coin.coin, coinbase: false },
              key: bob,
            },
          ],
          [pay(bob, 48n * COIN)],
        )
        return chain.candidate([child, spend])
      },
    },
    {
      rule: "a coinbase matures after 100 blocks",
      reason: "bad-txns-premature-spend-of-coinbase",
      banScore: 100,
      build: () => {
        const young = [...chain.wallet.values()].find(
          (s) => s.coin.coinbase && chain.height + 1 - s.coin.height === 99,
        )!
        return chain.candidate([chain.spend([young], [pay(bob, 49n * COIN)])])
      },
    },
    {
      rule: "inputs must cover outputs",
      reason: "bad-txns-in-belowout",
      banScore: 100,
      build: () => chain.candidate([chain.spend([coin], [pay(bob, 50n * COIN + 1n)])]),
    },
    {
      rule: "input amounts are within MAX_MONEY",
      reason: "bad-txns-inputvalues-outofrange",
      banScore: 100,
      build: () => {
        const huge: Spendable = {
          outpoint: { txid: fakeTxid("huge"), index: 0 },
          coin: {
            value: (MAX_MONEY + 1n) as Amount,
            pubkey: alice.pubkey,
            height: 1 as Height,
            coinbase: false,
          },
          key: alice,
        }
        return [
          chain.candidate([chain.spend([huge], [pay(bob, 1n)])]),
          viewWith({ [outpointKey(huge.outpoint.txid, 0)]: huge.coin }),
        ]
      },
    },
    {
      rule: "no output overwrites an unspent output (BIP30)",
      reason: "bad-txns-BIP30",
      banScore: 100,
      build: () => [
        chain.candidate([spend]),
        viewWith({ [outpointKey(txidOf(encodeTx(spend)), 0)]: coin.coin }),
      ],
    },
    {
      rule: "the coinbase claims at most subsidy + fees",
      reason: "bad-cb-amount",
      banScore: 100,
      build: () => chain.candidate([spend], { coinbase: cb(subsidy() + 1n * COIN + 1n) }),
    },
    {
      rule: "every input's signature verifies (a flipped bit)",
      reason: "mandatory-script-verify-flag-failed",
      banScore: 100,
      build: () => {
        const sig = new Uint8Array(spend.inputs[0]!.witness)
        sig[10]! ^= 1
        return chain.candidate([
          unsigned(spend, { inputs: [{ prevout: spend.inputs[0]!.prevout, witness: sig }] }),
        ])
      },
    },
    {
      rule: "every input's signature verifies (signed by the wrong key)",
      reason: "mandatory-script-verify-flag-failed",
      banScore: 100,
      build: () => chain.candidate([chain.spend([{ ...coin, key: bob }], [pay(bob, 49n * COIN)])]),
    },
    {
      rule: "the signature commits to the outputs",
      reason: "mandatory-script-verify-flag-failed",
      banScore: 100,
      build: () => chain.candidate([unsigned(spend, { outputs: [pay(alice, 49n * COIN)] })]),
    },
  ]

  it.each(cases)("$rule → $reason", ({ build, reason, banScore }) => {
    const built = build()
    const [block, view] = Array.isArray(built) ? built : [built, chain.utxos]
    expect(reasonOf(block, view)).toEqual({ reason, banScore })
  })

  it("a negative output (possible only in a constructed tx) is bad-txns-vout-negative", () => {
    const r = checkTransaction(unsigned(spend, { outputs: [pay(bob, -1n)] }))
    expect(Either.isLeft(r) && r.left.reason).toBe("bad-txns-vout-negative")
  })

  it("a bad merkle root is marked as possibly a corrupted copy, a bad signature is not", () => {
    const mutated = withHeader(chain.candidate([spend]), { merkleRoot: new Uint8Array(32) })
    const r = checkBlock(mutated, regtest)
    expect(Either.isLeft(r) && r.left.corruptionPossible).toBe(true)
    const sig = new Uint8Array(spend.inputs[0]!.witness)
    sig[0]! ^= 1
    const badSig = chain.candidate([
      unsigned(spend, { inputs: [{ prevout: spend.inputs[0]!.prevout, witness: sig }] }),
    ])
    const v = validateBlock(badSig, chain.context(), chain.utxos, backend)
    expect(Either.isLeft(v) && v.left.corruptionPossible).toBe(false)
  })
})

describe("connectBlock with transactions verified before", () => {
  it("builds no signature checks for a transaction the predicate names, and all for the others", () => {
    const other = chain.spend([coin2], [pay(bob, 49n * COIN)])
    const block = chain.candidate([spend, other])
    const txids = txidsOf(block)
    const all = connectBlock(block, txids, chain.height + 1, chain.utxos, regtest)
    const skipFirst = connectBlock(block, txids, chain.height + 1, chain.utxos, regtest, {
      signaturesVerified: (t) => t === txids[1],
    })
    expect(Either.isRight(all) && all.right.signatureChecks.length).toBe(2)
    expect(Either.isRight(skipFirst) && skipFirst.right.signatureChecks.length).toBe(1)
    expect(Either.isRight(skipFirst) && skipFirst.right.checkTx).toEqual([2])
  })
})
