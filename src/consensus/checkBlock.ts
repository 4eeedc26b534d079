import { Either } from "effect"
import {
  type Block,
  type BlockHeader,
  blockSize,
  encodeHeader,
  MAX_BLOCK_BYTES,
  readBlock,
} from "../schema/block.js"
import { decodeWith } from "../schema/codec.js"
import type { BlockUndo, Coin } from "../schema/coin.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { bytesEqual, toHex } from "../schema/hex.js"
import type { BlockHash, Height, TxId } from "../schema/primitives.js"
import { encodeTx } from "../schema/tx.js"
import {
  checkTransaction,
  checkTxInputs,
  coinbaseHeight,
  isCoinbase,
  isFinalTx,
  sigFailure,
  txSignatureChecks,
} from "./checkTx.js"
import { blockError, headerError, type RuleError } from "./errors.js"
import { blockHashOf, txidOf } from "./hash.js"
import { merkleRoot } from "./merkle.js"
import { blockSubsidy, checkProofOfWork } from "./pow.js"
import { firstInvalid, type SignatureBackend, type SignatureCheck } from "./signature.js"
import { outpointKey, type UtxoDelta, type UtxoView } from "./utxo.js"

/** MAX_FUTURE_BLOCK_TIME: a block may be at most two hours ahead of the node's adjusted time. */
export const MAX_FUTURE_BLOCK_TIME = 2 * 60 * 60

/** ConsensusParams is what the block rules need from the network parameters. */
export interface ConsensusParams {
  readonly powLimit: bigint
  readonly halvingInterval: number
}

/** headerHash is the block id: sha256d of the 80-byte header. */
export const headerHash = (header: BlockHeader): BlockHash => blockHashOf(encodeHeader(header))

/** checkBlockHeader (context-free): the hash meets the target its bits claim, within the pow limit. */
export const checkBlockHeader = (
  header: BlockHeader,
  hash: BlockHash,
  params: ConsensusParams,
): Either.Either<void, RuleError> =>
  checkProofOfWork(hash, header.bits, params.powLimit)
    ? Either.void
    : Either.left(headerError("high-hash", "proof of work failed", 50))

/** HeaderContext is what the chain knows about a header's parent, computed by the caller. */
export interface HeaderContext {
  readonly prevHash: BlockHash
  /** height of the new block */
  readonly height: number
  /** median-time-past of the 11 blocks ending at the parent */
  readonly medianTimePast: number
  /** bits the new block must carry (nextWorkRequired) */
  readonly expectedBits: number
  /** the node's adjusted time, seconds; passed in so the rule stays pure */
  readonly now: number
}

/**
 * contextualCheckBlockHeader (Core's ContextualCheckBlockHeader): links to the parent, carries the
 * expected difficulty, is later than the median-time-past and at most two hours in the future. A
 * too-new block is not the sender's fault (our clock may lag): ban score 0.
 */
export const contextualCheckBlockHeader = (
  header: BlockHeader,
  ctx: HeaderContext,
): Either.Either<void, RuleError> => {
  if (!bytesEqual(header.prev, ctx.prevHash)) return Either.left(headerError("bad-prevblk", "", 0))
  if (header.bits !== ctx.expectedBits)
    return Either.left(headerError("bad-diffbits", "incorrect proof of work"))
  if (header.time <= ctx.medianTimePast)
    return Either.left(headerError("time-too-old", "block's timestamp is too early"))
  if (header.time > ctx.now + MAX_FUTURE_BLOCK_TIME) {
    return Either.left(headerError("time-too-new", "block timestamp too far in the future", 0))
  }
  return Either.void
}

/** BlockCheck is what checkBlock learned that later steps reuse: the block hash and the txids. */
export interface BlockCheck {
  readonly hash: BlockHash
  readonly txids: ReadonlyArray<TxId>
}

/** DecodedBlock is a block with the txids hashed from the very bytes it was decoded from. */
export interface DecodedBlock {
  readonly block: Block
  readonly txids: ReadonlyArray<TxId>
}

/**
 * decodeBlockWithTxids decodes a canonical block and hashes each transaction's own bytes for its txid,
 * saving the re-encoding checkBlock would otherwise do (canonical encoding makes them the same bytes).
 */
export const decodeBlockWithTxids = (bytes: Uint8Array): Either.Either<DecodedBlock, DecodeError> => {
  const txids: Array<TxId> = []
  return Either.map(
    decodeWith("block", MAX_BLOCK_BYTES, (r) =>
      readBlock(r, (start, end) => txids.push(txidOf(r.bytes.subarray(start, end)))),
    )(bytes),
    (block) => ({ block, txids }),
  )
}

/** txidsOf hashes every transaction of a block that was built rather than decoded. */
export const txidsOf = (block: Block): ReadonlyArray<TxId> => block.txs.map((tx) => txidOf(encodeTx(tx)))

/**
 * checkBlock applies the context-free block rules (Core's CheckBlock): proof of work, merkle root
 * (refusing the CVE-2012-2459 duplicate-subtree mutation), size, exactly one coinbase and first, no
 * duplicate txids, and every transaction's context-free rules. A bad merkle root or a mutation may be a
 * corrupted copy of a valid block: those failures are marked corruptionPossible. `txids` must be the
 * block's own (txidsOf, or decodeBlockWithTxids's).
 */
export const checkBlock = (
  block: Block,
  params: ConsensusParams,
  txids: ReadonlyArray<TxId> = txidsOf(block),
): Either.Either<BlockCheck, RuleError> => {
  const hash = headerHash(block.header)
  const pow = checkBlockHeader(block.header, hash, params)
  if (Either.isLeft(pow)) return Either.left(pow.left)
  const { root, mutated } = merkleRoot(txids)
  if (!bytesEqual(root, block.header.merkleRoot)) {
    return Either.left(blockError("bad-txnmrklroot", "hashMerkleRoot mismatch", 100, true))
  }
  if (mutated) return Either.left(blockError("bad-txns-duplicate", "duplicate transaction", 100, true))
  if (block.txs.length === 0 || blockSize(block) > MAX_BLOCK_BYTES) {
    return Either.left(blockError("bad-blk-length", "size limits failed"))
  }
  if (!isCoinbase(block.txs[0]!)) return Either.left(blockError("bad-cb-missing", "first tx is not coinbase"))
  for (let i = 1; i < block.txs.length; i++) {
    if (isCoinbase(block.txs[i]!)) return Either.left(blockError("bad-cb-multiple", "more than one coinbase"))
  }
  const seen = new Set<string>()
  for (const txid of txids) {
    const hex = toHex(txid)
    if (seen.has(hex)) return Either.left(blockError("bad-txns-duplicate", "duplicate transaction"))
    seen.add(hex)
  }
  for (let i = 0; i < block.txs.length; i++) {
    const r = checkTransaction(block.txs[i]!)
    if (Either.isLeft(r)) return Either.left(inBlock(r.left, txids[i]!))
  }
  return Either.right({ hash, txids })
}

/**
 * contextualCheckBlock (Core's ContextualCheckBlock): every transaction is final at this height and
 * median-time-past, and the coinbase commits to the block's height (BIP34; coinbase txids are unique).
 */
export const contextualCheckBlock = (
  block: Block,
  height: number,
  medianTimePast: number,
): Either.Either<void, RuleError> => {
  for (const tx of block.txs) {
    if (!isFinalTx(tx, height, medianTimePast))
      return Either.left(blockError("bad-txns-nonfinal", "non-final transaction"))
  }
  if (coinbaseHeight(block.txs[0]!) !== height) {
    return Either.left(blockError("bad-cb-height", "block height mismatch in coinbase"))
  }
  return Either.void
}

/** ConnectOptions tune connectBlock without changing what it decides. */
export interface ConnectOptions {
  /** names transactions whose signatures were all verified before (a txid fixes its sighashes): no checks for them */
  readonly signaturesVerified?: (txid: TxId) => boolean
}

/** Connected is the outcome of connecting a block to a UTXO view. */
export interface Connected {
  readonly delta: UtxoDelta
  readonly undo: BlockUndo
  readonly fees: bigint
  /** every input's signature check, in block order; verify them before applying `delta` */
  readonly signatureChecks: ReadonlyArray<SignatureCheck>
  /** signatureChecks[i] belongs to transaction checkTx[i] (for error messages and caches) */
  readonly checkTx: ReadonlyArray<number>
}

/**
 * connectBlock spends and creates the block's outputs against `view` (Core's ConnectBlock without the
 * script checks, which are returned for the caller to run in parallel or from a cache): every input
 * exists and is unspent (including outputs of earlier transactions in the block, never later ones),
 * coinbases are mature, inputs cover outputs, no output overwrites an unspent one (BIP30), and the
 * coinbase claims at most subsidy + fees. It reads `view` and changes nothing: the net change is `delta`.
 * `options` (ConnectOptions) can skip the checks of transactions verified before.
 */
export const connectBlock = (
  block: Block,
  txids: ReadonlyArray<TxId>,
  height: number,
  view: UtxoView,
  params: ConsensusParams,
  options: ConnectOptions = {},
): Either.Either<Connected, RuleError> => {
  const signaturesVerified = options.signaturesVerified ?? (() => false)
  const created = new Map<string, Coin>()
  const spentFromView = new Set<string>()
  const undo: Array<Coin> = []
  const signatureChecks: Array<SignatureCheck> = []
  const checkTx: Array<number> = []
  let fees = 0n
  for (let t = 0; t < block.txs.length; t++) {
    const tx = block.txs[t]!
    const txid = txids[t]!
    if (t > 0) {
      const coins: Array<Coin | undefined> = []
      const keys: Array<string> = []
      for (const input of tx.inputs) {
        const key = outpointKey(input.prevout.txid, input.prevout.index)
        keys.push(key)
        coins.push(created.get(key) ?? (spentFromView.has(key) ? undefined : view.get(key)))
      }
      const checked = checkTxInputs(tx, coins, height)
      if (Either.isLeft(checked)) return Either.left(inBlock(checked.left, txid))
      fees += checked.right
      const spentCoins = coins as ReadonlyArray<Coin>
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i]!
        if (!created.delete(key)) spentFromView.add(key)
        undo.push(spentCoins[i]!)
      }
      if (!signaturesVerified(txid)) {
        for (const check of txSignatureChecks(tx, spentCoins)) {
          signatureChecks.push(check)
          checkTx.push(t)
        }
      }
    }
    const coinbase = t === 0
    const txidHex = toHex(txid)
    for (let n = 0; n < tx.outputs.length; n++) {
      const key = `${txidHex}:${n}`
      if (created.has(key) || view.get(key) !== undefined) {
        return Either.left(blockError("bad-txns-BIP30", "tried to overwrite transaction"))
      }
      const output = tx.outputs[n]!
      created.set(key, { value: output.value, pubkey: output.pubkey, height: height as Height, coinbase })
    }
  }
  let claimed = 0n
  for (const output of block.txs[0]!.outputs) claimed += output.value
  const allowed = fees + blockSubsidy(height, params.halvingInterval)
  if (claimed > allowed) {
    return Either.left(
      blockError("bad-cb-amount", `coinbase pays too much (actual=${claimed} vs limit=${allowed})`),
    )
  }
  return Either.right({
    delta: { spent: [...spentFromView], created: [...created] },
    undo,
    fees,
    signatureChecks,
    checkTx,
  })
}

/**
 * disconnectBlock computes the delta that undoes `block` given its undo data (Core's DisconnectBlock):
 * it removes the outputs the block left unspent and restores the coins it spent from before it.
 * Returns a "bad-undo" failure (a broken invariant of our own storage) if the undo does not fit.
 */
export const disconnectBlock = (
  block: Block,
  txids: ReadonlyArray<TxId>,
  undo: BlockUndo,
): Either.Either<UtxoDelta, RuleError> => {
  const createdInBlock = new Set<string>()
  for (let t = 0; t < block.txs.length; t++) {
    for (let n = 0; n < block.txs[t]!.outputs.length; n++) createdInBlock.add(outpointKey(txids[t]!, n))
  }
  const restored: Array<readonly [string, Coin]> = []
  const spentInBlock = new Set<string>()
  let u = 0
  for (let t = 1; t < block.txs.length; t++) {
    for (const input of block.txs[t]!.inputs) {
      const coin = undo[u++]
      if (coin === undefined) return Either.left(blockError("bad-undo", "undo data too short", 0))
      const key = outpointKey(input.prevout.txid, input.prevout.index)
      if (createdInBlock.has(key)) spentInBlock.add(key)
      else restored.push([key, coin])
    }
  }
  if (u !== undo.length) return Either.left(blockError("bad-undo", "undo data too long", 0))
  const removed = [...createdInBlock].filter((key) => !spentInBlock.has(key))
  return Either.right({ spent: removed, created: restored })
}

/** BlockContext is everything validateBlock needs besides the block and the UTXO view. */
export interface BlockContext extends HeaderContext {
  readonly params: ConsensusParams
}

/** Validated is a fully checked block, ready to be applied. */
export interface Validated extends Connected {
  readonly hash: BlockHash
  readonly txids: ReadonlyArray<TxId>
}

/**
 * checkAndConnect runs every rule but the signature checks, in Core's order: context-free block checks,
 * the header and block contextual checks, then connect against `view`. Pure: the view is only read,
 * the time comes in `ctx.now`. `blockTxids` must be the block's own (decodeBlockWithTxids's saves
 * re-hashing); `options` as for connectBlock. The caller verifies `signatureChecks`.
 */
export const checkAndConnect = (
  block: Block,
  ctx: BlockContext,
  view: UtxoView,
  blockTxids: ReadonlyArray<TxId> = txidsOf(block),
  options: ConnectOptions = {},
): Either.Either<Validated, RuleError> =>
  Either.gen(function* () {
    const { hash, txids } = yield* checkBlock(block, ctx.params, blockTxids)
    yield* contextualCheckBlockHeader(block.header, ctx)
    yield* contextualCheckBlock(block, ctx.height, ctx.medianTimePast)
    const connected = yield* connectBlock(block, txids, ctx.height, view, ctx.params, options)
    return { ...connected, hash, txids }
  })

/** signatureFailure is the block's rule failure when its check `index` does not verify. */
export const signatureFailure = (connected: Validated, index: number): RuleError => {
  const txid = connected.txids[connected.checkTx[index]!]!
  return inBlock(sigFailure(`input of tx ${toHex(txid)}`), txid)
}

/**
 * validateBlock is checkAndConnect followed by every signature check on `backend`, inline: the whole
 * of Core's block validation in one pure call (tests, benchmarks, tools). The node itself verifies
 * signatures on its SigVerifier pool instead.
 */
export const validateBlock = (
  block: Block,
  ctx: BlockContext,
  view: UtxoView,
  backend: SignatureBackend,
  blockTxids: ReadonlyArray<TxId> = txidsOf(block),
): Either.Either<Validated, RuleError> =>
  Either.flatMap(checkAndConnect(block, ctx, view, blockTxids), (connected) => {
    const bad = firstInvalid(backend, connected.signatureChecks)
    return bad >= 0 ? Either.left(signatureFailure(connected, bad)) : Either.right(connected)
  })

/** inBlock restates a transaction's rule failure as the failure of the block that carries it (Core: BLOCK_CONSENSUS, score 100). */
const inBlock = (e: RuleError, txid: TxId): RuleError =>
  blockError(e.reason, e.detail === "" ? `tx ${toHex(txid)}` : `${e.detail}; tx ${toHex(txid)}`)
