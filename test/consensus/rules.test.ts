import { Either } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { checkBlock, connectBlock, txidsOf, validateBlock } from "../../src/consensus/checkBlock.js"
import { checkTransaction } from "../../src/consensus/checkTx.js"
import { regtest } from "../../src/consensus/params.js"
import type { UtxoView } from "../../src/consensus/utxo.js"
import { loadDefaultBackend } from "../../src/layers/Signatures.js"
import type { Block } from "../../src/schema/block.js"
import { pay } from "../support/chain.js"
import {
  blockRuleCases,
  COIN,
  makeRuleFixture,
  type RuleFixture,
  unsigned,
  withHeader,
} from "../support/ruleCases.js"

const backend = loadDefaultBackend().backend
let f: RuleFixture

beforeAll(() => {
  f = makeRuleFixture(backend)
})

const reasonOf = (block: Block, view: UtxoView = f.chain.utxos) =>
  Either.match(validateBlock(block, f.chain.context(), view, backend), {
    onLeft: (e) => ({ reason: e.reason, banScore: e.banScore }),
    onRight: () => ({ reason: "valid", banScore: 0 }),
  })

describe("block and transaction rules: each case breaks exactly one rule and gets exactly its reason", () => {
  it("the unbroken fixture block is valid", () => {
    expect(reasonOf(f.chain.candidate([f.spend]))).toEqual({ reason: "valid", banScore: 0 })
  })

  it.each(blockRuleCases)("$rule → $reason", ({ build, reason, banScore }) => {
    const built = build(f)
    const [block, view] = Array.isArray(built) ? built : [built, f.chain.utxos]
    expect(reasonOf(block, view)).toEqual({ reason, banScore })
  })

  it("a negative output (possible only in a constructed tx) is bad-txns-vout-negative", () => {
    const r = checkTransaction(unsigned(f.spend, { outputs: [pay(f.bob, -1n)] }))
    expect(Either.isLeft(r) && r.left.reason).toBe("bad-txns-vout-negative")
  })

  it("a bad merkle root is marked as possibly a corrupted copy, a bad signature is not", () => {
    const mutated = withHeader(f, f.chain.candidate([f.spend]), { merkleRoot: new Uint8Array(32) })
    const r = checkBlock(mutated, regtest)
    expect(Either.isLeft(r) && r.left.corruptionPossible).toBe(true)
    const sig = new Uint8Array(f.spend.inputs[0]!.witness)
    sig[0]! ^= 1
    const badSig = f.chain.candidate([
      unsigned(f.spend, { inputs: [{ prevout: f.spend.inputs[0]!.prevout, witness: sig }] }),
    ])
    const v = validateBlock(badSig, f.chain.context(), f.chain.utxos, backend)
    expect(Either.isLeft(v) && v.left.corruptionPossible).toBe(false)
  })
})

describe("connectBlock with transactions verified before", () => {
  it("builds no signature checks for a transaction the predicate names, and all for the others", () => {
    const other = f.chain.spend([f.coin2], [pay(f.bob, 49n * COIN)])
    const block = f.chain.candidate([f.spend, other])
    const txids = txidsOf(block)
    const all = connectBlock(block, txids, f.chain.height + 1, f.chain.utxos, regtest)
    const skipFirst = connectBlock(block, txids, f.chain.height + 1, f.chain.utxos, regtest, {
      signaturesVerified: (t) => t === txids[1],
    })
    expect(Either.isRight(all) && all.right.signatureChecks.length).toBe(2)
    expect(Either.isRight(skipFirst) && skipFirst.right.signatureChecks.length).toBe(1)
    expect(Either.isRight(skipFirst) && skipFirst.right.checkTx).toEqual([2])
  })
})
