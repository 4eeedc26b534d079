import { Effect, Either, Option, Schema } from "effect"
import { Chain } from "../actors/Chain.js"
import { decodeBlockWithTxids } from "../consensus/checkBlock.js"
import { buildProof, MAX_PROOF_TXS, verifyProof } from "../consensus/merkleProof.js"
import { outpointKey } from "../consensus/utxo.js"
import { ChainStore } from "../layers/ChainStore.js"
import { fromHex, toHex } from "../schema/hex.js"
import type { BlockHash, TxId } from "../schema/primitives.js"
import { MAX_TX_BYTES } from "../schema/tx.js"
import { invalidAddressOrKey, invalidParameter, method, miscError, type RpcMethod } from "./Server.js"

const hash = Schema.String.pipe(
  Schema.pattern(/^[0-9a-fA-F]{64}$/),
  Schema.annotations({ message: () => "expected 64 hex characters" }),
)
const hex = Schema.String.pipe(
  Schema.pattern(/^(?:[0-9a-fA-F]{2})*$/),
  Schema.annotations({ message: () => "expected a hex string" }),
)

/** MAX_OUTPUTS_PER_TX bounds the outputs probed for a txid's coin (Core's AccessByTxid probes MAX_OUTPUTS_PER_BLOCK). */
const MAX_OUTPUTS_PER_TX = Math.floor(MAX_TX_BYTES / (8 + 32))

/**
 * InActiveChain tells whether the block with this hash is in the node's active chain. verifytxoutproof
 * asks it about a proof's header: the full node asks its Chain (chainInActiveChain); a light node
 * answers from its headers.
 */
export type InActiveChain<R> = (hash: BlockHash) => Effect.Effect<boolean, never, R>

/** chainInActiveChain is the full node's InActiveChain: the Chain's index says the block is active. */
export const chainInActiveChain: InActiveChain<Chain> = (blockHash) =>
  Effect.map(
    Effect.flatMap(Chain, (chain) => chain.entry(blockHash)),
    (entry) => Option.isSome(entry) && entry.value.active,
  )

/**
 * blockOfUnspent finds the active block holding one of `txids` through the UTXO set, as bitcoind
 * without a transaction index: the first txid with an unspent output gives the coin's height.
 */
const blockOfUnspent = (txids: ReadonlyArray<TxId>) =>
  Effect.gen(function* () {
    const coins = (yield* ChainStore).coins
    for (const txid of txids) {
      for (let n = 0; n < MAX_OUTPUTS_PER_TX; n++) {
        const coin = coins.get(outpointKey(txid, n))
        if (coin !== undefined) return yield* (yield* Chain).hashAt(coin.height)
      }
    }
    return Option.none<BlockHash>()
  })

/**
 * gettxoutproofMethod is bitcoind's `gettxoutproof ["txid",...] ( "blockhash" )`: a hex txoutproof
 * (src/consensus/merkleProof.ts) that the transactions are in the block. Without a blockhash the block
 * is found through an unspent output of one of them (there is no transaction index), so a transaction
 * whose outputs are all spent needs its blockhash. Errors as bitcoind: -8 empty or duplicated txids,
 * -5 "Block not found", "Transaction not yet in block", "Not all transactions found in specified or
 * retrieved block". Runs on the RPC server's request fiber.
 */
export const gettxoutproofMethod = method(
  "gettxoutproof",
  Schema.Tuple(Schema.Array(hash).pipe(Schema.maxItems(MAX_PROOF_TXS)), Schema.optionalElement(hash)),
  ([txidHexes, blockHashHex]) =>
    Effect.gen(function* () {
      if (txidHexes.length === 0) return yield* invalidParameter("Parameter 'txids' cannot be empty")
      const wanted = new Set<string>()
      for (const h of txidHexes) {
        const key = h.toLowerCase()
        if (wanted.has(key)) return yield* invalidParameter(`Invalid parameter, duplicated txid: ${h}`)
        wanted.add(key)
      }
      const chain = yield* Chain
      let blockHash: BlockHash
      if (blockHashHex === undefined) {
        const found = yield* blockOfUnspent([...wanted].map((h) => fromHex(h) as TxId))
        if (Option.isNone(found)) return yield* invalidAddressOrKey("Transaction not yet in block")
        blockHash = found.value
      } else {
        blockHash = fromHex(blockHashHex.toLowerCase()) as BlockHash
        const entry = yield* chain.entry(blockHash)
        if (Option.isNone(entry)) return yield* invalidAddressOrKey("Block not found")
      }
      const bytes = yield* chain.block(blockHash).pipe(Effect.mapError((e) => miscError(e.message)))
      if (Option.isNone(bytes)) return yield* miscError("Block not available")
      const decoded = decodeBlockWithTxids(bytes.value)
      if (Either.isLeft(decoded)) return yield* miscError(`Can't read block: ${decoded.left.message}`)
      const { block, txids } = decoded.right
      const matches = txids.map((txid) => wanted.has(toHex(txid)))
      if (matches.filter((m) => m).length !== wanted.size)
        return yield* invalidAddressOrKey("Not all transactions found in specified or retrieved block")
      return toHex(buildProof(block.header, txids, matches))
    }),
  'a hex proof that the transactions are in a block (the block with an unspent output of one of them, or "blockhash")',
  ["txids", "blockhash"],
)

/**
 * verifytxoutproofMethod is bitcoind's `verifytxoutproof "proof"`: the txids the proof proves, when its
 * tree is valid and its header is in the active chain as `inActiveChain` says; [] when the tree does not
 * hash to the header's root or the block is not in the active chain; -5 when the hex is not a txoutproof
 * at all. Runs on the RPC server's request fiber.
 */
export const verifytxoutproofMethod = <R>(inActiveChain: InActiveChain<R>): RpcMethod<R> =>
  method(
    "verifytxoutproof",
    Schema.Tuple(hex),
    ([proofHex]) =>
      Effect.gen(function* () {
        const verified = verifyProof(fromHex(proofHex)!)
        if (Either.isLeft(verified)) {
          const e = verified.left
          if (e._tag === "DecodeError") return yield* invalidAddressOrKey(`Proof is malformed: ${e.message}`)
          return []
        }
        if (!(yield* inActiveChain(verified.right.blockHash))) return []
        return verified.right.matches.map((m) => toHex(m.txid))
      }),
    "the txids a proof proves, if its block is in the active chain (else [])",
    ["proof"],
  )

/** proofMethods are the full node's merkle proof RPCs: gettxoutproof and verifytxoutproof against its Chain. */
export const proofMethods = () => [gettxoutproofMethod, verifytxoutproofMethod(chainInActiveChain)]
