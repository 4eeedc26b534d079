import { assembleBlock, grind, makeCoinbase, signTx } from "../src/consensus/assemble.js"
import type { BlockContext } from "../src/consensus/checkBlock.js"
import { sha256 } from "../src/consensus/hash.js"
import { regtest } from "../src/consensus/params.js"
import { blockSubsidy } from "../src/consensus/pow.js"
import type { SignatureBackend } from "../src/consensus/signature.js"
import { MemoryUtxoSet, outpointKey } from "../src/consensus/utxo.js"
import { encodeBlock } from "../src/schema/block.js"
import type { Coin } from "../src/schema/coin.js"
import type { Amount, BlockHash, Height, PublicKey, TxId } from "../src/schema/primitives.js"
import type { Tx } from "../src/schema/tx.js"

const label = (s: string) => new TextEncoder().encode(s)

/** buildFixture makes a block of `txCount` transactions and the UTXO view it connects to: each tx spends one mature non-coinbase coin to two outputs with a fee. */
export const buildFixture = (signer: SignatureBackend, txCount: number) => {
  const height = 500
  const view = new MemoryUtxoSet()
  const txs: Array<Tx> = []
  for (let i = 0; i < txCount; i++) {
    const secret = new Uint8Array(sha256(label(`bench-key-${i}`)))
    const pubkey = signer.publicKey(secret) as PublicKey
    const fundingTxid = sha256(label(`bench-funding-${i}`)) as TxId
    const coin: Coin = { value: 10_000_000n as Amount, pubkey, height: 10 as Height, coinbase: false }
    view.apply({ spent: [], created: [[outpointKey(fundingTxid, 0), coin]] })
    const unsigned: Tx = {
      version: 1,
      inputs: [{ prevout: { txid: fundingTxid, index: 0 }, witness: new Uint8Array(64) }],
      outputs: [
        { value: 6_000_000n as Amount, pubkey },
        { value: 3_990_000n as Amount, pubkey },
      ],
      lockTime: 0,
    }
    txs.push(signTx(unsigned, [coin], [secret], signer, (i) => sha256(label(`aux-${i}`))))
  }
  const fees = BigInt(txCount) * 10_000n
  const coinbase = makeCoinbase(height, [
    {
      value: (blockSubsidy(height, regtest.halvingInterval) + fees) as Amount,
      pubkey: txs[0]!.outputs[0]!.pubkey,
    },
  ])
  const prev = sha256(label("bench-prev")) as BlockHash
  const time = regtest.genesis.header.time + 100_000
  const block = grind(
    assembleBlock({ prev, time, bits: regtest.powLimitBits }, [coinbase, ...txs]),
    regtest.powLimit,
  )
  if (block === undefined) throw new Error("cannot grind the bench block")
  const ctx: BlockContext = {
    prevHash: prev,
    height,
    medianTimePast: time - 1,
    expectedBits: regtest.powLimitBits,
    now: time,
    params: regtest,
  }
  return { bytes: encodeBlock(block), view, ctx }
}
