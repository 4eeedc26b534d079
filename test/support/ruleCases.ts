import { assembleBlock, makeCoinbase } from "../../src/consensus/assemble.js"
import { headerHash } from "../../src/consensus/checkBlock.js"
import { MAX_MONEY } from "../../src/consensus/checkTx.js"
import { txidOf } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import { checkProofOfWork } from "../../src/consensus/pow.js"
import type { SignatureBackend } from "../../src/consensus/signature.js"
import { outpointKey, type UtxoView } from "../../src/consensus/utxo.js"
import type { Block } from "../../src/schema/block.js"
import type { Coin } from "../../src/schema/coin.js"
import type { Amount, BlockHash, Height } from "../../src/schema/primitives.js"
import { encodeTx, type Tx } from "../../src/schema/tx.js"
import { fakeTxid, pay, type Spendable, TestChain, type TestKey, testKey } from "./chain.js"

/**
 * ruleCases is the one table of invalid blocks and transactions: each case breaks exactly one
 * consensus rule and names the reason and ban score the rules give it. The consensus tests check
 * the rules against it (test/consensus/rules.test.ts); the spam tests send the same blocks and
 * transactions to a node over the wire and check the score it gives the sender (test/net/spam.test.ts).
 */

export const COIN = 100_000_000n

/** RuleFixture is the chain every case builds on: 102 regtest blocks mined to alice, and a valid spend. */
export interface RuleFixture {
  readonly backend: SignatureBackend
  readonly chain: TestChain
  readonly alice: TestKey
  readonly bob: TestKey
  /** a mature coinbase coin of 50 coins owned by alice (the miner) */
  readonly coin: Spendable
  readonly coin2: Spendable
  /** a valid spend of `coin`: 50 coins → 49 to bob, 1 coin fee */
  readonly spend: Tx
}

/** makeRuleFixture mines the fixture chain (deterministic: fixed keys, zero aux randomness). */
export const makeRuleFixture = (backend: SignatureBackend): RuleFixture => {
  const alice = testKey(backend, 1)
  const bob = testKey(backend, 2)
  const chain = new TestChain(regtest, backend, alice)
  chain.registerKey(bob)
  chain.mine(102)
  const mature = chain.matureCoins()
  const coin = mature[0]!
  return {
    backend,
    chain,
    alice,
    bob,
    coin,
    coin2: mature[1]!,
    spend: chain.spend([coin], [pay(bob, 49n * COIN)]),
  }
}

/** subsidy is the next block's subsidy. */
export const subsidy = (f: RuleFixture): bigint =>
  (50n * COIN) >> BigInt(Math.floor((f.chain.height + 1) / regtest.halvingInterval))

/** withHeader re-grinds a block after changing its header fields. */
export const withHeader = (f: RuleFixture, block: Block, change: Partial<Block["header"]>): Block =>
  f.chain.grind({ header: { ...block.header, ...change, nonce: 0 }, txs: block.txs })

/** raw assembles a block on the tip with exactly these txs (no automatic coinbase). */
const raw = (f: RuleFixture, txs: ReadonlyArray<Tx>, time?: number): Block =>
  f.chain.grind(
    assembleBlock(
      {
        prev: f.chain.tip,
        time: time ?? f.chain.context().medianTimePast + 600,
        bits: regtest.powLimitBits,
      },
      txs,
    ),
  )

/** cb is a coinbase for the next block paying alice `value`. */
const cb = (f: RuleFixture, value = subsidy(f), height = f.chain.height + 1, extra?: Uint8Array) =>
  makeCoinbase(height, [pay(f.alice, value)], extra)

/** unsigned changes fields of a signed tx without re-signing it. */
export const unsigned = (tx: Tx, change: Partial<Tx>): Tx => ({ ...tx, ...change })

/** viewWith overlays extra coins on the chain's UTXO set. */
const viewWith = (f: RuleFixture, extra: Record<string, Coin>): UtxoView => ({
  get: (key) => extra[key] ?? f.chain.utxos.get(key),
})

/**
 * invalidTxs builds each transaction that breaks one rule on its own: the block cases put it in a
 * block on the tip, the relay cases send it alone.
 */
export const invalidTxs = {
  noInputs: (f: RuleFixture) => unsigned(f.spend, { inputs: [] }),
  noOutputs: (f: RuleFixture) => unsigned(f.spend, { outputs: [] }),
  oversize: (f: RuleFixture) =>
    unsigned(f.spend, { outputs: Array.from({ length: 25_000 }, () => pay(f.bob, 1n)) }),
  outputTooLarge: (f: RuleFixture) => unsigned(f.spend, { outputs: [pay(f.bob, MAX_MONEY + 1n)] }),
  outputsTooLarge: (f: RuleFixture) =>
    unsigned(f.spend, { outputs: [pay(f.bob, MAX_MONEY), pay(f.bob, 1n)] }),
  duplicateInputs: (f: RuleFixture) =>
    unsigned(f.spend, { inputs: [f.spend.inputs[0]!, f.spend.inputs[0]!] }),
  nullPrevout: (f: RuleFixture) =>
    unsigned(f.spend, {
      inputs: [f.spend.inputs[0]!, { prevout: cb(f).inputs[0]!.prevout, witness: new Uint8Array(64) }],
    }),
  shortSignature: (f: RuleFixture) =>
    unsigned(f.spend, { inputs: [{ prevout: f.spend.inputs[0]!.prevout, witness: new Uint8Array(63) }] }),
  /** locked until the height after the next block */
  nonFinal: (f: RuleFixture) => f.chain.spend([f.coin], [pay(f.bob, 49n * COIN)], f.chain.height + 1),
  missingInput: (f: RuleFixture) =>
    f.chain.spend([{ ...f.coin, outpoint: { txid: fakeTxid("nowhere"), index: 0 } }], [pay(f.bob, 1n)]),
  /** spends the coinbase of the block 99 below the next one */
  prematureCoinbaseSpend: (f: RuleFixture) => {
    const young = [...f.chain.wallet.values()].find(
      (s) => s.coin.coinbase && f.chain.height + 1 - s.coin.height === 99,
    )!
    return f.chain.spend([young], [pay(f.bob, 49n * COIN)])
  },
  overspend: (f: RuleFixture) => f.chain.spend([f.coin], [pay(f.bob, 50n * COIN + 1n)]),
  flippedSignatureBit: (f: RuleFixture) => {
    const sig = new Uint8Array(f.spend.inputs[0]!.witness)
    sig[10]! ^= 1
    return unsigned(f.spend, { inputs: [{ prevout: f.spend.inputs[0]!.prevout, witness: sig }] })
  },
  signedByWrongKey: (f: RuleFixture) => f.chain.spend([{ ...f.coin, key: f.bob }], [pay(f.bob, 49n * COIN)]),
  outputsChangedAfterSigning: (f: RuleFixture) => unsigned(f.spend, { outputs: [pay(f.alice, 49n * COIN)] }),
} as const

/** BlockRuleCase is a block on the fixture's tip that breaks `rule`; `build` may bring its own UTXO view. */
export interface BlockRuleCase {
  readonly rule: string
  readonly reason: string
  readonly banScore: number
  readonly build: (f: RuleFixture) => Block | readonly [Block, UtxoView]
}

export const blockRuleCases: ReadonlyArray<BlockRuleCase> = [
  {
    rule: "proof of work: the hash must meet the target",
    reason: "high-hash",
    banScore: 50,
    build: (f) => {
      const ok = f.chain.candidate([f.spend])
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
    build: (f) => withHeader(f, f.chain.candidate([f.spend]), { bits: 0x207ffffe }),
  },
  {
    rule: "the header must link to the tip",
    reason: "bad-prevblk",
    banScore: 0,
    build: (f) =>
      withHeader(f, f.chain.candidate([f.spend]), {
        prev: fakeTxid("elsewhere") as unknown as BlockHash,
      }),
  },
  {
    rule: "time must be after the median-time-past",
    reason: "time-too-old",
    banScore: 100,
    build: (f) => withHeader(f, f.chain.candidate([f.spend]), { time: f.chain.context().medianTimePast }),
  },
  {
    rule: "time must be at most two hours ahead of the node's clock",
    reason: "time-too-new",
    banScore: 0,
    build: (f) => withHeader(f, f.chain.candidate([f.spend]), { time: f.chain.context().now + 2 * 3600 + 1 }),
  },
  {
    rule: "the merkle root must commit to the transactions",
    reason: "bad-txnmrklroot",
    banScore: 100,
    build: (f) => withHeader(f, f.chain.candidate([f.spend]), { merkleRoot: new Uint8Array(32) }),
  },
  {
    rule: "a duplicated last subtree (CVE-2012-2459) is a mutated block",
    reason: "bad-txns-duplicate",
    banScore: 100,
    build: (f) => {
      const other = f.chain.spend([f.coin2], [pay(f.bob, 49n * COIN)])
      const b = raw(f, [cb(f, subsidy(f) + 2n * COIN), f.spend, other])
      return { header: b.header, txs: [...b.txs, other] }
    },
  },
  {
    rule: "the same transaction twice (not adjacent)",
    reason: "bad-txns-duplicate",
    banScore: 100,
    build: (f) => {
      const other = f.chain.spend([f.coin2], [pay(f.bob, 49n * COIN)])
      return raw(f, [cb(f), f.spend, other, f.spend])
    },
  },
  {
    rule: "a block needs at least one transaction",
    reason: "bad-blk-length",
    banScore: 100,
    build: (f) => raw(f, []),
  },
  {
    rule: "the first transaction must be a coinbase",
    reason: "bad-cb-missing",
    banScore: 100,
    build: (f) => raw(f, [f.spend]),
  },
  {
    rule: "only the first transaction may be a coinbase",
    reason: "bad-cb-multiple",
    banScore: 100,
    build: (f) => raw(f, [cb(f), cb(f, 1n, f.chain.height + 1, Uint8Array.of(1))]),
  },
  {
    rule: "a transaction needs inputs",
    reason: "bad-txns-vin-empty",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.noInputs(f)]),
  },
  {
    rule: "a transaction needs outputs",
    reason: "bad-txns-vout-empty",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.noOutputs(f)]),
  },
  {
    rule: "a transaction is at most 1,000,000 bytes",
    reason: "bad-txns-oversize",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.oversize(f)]),
  },
  {
    rule: "an output is at most MAX_MONEY",
    reason: "bad-txns-vout-toolarge",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.outputTooLarge(f)]),
  },
  {
    rule: "the outputs together are at most MAX_MONEY",
    reason: "bad-txns-txouttotal-toolarge",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.outputsTooLarge(f)]),
  },
  {
    rule: "a transaction spends an outpoint once",
    reason: "bad-txns-inputs-duplicate",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.duplicateInputs(f)]),
  },
  {
    rule: "coinbase data is 4..100 bytes",
    reason: "bad-cb-length",
    banScore: 100,
    build: (f) => raw(f, [cb(f, subsidy(f), f.chain.height + 1, new Uint8Array(97))]),
  },
  {
    rule: "a spending input may not use the null outpoint",
    reason: "bad-txns-prevout-null",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.nullPrevout(f)]),
  },
  {
    rule: "a spending input carries exactly one 64-byte signature",
    reason: "bad-txns-sig-size",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.shortSignature(f)]),
  },
  {
    rule: "every transaction is final (height lock not yet reached)",
    reason: "bad-txns-nonfinal",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.nonFinal(f)]),
  },
  {
    rule: "the coinbase commits to the block's height",
    reason: "bad-cb-height",
    banScore: 100,
    build: (f) => raw(f, [cb(f, subsidy(f), f.chain.height), f.spend]),
  },
  {
    rule: "inputs must exist",
    reason: "bad-txns-inputs-missingorspent",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.missingInput(f)]),
  },
  {
    rule: "no double spend inside a block",
    reason: "bad-txns-inputs-missingorspent",
    banScore: 100,
    build: (f) => f.chain.candidate([f.spend, f.chain.spend([f.coin], [pay(f.alice, 48n * COIN)])]),
  },
  {
    rule: "a transaction may not spend an output created later in the block",
    reason: "bad-txns-inputs-missingorspent",
    banScore: 100,
    build: (f) => {
      const child = f.chain.spend(
        [
          {
            outpoint: { txid: txidOf(encodeTx(f.spend)), index: 0 },
            coin: { ...f.coin.coin, coinbase: false },
            key: f.bob,
          },
        ],
        [pay(f.bob, 48n * COIN)],
      )
      return f.chain.candidate([child, f.spend])
    },
  },
  {
    rule: "a coinbase matures after 100 blocks",
    reason: "bad-txns-premature-spend-of-coinbase",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.prematureCoinbaseSpend(f)]),
  },
  {
    rule: "inputs must cover outputs",
    reason: "bad-txns-in-belowout",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.overspend(f)]),
  },
  {
    rule: "input amounts are within MAX_MONEY",
    reason: "bad-txns-inputvalues-outofrange",
    banScore: 100,
    build: (f) => {
      const huge: Spendable = {
        outpoint: { txid: fakeTxid("huge"), index: 0 },
        coin: {
          value: (MAX_MONEY + 1n) as Amount,
          pubkey: f.alice.pubkey,
          height: 1 as Height,
          coinbase: false,
        },
        key: f.alice,
      }
      return [
        f.chain.candidate([f.chain.spend([huge], [pay(f.bob, 1n)])]),
        viewWith(f, { [outpointKey(huge.outpoint.txid, 0)]: huge.coin }),
      ]
    },
  },
  {
    rule: "no output overwrites an unspent output (BIP30)",
    reason: "bad-txns-BIP30",
    banScore: 100,
    build: (f) => [
      f.chain.candidate([f.spend]),
      viewWith(f, { [outpointKey(txidOf(encodeTx(f.spend)), 0)]: f.coin.coin }),
    ],
  },
  {
    rule: "the coinbase claims at most subsidy + fees",
    reason: "bad-cb-amount",
    banScore: 100,
    build: (f) => f.chain.candidate([f.spend], { coinbase: cb(f, subsidy(f) + 1n * COIN + 1n) }),
  },
  {
    rule: "every input's signature verifies (a flipped bit)",
    reason: "mandatory-script-verify-flag-failed",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.flippedSignatureBit(f)]),
  },
  {
    rule: "every input's signature verifies (signed by the wrong key)",
    reason: "mandatory-script-verify-flag-failed",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.signedByWrongKey(f)]),
  },
  {
    rule: "the signature commits to the outputs",
    reason: "mandatory-script-verify-flag-failed",
    banScore: 100,
    build: (f) => f.chain.candidate([invalidTxs.outputsChangedAfterSigning(f)]),
  },
]

/**
 * TxRuleCase is a transaction relayed alone (to a mempool on the fixture's tip) that breaks `rule`;
 * `reason` and `banScore` are what the pool says. Most are the block rule's, but a relayed
 * transaction may become valid later where a block's cannot, and then it is not the sender's fault
 * (score 0): one whose inputs are missing is an orphan (its parent may be on its way), one not final
 * yet (policy `non-final`) or spending a coinbase a block too early may be valid in the next block.
 * The oversize transaction is not here: its frame is over the tx message's cap, so the framer refuses
 * it before any rule runs.
 */
export interface TxRuleCase {
  readonly rule: string
  readonly reason: string
  readonly banScore: number
  readonly build: (f: RuleFixture) => Tx
}

export const txRuleCases: ReadonlyArray<TxRuleCase> = [
  {
    rule: "a transaction needs inputs",
    reason: "bad-txns-vin-empty",
    banScore: 100,
    build: invalidTxs.noInputs,
  },
  {
    rule: "a transaction needs outputs",
    reason: "bad-txns-vout-empty",
    banScore: 100,
    build: invalidTxs.noOutputs,
  },
  {
    rule: "an output is at most MAX_MONEY",
    reason: "bad-txns-vout-toolarge",
    banScore: 100,
    build: invalidTxs.outputTooLarge,
  },
  {
    rule: "the outputs together are at most MAX_MONEY",
    reason: "bad-txns-txouttotal-toolarge",
    banScore: 100,
    build: invalidTxs.outputsTooLarge,
  },
  {
    rule: "a transaction spends an outpoint once",
    reason: "bad-txns-inputs-duplicate",
    banScore: 100,
    build: invalidTxs.duplicateInputs,
  },
  {
    rule: "a spending input may not use the null outpoint",
    reason: "bad-txns-prevout-null",
    banScore: 100,
    build: invalidTxs.nullPrevout,
  },
  {
    rule: "a spending input carries exactly one 64-byte signature",
    reason: "bad-txns-sig-size",
    banScore: 100,
    build: invalidTxs.shortSignature,
  },
  {
    rule: "a transaction not final yet waits (policy, not the sender's fault)",
    reason: "non-final",
    banScore: 0,
    build: invalidTxs.nonFinal,
  },
  {
    rule: "a transaction whose input is missing is an orphan (its parent may come)",
    reason: "bad-txns-inputs-missingorspent",
    banScore: 0,
    build: invalidTxs.missingInput,
  },
  {
    rule: "a coinbase spent a block too early may be valid in the next one",
    reason: "bad-txns-premature-spend-of-coinbase",
    banScore: 0,
    build: invalidTxs.prematureCoinbaseSpend,
  },
  {
    rule: "inputs must cover outputs",
    reason: "bad-txns-in-belowout",
    banScore: 100,
    build: invalidTxs.overspend,
  },
  {
    rule: "every input's signature verifies (a flipped bit)",
    reason: "mandatory-script-verify-flag-failed",
    banScore: 100,
    build: invalidTxs.flippedSignatureBit,
  },
  {
    rule: "every input's signature verifies (signed by the wrong key)",
    reason: "mandatory-script-verify-flag-failed",
    banScore: 100,
    build: invalidTxs.signedByWrongKey,
  },
  {
    rule: "the signature commits to the outputs",
    reason: "mandatory-script-verify-flag-failed",
    banScore: 100,
    build: invalidTxs.outputsChangedAfterSigning,
  },
]
