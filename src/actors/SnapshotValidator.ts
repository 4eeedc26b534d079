import { Clock, Duration, Effect, Either, Option } from "effect"
import {
  type BlockContext,
  checkBlock,
  contextualCheckBlock,
  decodeBlockWithTxids,
  headerHash,
} from "../consensus/checkBlock.js"
import {
  MUHASH_EMPTY,
  type MuHash,
  muhashAdd,
  muhashFinalize,
  muhashRemove,
  utxoElementFromKey,
} from "../consensus/muhash.js"
import type { NetworkParams } from "../consensus/params.js"
import { medianTimePast, nextWorkRequired } from "../consensus/pow.js"
import { MemoryUtxoSet } from "../consensus/utxo.js"
import type { StorageError } from "../layers/ChainStore.js"
import { SigVerifier } from "../layers/SigVerifier.js"
import type { BlockHeader } from "../schema/block.js"
import { bytesEqual, toHex } from "../schema/hex.js"
import { Chain, validateWithVerifier } from "./Chain.js"
import { Snapshots } from "./Snapshots.js"

/** PROGRESS_EVERY: the background validation logs its height this often. */
const PROGRESS_EVERY = 1000

/** MAX_BLOCK_ROUNDS bounds how many times one block is asked of the peers before the check gives up for now. */
const MAX_BLOCK_ROUNDS = 60

/** retryPause: between two rounds of asking every peer for a block nobody gave. */
const retryPause = Duration.seconds(5)

/**
 * ValidationOutcome is how a background validation ended: it agreed or disagreed with the snapshot
 * (the Chain is told either way), or it could not get a block and stopped for now.
 */
export type ValidationOutcome =
  | { readonly _tag: "Agreed"; readonly height: number }
  | { readonly _tag: "Disagreed"; readonly detail: string }
  | { readonly _tag: "Unavailable"; readonly height: number }
  | { readonly _tag: "Nothing" }

/**
 * validateBelowSnapshot checks the history below the snapshot the node started from (issue 9, Core's
 * background chainstate): it downloads blocks 1..base by hash through the Snapshots service (past
 * Sync, which fetches only above the tip), validates each with every consensus rule and signature
 * against a separate UTXO set **in memory** (a MemoryUtxoSet: regtest and test scale; a second LMDB
 * table space is the next step for mainnet scale), and at the base compares that set's MuHash with
 * the snapshot's hash_serialized. Agreement marks the snapshot validated (persisted); a block that
 * breaks a rule, or a different MuHash, makes the Chain stop trusting it (`settleSnapshot("failed")`:
 * it halts block processing and says so in getblockchaininfo). The node's own chainstate is never
 * touched. Runs on the calling fiber (the node forks it in the background).
 */
export const validateBelowSnapshot = (
  params: NetworkParams,
): Effect.Effect<ValidationOutcome, StorageError, Chain | Snapshots | SigVerifier> =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const snapshots = yield* Snapshots
    const verifier = yield* SigVerifier
    const state = yield* chain.snapshot
    if (Option.isNone(state) || state.value.status !== "assumed") return { _tag: "Nothing" } as const
    const { baseHeight, txoutsetHash } = state.value
    yield* Effect.logInfo(`snapshot: validating blocks 1..${baseHeight} in the background`)
    const utxos = new MemoryUtxoSet()
    let muhash: MuHash = MUHASH_EMPTY
    const headers: Array<BlockHeader> = [params.genesis.header]
    const disagree = (detail: string) =>
      Effect.as(chain.settleSnapshot("failed", detail), { _tag: "Disagreed", detail } as const)
    for (let h = 1; h <= baseHeight; h++) {
      const hash = yield* chain.hashAt(h)
      if (Option.isNone(hash)) return yield* disagree(`no block at height ${h} on the active chain`)
      let bytes = Option.none<Uint8Array>()
      for (let round = 0; round < MAX_BLOCK_ROUNDS && Option.isNone(bytes); round++) {
        if (round > 0) yield* Effect.sleep(retryPause)
        bytes = yield* snapshots.fetchBlock(hash.value)
        const decoded = Option.isSome(bytes) ? decodeBlockWithTxids(bytes.value) : undefined
        // a block that is not the one asked for (or does not decode) is asked again elsewhere
        if (
          decoded !== undefined &&
          (Either.isLeft(decoded) || !bytesEqual(headerHash(decoded.right.block.header), hash.value))
        )
          bytes = Option.none()
      }
      if (Option.isNone(bytes)) {
        yield* Effect.logWarning(
          `snapshot: background validation stopped at height ${h}: no peer gave block ${toHex(hash.value)}`,
        )
        return { _tag: "Unavailable", height: h } as const
      }
      const { block, txids } = Either.getOrThrow(decodeBlockWithTxids(bytes.value))
      const parent = headers[h - 1]!
      const times = headers.slice(Math.max(0, h - 11)).map((x) => x.time)
      const mtp = medianTimePast(times)
      const ctx: BlockContext = {
        prevHash: headerHash(parent),
        height: h,
        medianTimePast: mtp,
        expectedBits: nextWorkRequired(params, {
          height: h,
          prevBits: parent.bits,
          prevTime: parent.time,
          intervalStartTime: headers[Math.max(0, h - params.retargetInterval)]!.time,
        }),
        now: Math.floor((yield* Clock.currentTimeMillis) / 1000),
        params,
      }
      const rules = Either.gen(function* () {
        yield* checkBlock(block, params, txids)
        yield* contextualCheckBlock(block, h, mtp)
      })
      if (Either.isLeft(rules))
        return yield* disagree(`block ${h} (${toHex(hash.value)}): ${rules.left.message}`)
      const checked = yield* validateWithVerifier(verifier, block, ctx, utxos, txids)
      if (Either.isLeft(checked))
        return yield* disagree(`block ${h} (${toHex(hash.value)}): ${checked.left.message}`)
      const { delta } = checked.right
      const spent = delta.spent.map((key) => utxoElementFromKey(key, utxos.get(key)!))
      muhash = muhashAdd(
        muhashRemove(muhash, spent),
        delta.created.map(([key, coin]) => utxoElementFromKey(key, coin)),
      )
      utxos.apply(delta)
      headers.push(block.header)
      if (h % PROGRESS_EVERY === 0)
        yield* Effect.logInfo(`snapshot: background validation at height ${h} of ${baseHeight}`)
    }
    const reached = muhashFinalize(muhash)
    if (!bytesEqual(reached, txoutsetHash))
      return yield* disagree(
        `the blocks up to ${baseHeight} lead to UTXO set ${toHex(reached)}, the snapshot says ${toHex(txoutsetHash)}`,
      )
    yield* chain.settleSnapshot("validated", `UTXO set ${toHex(reached)}`)
    return { _tag: "Agreed", height: baseHeight } as const
  })

/**
 * backgroundValidation is the node's daemon for it: it waits (a poll every 5 s) until the node runs on
 * an assumed snapshot — loaded now or before a restart — then validates once; a run that could not get
 * a block tries again after a minute.
 */
export const backgroundValidation = (
  params: NetworkParams,
): Effect.Effect<never, never, Chain | Snapshots | SigVerifier> =>
  Effect.forever(
    Effect.gen(function* () {
      const outcome = yield* validateBelowSnapshot(params).pipe(
        Effect.catchAll((e) =>
          Effect.as(Effect.logWarning(`snapshot: background validation: ${e.message}`), {
            _tag: "Nothing",
          } as const),
        ),
      )
      yield* Effect.sleep(outcome._tag === "Unavailable" ? Duration.minutes(1) : Duration.seconds(5))
    }),
  )
