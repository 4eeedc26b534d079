import { Either } from "effect"
import { assembleBlock, grind, makeCoinbase, signTx } from "../../src/consensus/assemble.js"
import {
  type BlockContext,
  headerHash,
  type Validated,
  validateBlock,
} from "../../src/consensus/checkBlock.js"
import type { RuleError } from "../../src/consensus/errors.js"
import { sha256 } from "../../src/consensus/hash.js"
import type { NetworkParams } from "../../src/consensus/params.js"
import { medianTimePast } from "../../src/consensus/pow.js"
import type { SignatureBackend } from "../../src/consensus/signature.js"
import { MemoryUtxoSet, outpointKey } from "../../src/consensus/utxo.js"
import type { Block } from "../../src/schema/block.js"
import type { Coin } from "../../src/schema/coin.js"
import type { Amount, BlockHash, PublicKey, TxId } from "../../src/schema/primitives.js"
import type { OutPoint, Tx, TxOut } from "../../src/schema/tx.js"

/** secretKey(i) is a deterministic test key (sha256 of a label: a valid scalar with overwhelming probability). */
export const secretKey = (i: number): Uint8Array =>
  new Uint8Array(sha256(new TextEncoder().encode(`fibercoin-test-key-${i}`)))

/** A key pair for tests. */
export interface TestKey {
  readonly secret: Uint8Array
  readonly pubkey: PublicKey
}

export const testKey = (backend: SignatureBackend, i: number): TestKey => {
  const secret = secretKey(i)
  return { secret, pubkey: backend.publicKey(secret) as PublicKey }
}

const zeroAux = () => new Uint8Array(32)

/** A spendable coin with the key that owns it. */
export interface Spendable {
  readonly outpoint: OutPoint
  readonly coin: Coin
  readonly key: TestKey
}

/**
 * TestChain grows a valid regtest-style chain in memory, validating each block with the real rules
 * and applying it to a MemoryUtxoSet, so tests can build a candidate block on top and see which rule
 * it breaks.
 */
export class TestChain {
  readonly utxos = new MemoryUtxoSet()
  readonly blocks: Array<Block> = []
  readonly hashes: Array<BlockHash> = []
  readonly times: Array<number> = []
  /** coins the test keys own, by outpoint key */
  readonly wallet = new Map<string, Spendable>()
  private readonly keys: Array<TestKey> = []

  constructor(
    readonly params: NetworkParams,
    readonly backend: SignatureBackend,
    readonly miner: TestKey,
  ) {
    this.blocks.push(params.genesis)
    this.hashes.push(params.genesisHash)
    this.times.push(params.genesis.header.time)
    this.keys.push(miner)
  }

  get height(): number {
    return this.blocks.length - 1
  }

  get tip(): BlockHash {
    return this.hashes[this.hashes.length - 1]!
  }

  /** context is the BlockContext for the next block, with `now` an hour past the tip. */
  context(): BlockContext {
    return {
      prevHash: this.tip,
      height: this.height + 1,
      medianTimePast: medianTimePast(this.times.slice(-11)),
      expectedBits: this.params.powLimitBits,
      now: this.times[this.times.length - 1]! + 3600,
      params: this.params,
    }
  }

  /** coinbase for the next block paying the subsidy plus `fees` to the miner. */
  coinbase(value: bigint, height = this.height + 1): Tx {
    return makeCoinbase(height, [{ value: value as Amount, pubkey: this.miner.pubkey }])
  }

  /** candidate assembles (and grinds) a block on the tip with the given txs after a fresh coinbase. */
  candidate(txs: ReadonlyArray<Tx>, opts: { coinbase?: Tx; time?: number } = {}): Block {
    const subsidy =
      (50n * 100_000_000n) >> BigInt(Math.floor((this.height + 1) / this.params.halvingInterval))
    const cb = opts.coinbase ?? this.coinbase(subsidy)
    return this.grind(
      assembleBlock(
        {
          prev: this.tip,
          time: opts.time ?? this.times[this.times.length - 1]! + 60,
          bits: this.params.powLimitBits,
        },
        [cb, ...txs],
      ),
    )
  }

  grind(block: Block): Block {
    const mined = grind(block, this.params.powLimit)
    if (mined === undefined) throw new Error("could not grind a regtest block")
    return mined
  }

  validate(block: Block): Either.Either<Validated, RuleError> {
    return validateBlock(block, this.context(), this.utxos, this.backend)
  }

  /** connect validates `block` and applies it; throws if any rule fails (fixtures must be valid). */
  connect(block: Block): Validated {
    const v = this.validate(block)
    if (Either.isLeft(v)) throw new Error(`fixture block invalid: ${v.left.message}`)
    this.utxos.apply(v.right.delta)
    this.blocks.push(block)
    this.hashes.push(v.right.hash)
    this.times.push(block.header.time)
    for (const tx of block.txs) {
      for (const input of tx.inputs) this.wallet.delete(outpointKey(input.prevout.txid, input.prevout.index))
    }
    block.txs.forEach((tx, t) => {
      const txid = v.right.txids[t]!
      tx.outputs.forEach((output, n) => {
        const key = this.ownerOf(output.pubkey)
        const coin = this.utxos.get(outpointKey(txid, n))
        if (key !== undefined && coin !== undefined) {
          this.wallet.set(outpointKey(txid, n), { outpoint: { txid, index: n }, coin, key })
        }
      })
    })
    return v.right
  }

  /** registerKey lets the wallet track outputs paid to `key`. */
  registerKey(key: TestKey): void {
    this.keys.push(key)
  }

  private ownerOf(pubkey: Uint8Array): TestKey | undefined {
    return this.keys.find((k) => Buffer.compare(k.pubkey, pubkey) === 0)
  }

  /** clone forks the fixture at its current tip: the copy grows independently. */
  clone(): TestChain {
    const copy = new TestChain(this.params, this.backend, this.miner)
    copy.blocks.splice(0, copy.blocks.length, ...this.blocks)
    copy.hashes.splice(0, copy.hashes.length, ...this.hashes)
    copy.times.splice(0, copy.times.length, ...this.times)
    for (const [key, coin] of this.utxos.coins) copy.utxos.coins.set(key, coin)
    for (const [key, s] of this.wallet) copy.wallet.set(key, s)
    for (const key of this.keys) if (key !== this.miner) copy.registerKey(key)
    return copy
  }

  /**
   * append puts `block` on this fixture's tip WITHOUT validating it or touching the UTXO set: for
   * planting an invalid block (and blocks built on it) in a branch that the node must refuse.
   */
  append(block: Block): void {
    this.blocks.push(block)
    this.hashes.push(headerHash(block.header))
    this.times.push(block.header.time)
  }

  /** mine connects `n` blocks with only a coinbase each. */
  mine(n: number): void {
    for (let i = 0; i < n; i++) this.connect(this.candidate([]))
  }

  /** matureCoins lists spendable coins that are mature at the next height, oldest first. */
  matureCoins(): Array<Spendable> {
    const next = this.height + 1
    return [...this.wallet.values()].filter((s) => !s.coin.coinbase || next - s.coin.height >= 100)
  }

  /** spend signs a tx spending `from` to `outputs`. */
  spend(from: ReadonlyArray<Spendable>, outputs: ReadonlyArray<TxOut>, lockTime = 0): Tx {
    const unsigned: Tx = {
      version: 1,
      inputs: from.map((s) => ({ prevout: s.outpoint, witness: new Uint8Array(64) })),
      outputs,
      lockTime,
    }
    return signTx(
      unsigned,
      from.map((s) => s.coin),
      from.map((s) => s.key.secret),
      this.backend,
      zeroAux,
    )
  }
}

/** pay is a TxOut of `value` units to `key`. */
export const pay = (key: TestKey, value: bigint): TxOut => ({ value: value as Amount, pubkey: key.pubkey })

/** fakeTxid is a deterministic non-null txid for outpoints that do not exist. */
export const fakeTxid = (label: string): TxId => sha256(new TextEncoder().encode(label)) as TxId
