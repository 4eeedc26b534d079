import { Either, Schema } from "effect"
import { type BlockHeader, HEADER_BYTES, MAX_BLOCK_BYTES, readHeader, writeHeader } from "../schema/block.js"
import { decodeWith, varintSize, Writer } from "../schema/codec.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { bytesEqual } from "../schema/hex.js"
import type { BlockHash, TxId } from "../schema/primitives.js"
import { MIN_TX_BYTES } from "../schema/tx.js"
import { blockHashOf } from "./hash.js"
import { hashPair } from "./merkle.js"

/**
 * Merkle proofs of transactions in a block ("txoutproofs"): Bitcoin Core's CMerkleBlock, a block header
 * and a partial merkle tree (CPartialMerkleTree, BIP37), built with fibercoin's own hashing (sha256d
 * ids in byte order, src/consensus/merkle.ts). Pure; any fiber may call these.
 *
 * Encoding: `header (80) ‖ total u32 ‖ varint n ‖ n × 32-byte hashes ‖ varbytes flags`, the flags a
 * depth-first walk of the tree, one bit per node visited (least significant bit of each byte first): 1
 * means "an ancestor of a matched transaction (or one itself)", and the walk descends there; where it
 * does not descend, or at a leaf, the next hash is that node's hash.
 */

/** MAX_PROOF_TXS bounds a proof's transaction count: the most a block of MAX_BLOCK_BYTES can hold (Core's MAX_BLOCK_WEIGHT / MIN_TRANSACTION_WEIGHT). */
export const MAX_PROOF_TXS = Math.floor(MAX_BLOCK_BYTES / MIN_TX_BYTES)

/** MAX_FLAG_BYTES bounds the flags: a tree of MAX_PROOF_TXS leaves has fewer than 2 × MAX_PROOF_TXS + 32 nodes. */
const MAX_FLAG_BYTES = Math.ceil((2 * MAX_PROOF_TXS + 32) / 8)

/** MAX_PROOF_BYTES bounds a serialized proof (every hash of the largest block, every flag). */
export const MAX_PROOF_BYTES =
  HEADER_BYTES +
  4 +
  varintSize(MAX_PROOF_TXS) +
  MAX_PROOF_TXS * 32 +
  varintSize(MAX_FLAG_BYTES) +
  MAX_FLAG_BYTES

/**
 * ProofError is a proof that decodes but does not prove anything: a shape Core's ExtractMatches
 * refuses (no transactions, more than a block holds, unused or missing hashes or flags), the
 * CVE-2012-2459 duplicated right child, or a tree whose root is not the header's merkle root.
 */
export class ProofError extends Schema.TaggedError<ProofError>()("ProofError", {
  reason: Schema.Literal(
    "no-transactions",
    "too-many-transactions",
    "too-many-hashes",
    "too-few-flags",
    "flags-exhausted",
    "hashes-exhausted",
    "duplicate-right-child",
    "unmatched-branch",
    "unused-flags",
    "nonzero-padding",
    "unused-hashes",
    "root-mismatch",
  ),
}) {
  override get message(): string {
    return `invalid merkle proof: ${this.reason}`
  }
}

/** ProvenTx is one transaction a proof matches: its txid and its position in the block. */
export interface ProvenTx {
  readonly txid: TxId
  readonly index: number
}

/** VerifiedProof is what a valid proof proves: these transactions are in the block with this header. */
export interface VerifiedProof {
  readonly header: BlockHeader
  readonly blockHash: BlockHash
  /** the matched transactions in block order */
  readonly matches: ReadonlyArray<ProvenTx>
}

/** treeWidth is the number of nodes at `height` (0: the leaves) in a tree of `total` leaves (Core's CalcTreeWidth). */
const treeWidth = (total: number, height: number): number => Math.ceil(total / 2 ** height)

/** treeHeight is the height of the root of a tree of `total` (>= 1) leaves. */
const treeHeight = (total: number): number => {
  let height = 0
  while (treeWidth(total, height) > 1) height++
  return height
}

/** levelsOf lists every level of the tree, the leaves first and the root last. */
const levelsOf = (txids: ReadonlyArray<Uint8Array>): Array<ReadonlyArray<Uint8Array>> => {
  const levels: Array<ReadonlyArray<Uint8Array>> = [txids]
  for (let level = txids; level.length > 1; ) {
    const next: Array<Uint8Array> = []
    for (let i = 0; i < level.length; i += 2) next.push(hashPair(level[i]!, level[i + 1] ?? level[i]!))
    levels.push(next)
    level = next
  }
  return levels
}

/**
 * buildProof is Core's CMerkleBlock constructor: a proof that the transactions whose `matches` entry is
 * true are in the block with `header`, whose transactions' ids are `txids` in block order. Throws a
 * RangeError when `txids` is empty or larger than a block, or `matches` is not as long as `txids`: caller
 * bugs. The header is taken as given: a `txids` that is not the block's own gives a proof that fails
 * verification.
 */
export const buildProof = (
  header: BlockHeader,
  txids: ReadonlyArray<Uint8Array>,
  matches: ReadonlyArray<boolean>,
): Uint8Array => {
  const total = txids.length
  if (total === 0 || total > MAX_PROOF_TXS) throw new RangeError(`a block holds 1..${MAX_PROOF_TXS} txs`)
  if (matches.length !== total) throw new RangeError(`${matches.length} match flags for ${total} txids`)
  const levels = levelsOf(txids)
  // matchedBefore[i]: matched leaves among the first i, so "any match under this node" is one subtraction
  const matchedBefore = new Uint32Array(total + 1)
  for (let i = 0; i < total; i++) matchedBefore[i + 1] = matchedBefore[i]! + (matches[i] ? 1 : 0)
  const hashes: Array<Uint8Array> = []
  const flags: Array<boolean> = []
  const traverse = (height: number, pos: number): void => {
    const first = pos * 2 ** height
    const end = Math.min(first + 2 ** height, total)
    const parentOfMatch = matchedBefore[end]! > matchedBefore[first]!
    flags.push(parentOfMatch)
    if (height === 0 || !parentOfMatch) {
      hashes.push(levels[height]![pos]!)
      return
    }
    traverse(height - 1, pos * 2)
    if (pos * 2 + 1 < treeWidth(total, height - 1)) traverse(height - 1, pos * 2 + 1)
  }
  traverse(treeHeight(total), 0)

  const flagBytes = Math.ceil(flags.length / 8)
  const w = new Writer(
    HEADER_BYTES + 4 + varintSize(hashes.length) + hashes.length * 32 + varintSize(flagBytes) + flagBytes,
  )
  writeHeader(w, header)
  w.u32(total)
  w.varint(hashes.length)
  for (const h of hashes) w.raw(h)
  const packed = new Uint8Array(flagBytes)
  flags.forEach((bit, i) => {
    if (bit) packed[i >>> 3]! |= 1 << (i & 7)
  })
  w.varBytes(packed)
  return w.finish()
}

/** DecodedProof is a proof's fields, decoded but not yet checked. */
interface DecodedProof {
  readonly header: BlockHeader
  readonly total: number
  readonly hashes: ReadonlyArray<Uint8Array>
  readonly flags: Uint8Array
}

/** decodeProof is the bounded decoder: hashes are counted against the bytes left, flags capped by the largest tree. */
const decodeProof = decodeWith("txoutproof", MAX_PROOF_BYTES, (r): DecodedProof => {
  const header = readHeader(r)
  const total = r.u32("txoutproof.total")
  const n = r.count("txoutproof.hashes", MAX_PROOF_TXS, 32)
  const hashes: Array<Uint8Array> = []
  for (let i = 0; i < n; i++) hashes.push(r.bytesN(32, "txoutproof.hash"))
  const flags = r.varBytes("txoutproof.flags", MAX_FLAG_BYTES)
  return { header, total, hashes, flags }
})

/**
 * extract is Core's ExtractMatches/TraverseAndExtract: the tree's root and the matched leaves, refusing
 * every malformed shape so one proof has one encoding: each hash and each flag used, no flag byte
 * beyond the last used bit and no set padding bit (Core ignores padding bits; a set one here would be
 * a second encoding of the same proof), no inner node walked into without a matched leaf below it
 * (Core does not check this; its builder never writes one), and no inner node whose right child
 * equals its left (CVE-2012-2459: duplicating the last transactions of a block keeps its root).
 */
const extract = (
  proof: DecodedProof,
): Either.Either<{ root: Uint8Array; matches: Array<ProvenTx> }, ProofError> => {
  const { total, hashes, flags } = proof
  const fail = (reason: ProofError["reason"]) => Either.left(new ProofError({ reason }))
  if (total === 0) return fail("no-transactions")
  if (total > MAX_PROOF_TXS) return fail("too-many-transactions")
  if (hashes.length > total) return fail("too-many-hashes")
  const flagCount = flags.length * 8
  if (flagCount < hashes.length) return fail("too-few-flags")
  let flagsUsed = 0
  let hashesUsed = 0
  let bad: ProofError["reason"] | undefined
  const matches: Array<ProvenTx> = []
  const traverse = (height: number, pos: number): Uint8Array => {
    if (flagsUsed >= flagCount) {
      bad ??= "flags-exhausted"
      return ZERO_HASH
    }
    const i = flagsUsed++
    const parentOfMatch = ((flags[i >>> 3]! >>> (i & 7)) & 1) === 1
    if (height === 0 || !parentOfMatch) {
      if (hashesUsed >= hashes.length) {
        bad ??= "hashes-exhausted"
        return ZERO_HASH
      }
      const hash = hashes[hashesUsed++]!
      if (height === 0 && parentOfMatch) matches.push({ txid: hash as TxId, index: pos })
      return hash
    }
    const matchedBefore = matches.length
    const left = traverse(height - 1, pos * 2)
    const hasRight = pos * 2 + 1 < treeWidth(total, height - 1)
    const right = hasRight && bad === undefined ? traverse(height - 1, pos * 2 + 1) : left
    if (bad !== undefined) return ZERO_HASH
    if (hasRight && bytesEqual(left, right)) bad = "duplicate-right-child"
    else if (matches.length === matchedBefore) bad = "unmatched-branch"
    return hashPair(left, right)
  }
  const root = traverse(treeHeight(total), 0)
  if (bad !== undefined) return fail(bad)
  if (Math.ceil(flagsUsed / 8) !== flags.length) return fail("unused-flags")
  if (flagsUsed % 8 !== 0 && flags[flags.length - 1]! >>> (flagsUsed % 8) !== 0)
    return fail("nonzero-padding")
  if (hashesUsed !== hashes.length) return fail("unused-hashes")
  return Either.right({ root, matches })
}

const ZERO_HASH = new Uint8Array(32)

/**
 * verifyProof decodes a txoutproof and checks that its partial merkle tree is well formed and hashes
 * to the header's merkle root; it answers the header, its hash and the matched transactions. It does
 * not know any chain: the caller checks that the header is in its own (bitcoind's verifytxoutproof
 * checks the active chain; a light node its headers). Never throws.
 */
export const verifyProof = (bytes: Uint8Array): Either.Either<VerifiedProof, DecodeError | ProofError> =>
  Either.flatMap(decodeProof(bytes), (proof) =>
    Either.flatMap(extract(proof), ({ root, matches }) =>
      bytesEqual(root, proof.header.merkleRoot)
        ? Either.right({
            header: proof.header,
            blockHash: blockHashOf(bytes.subarray(0, HEADER_BYTES)),
            matches,
          })
        : Either.left(new ProofError({ reason: "root-mismatch" })),
    ),
  )
