import {
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Layer,
  Metric,
  MetricBoundaries,
  Option,
  PubSub,
  Ref,
} from "effect"
import {
  type BlockContext,
  checkAndConnect,
  checkBlock,
  checkBlockHeader,
  contextualCheckBlock,
  contextualCheckBlockHeader,
  type DecodedBlock,
  decodeBlockWithTxids,
  disconnectBlock,
  type HeaderContext,
  headerHash,
  signatureFailure,
  type Validated,
} from "../consensus/checkBlock.js"
import { blockError, headerError, type RuleError } from "../consensus/errors.js"
import { blockHashOf } from "../consensus/hash.js"
import {
  decodeMuHash,
  encodeMuHash,
  MUHASH_EMPTY,
  type MuHash,
  muhashAdd,
  muhashFinalize,
  muhashRemove,
  utxoElementFromKey,
} from "../consensus/muhash.js"
import type { NetworkParams } from "../consensus/params.js"
import { blockWork, medianTimePast, nextWorkRequired } from "../consensus/pow.js"
import {
  checkChunk,
  checkSnapshotHeaders,
  entryElement,
  type SnapshotEntry,
  SnapshotError,
  type SnapshotHeader,
} from "../consensus/snapshot.js"
import { outpointKey, type UtxoView } from "../consensus/utxo.js"
import { ChainStore, type StorageError } from "../layers/ChainStore.js"
import { SigVerifier, type SigVerifierService } from "../layers/SigVerifier.js"
import { type Block, type BlockHeader, encodeBlock, HEADER_BYTES } from "../schema/block.js"
import type { BlockStatus, ChainTip, IndexEntry } from "../schema/chain.js"
import { type Coin, decodeUndo, encodeUndo } from "../schema/coin.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { bytesEqual, fromHex, toHex } from "../schema/hex.js"
import type { BlockHash, Height, TxId } from "../schema/primitives.js"
import * as Actor from "./Actor.js"
import { remember } from "./bounded.js"

/** PROGRESS_EVERY: connecting a long branch (reindex, a big import) logs a progress line this often. */
const PROGRESS_EVERY = 1000

/** MAX_RECENT bounds the decoded blocks kept between accepting and connecting them. */
const MAX_RECENT = 16

/** MAX_REJECTED bounds the memory of refused block hashes. */
const MAX_REJECTED = 10_000

/**
 * maxTipAge: while the active tip is older than this by the Clock, the node is in initial block
 * download (Core's DEFAULT_MAX_TIP_AGE).
 */
const maxTipAge = Duration.hours(24)

/** ChainConfig: the network and the orphan-pool bounds (policy, from config). */
export interface ChainConfig {
  readonly params: NetworkParams
  /** blocks whose parent is unknown, kept until it arrives: at most this many… */
  readonly maxOrphanBlocks: number
  /** …and at most this many bytes in all */
  readonly maxOrphanBytes: number
  /**
   * a test-only bug the simulator plants to prove its invariants catch one (never set from node.json
   * or the node's flags): "no-reorg" keeps the active tip unless the best candidate extends it
   */
  readonly plantedBug?: PlantedBug
}

/** PlantedBug names a deliberate bug for the simulator's planted-bug check (tests only). */
export type PlantedBug = "no-reorg"

/** defaultChainConfig bounds the orphan pool like Core's 100-block limit, plus a byte bound. */
export const defaultChainConfig = (params: NetworkParams): ChainConfig => ({
  params,
  maxOrphanBlocks: 100,
  maxOrphanBytes: 64 * 1024 * 1024,
})

/** ChainEvent is what the Chain actor publishes for other actors (mempool, relay, wallet, RPC). */
export type ChainEvent = Data.TaggedEnum<{
  /** a block joined the active chain */
  BlockConnected: {
    readonly hash: BlockHash
    readonly height: number
    readonly block: Block
    readonly txids: ReadonlyArray<TxId>
  }
  /** a block left the active chain (a reorg); its non-coinbase transactions may be re-admitted */
  BlockDisconnected: { readonly hash: BlockHash; readonly height: number; readonly block: Block }
  /** the active tip moved (after a whole connect or reorg step) */
  TipChanged: { readonly hash: BlockHash; readonly height: number }
}>
export const ChainEvent = Data.taggedEnum<ChainEvent>()

/** SubmitResult says what became of a block that passed every check it could be given. */
export type SubmitResult =
  /** it is on the active chain now */
  | "active"
  /** valid so far and stored on a side branch with less work (equal work: the first seen wins) */
  | "side"
  /** its parent is unknown; it waits in the orphan pool */
  | "orphan"
  /** already known */
  | "duplicate"

/** TipInfo is the active tip as readers see it. */
export interface TipInfo {
  readonly hash: BlockHash
  readonly height: number
  readonly chainwork: bigint
  readonly header: BlockHeader
  readonly medianTimePast: number
}

/**
 * ChainService is the Chain actor's interface. Any fiber may call it; all state changes happen on the
 * actor's fiber, in the order requests arrive.
 */
export interface ChainServiceApi {
  /** submitBlock decodes, checks, stores and (if it has the most work) connects a block. */
  readonly submitBlock: (bytes: Uint8Array) => Effect.Effect<SubmitResult, RuleError | DecodeError>
  /** tip is the active tip (a snapshot: no mailbox wait). */
  readonly tip: Effect.Effect<TipInfo>
  /** hashAt is the active chain's block at `height`. */
  readonly hashAt: (height: number) => Effect.Effect<Option.Option<BlockHash>>
  /** entry is what the node knows of a block: header, height, chainwork, status. */
  readonly entry: (hash: BlockHash) => Effect.Effect<Option.Option<IndexEntry & { readonly active: boolean }>>
  /** block returns a stored block's bytes. */
  readonly block: (hash: BlockHash) => Effect.Effect<Option.Option<Uint8Array>, StorageError>
  /** utxoCommitment is `hash_serialized`: the MuHash3072 of the whole UTXO set at the tip. */
  readonly utxoCommitment: Effect.Effect<{
    readonly hash: BlockHash
    readonly height: number
    readonly commitment: Uint8Array
  }>
  /** reindex drops the UTXO set and rebuilds it and the tip from the stored blocks. */
  readonly reindex: Effect.Effect<{ readonly height: number }, StorageError>
  /** events publishes ChainEvents; subscribe within a scope. */
  readonly events: PubSub.PubSub<ChainEvent>
  /** orphanCount is the orphan pool's size (for metrics and tests). */
  readonly orphanCount: Effect.Effect<number>

  // -- headers-first sync (issue 6) ---------------------------------------------------------------

  /**
   * submitHeaders checks and stores a batch of consecutive headers (each `prev` the hash of the one
   * before; the first's parent must be known): proof of work against `bits`, the expected `bits`,
   * time after the median time past and not too far ahead, linkage. New headers enter the header tree
   * with status "header" (persisted) and can be fetched with `blocksToFetch`. Known headers are
   * skipped. Fails with the first rule broken: `prev-blk-not-found` (ban score 0: ask again with a
   * locator) when the first parent is unknown, `bad-headers-chain` (100) when the batch is not
   * consecutive, `duplicate-invalid` (100) for a header already known invalid, else the header rule's
   * reason and score; headers before the failing one stay stored.
   */
  readonly submitHeaders: (headers: ReadonlyArray<BlockHeader>) => Effect.Effect<HeadersResult, RuleError>
  /**
   * locator is a block locator from the best header chain's tip back to genesis (Core's
   * CBlockLocator: steps of 1, doubling once 11 hashes are taken, so the first 12 are consecutive;
   * at most 101 hashes, the last the genesis hash).
   */
  readonly locator: Effect.Effect<ReadonlyArray<BlockHash>>
  /**
   * headersAfter answers getheaders from the active chain: the headers after the first `locator` hash
   * that is on the active chain (genesis when none is), up to and including `stop` (all-zero: no
   * stop), at most `max`.
   */
  readonly headersAfter: (
    locator: ReadonlyArray<BlockHash>,
    stop: BlockHash,
    max: number,
  ) => Effect.Effect<ReadonlyArray<BlockHeader>>
  /** bestHeader is the tip of the chain of valid-so-far headers with the most work (the sync target). */
  readonly bestHeader: Effect.Effect<HeaderTip>
  /**
   * blocksToFetch lists blocks to download towards `target` (a peer's best known header): those on the
   * branch from its fork with the active chain up to `target` whose data we lack, in height order, at
   * most `window` above the active tip, not in `exclude` (hex hashes already requested), at most `max`.
   * Empty when `target` is unknown, invalid, or has no more work to offer.
   */
  readonly blocksToFetch: (
    target: BlockHash,
    options: { readonly max: number; readonly window: number; readonly exclude: ReadonlySet<string> },
  ) => Effect.Effect<ReadonlyArray<{ readonly hash: BlockHash; readonly height: number }>>
  /**
   * syncStatus is what getblockchaininfo reports: the best header's height, whether the node is in
   * initial block download (Core's rule: until the tip is less than 24 h old by the Clock; once false,
   * it stays false), and verification progress (tip height / best header height, 1 when equal).
   */
  readonly syncStatus: Effect.Effect<{
    readonly headers: number
    readonly initialBlockDownload: boolean
    readonly verificationProgress: number
    /** why the node stopped processing blocks ("" while it runs normally): a snapshot found false */
    readonly warnings: string
  }>

  // -- UTXO snapshots (issue 9) --------------------------------------------------------------------

  /**
   * utxoDump reads the whole UTXO set, the tip, its hash_serialized and the active chain's headers on
   * the actor's fiber, so they are consistent at one tip (dumptxoutset). Holds every coin in memory.
   */
  readonly utxoDump: Effect.Effect<UtxoDump, StorageError>
  /**
   * loadSnapshot installs a snapshot chainstate into a node still at genesis: it checks the header
   * chain (proof of work, expected bits, linkage, times, the base hash), each chunk against its
   * committed hash (count and order too), writes the coins chunk by chunk, and checks the MuHash over
   * every loaded coin against the header's hash_serialized and the coin count. Then the base is the
   * tip, the blocks below it are on the active chain without data (assumed valid: never fetched, and
   * no reorg goes below the base), and blocks above it connect as usual. Any failure wipes the coins
   * written and leaves the node at genesis. The caller checks that the snapshot is committed.
   */
  readonly loadSnapshot: (
    source: SnapshotSource,
  ) => Effect.Effect<SnapshotState, SnapshotError | StorageError>
  /** snapshot is the snapshot this node started from, if any. */
  readonly snapshot: Effect.Effect<Option.Option<SnapshotState>, StorageError>
  /**
   * holdBlocks(true) makes `blocksToFetch` answer nothing (headers still sync) while a snapshot is
   * fetched from peers, so no block connects on genesis meanwhile; holdBlocks(false) resumes.
   */
  readonly holdBlocks: (hold: boolean) => Effect.Effect<void>
  /**
   * settleSnapshot records the background validation's verdict on the snapshot the node started from
   * (persisted). "failed" — the history below the base does not lead to the snapshot's UTXO set —
   * stops the node trusting it: it logs an error, connects and fetches no more blocks, and says so in
   * syncStatus's warnings (getblockchaininfo), now and after a restart.
   */
  readonly settleSnapshot: (
    verdict: "validated" | "failed",
    detail: string,
  ) => Effect.Effect<void, StorageError>
}

/**
 * SnapshotSource is a UTXO snapshot as the Chain loads it: its header (already found committed by the
 * caller: network params or the operator), the header chain genesis..base, and its chunks by index
 * (from a file, or fetched from peers and checked by the caller).
 */
export interface SnapshotSource {
  readonly header: SnapshotHeader
  /** genesis..base; undefined: the Chain's own header tree must hold the base (headers-first sync) */
  readonly headers: ReadonlyArray<BlockHeader> | undefined
  readonly chunk: (index: number) => Effect.Effect<Uint8Array, SnapshotError>
}

/** UtxoDump is the UTXO set at one tip with what a snapshot file needs besides: dumptxoutset's input. */
export interface UtxoDump {
  readonly hash: BlockHash
  readonly height: number
  /** hash_serialized at the tip */
  readonly txoutsetHash: Uint8Array
  /** the active chain's headers, genesis first */
  readonly headers: ReadonlyArray<BlockHeader>
  /** every unspent output, in no particular order */
  readonly coins: ReadonlyArray<SnapshotEntry>
}

/**
 * SnapshotState is what the node knows of the snapshot it started from (none for a node that
 * replayed its history): the snapshot id, its base, and whether the history below it has been
 * validated in the background (`assumed` until then).
 */
export interface SnapshotState {
  readonly snapshotId: Uint8Array
  readonly baseHash: BlockHash
  readonly baseHeight: number
  /** the snapshot's hash_serialized: what the background validation must reach at the base */
  readonly txoutsetHash: Uint8Array
  readonly status: "assumed" | "validated" | "failed"
}

/** SNAPSHOT_TABLE is the keyed table of the snapshot rows: "base" (SnapshotState), "loading" (a load under way). */
const SNAPSHOT_TABLE = "snapshot"
const snapshotStatuses: ReadonlyArray<SnapshotState["status"]> = ["assumed", "validated", "failed"]

/** encodeSnapshotState: snapshot id 32 ‖ base hash 32 ‖ base height u32 ‖ status u8 ‖ txoutset hash 32. */
const encodeSnapshotState = (s: SnapshotState): Uint8Array => {
  const out = new Uint8Array(101)
  out.set(s.snapshotId, 0)
  out.set(s.baseHash, 32)
  new DataView(out.buffer).setUint32(64, s.baseHeight, true)
  out[68] = snapshotStatuses.indexOf(s.status)
  out.set(s.txoutsetHash, 69)
  return out
}

const decodeSnapshotState = (b: Uint8Array): SnapshotState | undefined => {
  const status = snapshotStatuses[b[68] ?? 255]
  if (b.length !== 101 || status === undefined) return undefined
  return {
    snapshotId: b.slice(0, 32),
    baseHash: b.slice(32, 64) as BlockHash,
    baseHeight: new DataView(b.buffer, b.byteOffset).getUint32(64, true),
    txoutsetHash: b.slice(69, 101),
    status,
  }
}

/** HeaderTip names a header in the tree with its height and cumulative work. */
export interface HeaderTip {
  readonly hash: BlockHash
  readonly height: number
  readonly chainwork: bigint
}

/** HeadersResult says how a headers batch went: the last header's place in the tree, and how many were new. */
export interface HeadersResult {
  readonly last: HeaderTip
  readonly added: number
}

/** chainHeight is the active tip's height, exported at /metrics. */
export const chainHeight = Metric.gauge("chain_height", { description: "height of the active tip" })
/** blockValidationSeconds times each block's full validation and commit (connect), at /metrics. */
export const blockValidationSeconds = Metric.histogram(
  "block_validation_seconds",
  MetricBoundaries.exponential({ start: 0.0005, factor: 2, count: 14 }),
  "time to validate and connect one block",
)

/** Chain is the service tag of the Chain actor. */
export class Chain extends Context.Tag("fibercoin/Chain")<Chain, ChainServiceApi>() {}

/** ChainCorrupt: the stored chain state contradicts itself (a missing block or undo record of the active chain). */
export class ChainCorrupt extends Data.TaggedError("ChainCorrupt")<{ readonly detail: string }> {}

/**
 * validateWithVerifier is the node's block validation: checkAndConnect, then every signature check
 * on `verifier` (the worker pool, behind its caches). Any fiber may call it; it changes nothing.
 * (Handing checks to the pool while connect still runs was measured: no gain on 2 cores, where the
 * connect thread and the workers share the same cores.)
 */
export const validateWithVerifier = (
  verifier: SigVerifierService,
  block: Block,
  ctx: BlockContext,
  view: UtxoView,
  txids: ReadonlyArray<TxId>,
): Effect.Effect<Either.Either<Validated, RuleError>> =>
  Effect.gen(function* () {
    const checked = checkAndConnect(block, ctx, view, txids, { signaturesVerified: verifier.txVerified })
    if (Either.isLeft(checked)) return checked
    const bad = yield* verifier.verifyAll(checked.right.signatureChecks)
    return bad >= 0 ? Either.left(signatureFailure(checked.right, bad)) : checked
  })

// ---------------------------------------------------------------------------------------------------
// State, owned by the actor fiber only.

/** Node is one block of the in-memory header tree. `status` and `children` change only on the actor fiber. */
interface Node {
  readonly hash: BlockHash
  readonly hex: string
  readonly header: BlockHeader
  readonly height: number
  readonly chainwork: bigint
  readonly parent: Node | undefined
  /** an ancestor at skipHeight(height), for O(log n) ancestor look-ups off the active chain (Core's pskip) */
  readonly skip: Node | undefined
  readonly children: Array<Node>
  /** first-seen order: of two chains with equal work, the one seen first stays active */
  readonly seq: number
  status: BlockStatus
  /** this block and all its ancestors have data: it can be connected */
  chainData: boolean
  /** why it is invalid, for `duplicate-invalid` answers */
  invalidReason?: RuleError
}

interface Orphan {
  readonly hex: string
  readonly prevHex: string
  readonly bytes: Uint8Array
}

interface State {
  readonly tree: Map<string, Node>
  /** the active chain: active[h] is the block at height h */
  readonly active: Array<Node>
  /** blocks that can be connected and might have more work than the tip */
  readonly candidates: Set<Node>
  readonly orphans: Map<string, Orphan>
  orphanBytes: number
  /**
   * hashes of blocks refused outside the tree (bad parent, a rule no corrupted copy could break),
   * oldest first, at most MAX_REJECTED: their children are refused at once instead of orphaned
   */
  readonly rejected: Set<string>
  /**
   * blocks accepted this session, decoded with their txids, oldest first, at most MAX_RECENT: the
   * connect that usually follows at once reuses them instead of reading, decoding and hashing again
   */
  readonly recent: Map<string, DecodedBlock>
  muhash: MuHash
  seq: number
  /**
   * the node with the most work among those not invalid, first seen on ties (the sync target);
   * undefined only while `load` builds the tree (read it with bestHeaderOf)
   */
  bestHeader: Node | undefined
  /** the height of the snapshot base this node started from (0: none); no reorg goes below it */
  snapshotBase: number
  /** blocksToFetch answers nothing while a snapshot is fetched (holdBlocks) */
  holdBlocks: boolean
  /** set when the snapshot the node started from proved false: no block is processed any more */
  halted: string
}

type Command =
  | {
      readonly _tag: "Submit"
      readonly bytes: Uint8Array
      readonly reply: Deferred.Deferred<SubmitResult, RuleError | DecodeError>
    }
  | {
      readonly _tag: "HashAt"
      readonly height: number
      readonly reply: Deferred.Deferred<Option.Option<BlockHash>>
    }
  | {
      readonly _tag: "Entry"
      readonly hash: BlockHash
      readonly reply: Deferred.Deferred<Option.Option<IndexEntry & { readonly active: boolean }>>
    }
  | {
      readonly _tag: "Commitment"
      readonly reply: Deferred.Deferred<{
        readonly hash: BlockHash
        readonly height: number
        readonly commitment: Uint8Array
      }>
    }
  | { readonly _tag: "Reindex"; readonly reply: Deferred.Deferred<{ readonly height: number }, StorageError> }
  | { readonly _tag: "OrphanCount"; readonly reply: Deferred.Deferred<number> }
  | {
      readonly _tag: "SubmitHeaders"
      readonly headers: ReadonlyArray<BlockHeader>
      readonly reply: Deferred.Deferred<HeadersResult, RuleError>
    }
  | { readonly _tag: "Locator"; readonly reply: Deferred.Deferred<ReadonlyArray<BlockHash>> }
  | {
      readonly _tag: "HeadersAfter"
      readonly locator: ReadonlyArray<BlockHash>
      readonly stop: BlockHash
      readonly max: number
      readonly reply: Deferred.Deferred<ReadonlyArray<BlockHeader>>
    }
  | { readonly _tag: "BestHeader"; readonly reply: Deferred.Deferred<HeaderTip> }
  | {
      readonly _tag: "BlocksToFetch"
      readonly target: BlockHash
      readonly max: number
      readonly window: number
      readonly exclude: ReadonlySet<string>
      readonly reply: Deferred.Deferred<ReadonlyArray<{ readonly hash: BlockHash; readonly height: number }>>
    }
  | { readonly _tag: "SyncStatus"; readonly reply: Deferred.Deferred<SyncStatus> }
  | { readonly _tag: "UtxoDump"; readonly reply: Deferred.Deferred<UtxoDump, StorageError> }
  | {
      readonly _tag: "LoadSnapshot"
      readonly source: SnapshotSource
      readonly reply: Deferred.Deferred<SnapshotState, SnapshotError | StorageError>
    }
  | { readonly _tag: "HoldBlocks"; readonly hold: boolean; readonly reply: Deferred.Deferred<void> }
  | {
      readonly _tag: "SettleSnapshot"
      readonly verdict: "validated" | "failed"
      readonly detail: string
      readonly reply: Deferred.Deferred<void, StorageError>
    }

/** SyncStatus is syncStatus's answer. */
type SyncStatus = Effect.Effect.Success<ChainServiceApi["syncStatus"]>

/** statusOf reads a node's status afresh (it may change across an activation). */
const statusOf = (n: Node): BlockStatus => n.status

const entryOf = (n: Node): IndexEntry => ({
  hash: n.hash,
  header: n.header,
  height: n.height as Height,
  chainwork: n.chainwork,
  status: n.status,
})

const tipOf = (n: Node): HeaderTip => ({ hash: n.hash, height: n.height, chainwork: n.chainwork })

/** skipHeight is the height a node's skip pointer points at (Core's GetSkipHeight). */
const skipHeight = (height: number): number => {
  if (height < 2) return 0
  const invertLowestOne = (n: number) => n & (n - 1)
  return height & 1 ? invertLowestOne(invertLowestOne(height - 1)) + 1 : invertLowestOne(height)
}

/**
 * ancestorAt is `n`'s ancestor at `height` (undefined above `n`): the active chain answers directly,
 * elsewhere the skip pointers take O(log n) steps (Core's GetAncestor) until the walk meets the
 * active chain.
 */
const ancestorAt = (state: State, n: Node, height: number): Node | undefined => {
  if (height < 0 || height > n.height) return undefined
  let cur = n
  while (cur.height > height) {
    if (state.active[cur.height] === cur) return state.active[height]
    const h = skipHeight(cur.height)
    const hPrev = skipHeight(cur.height - 1)
    if (cur.skip !== undefined && (h === height || (h > height && !(hPrev < h - 2 && hPrev >= height)))) {
      cur = cur.skip
    } else {
      cur = cur.parent!
    }
  }
  return cur
}

/** bestHeaderOf is the best header (genesis before `load` has finished). */
const bestHeaderOf = (state: State): Node => state.bestHeader ?? state.active[0]!

/** considerBestHeader makes `n` the best header if it has more work; on equal work the first seen stays. */
const considerBestHeader = (state: State, n: Node) => {
  if (n.status !== "invalid" && (state.bestHeader === undefined || n.chainwork > state.bestHeader.chainwork))
    state.bestHeader = n
}

/** recomputeBestHeader scans the whole tree: only when the best header was marked invalid or forgotten. */
const recomputeBestHeader = (state: State) => {
  let best: Node | undefined
  for (const n of state.tree.values()) {
    if (n.status === "invalid") continue
    if (
      best === undefined ||
      n.chainwork > best.chainwork ||
      (n.chainwork === best.chainwork && n.seq < best.seq)
    )
      best = n
  }
  state.bestHeader = best
}

/**
 * locatorOf is Core's CBlockLocator from the best header: 12 hashes one apart, then the step doubles,
 * genesis last. At most 12 + 31 + 1 hashes for 31-bit heights, within MAX_LOCATOR_HASHES (101).
 */
const locatorOf = (state: State): ReadonlyArray<BlockHash> => {
  const hashes: Array<BlockHash> = []
  let n = bestHeaderOf(state)
  let step = 1
  while (true) {
    hashes.push(n.hash)
    if (n.height === 0) return hashes
    n = ancestorAt(state, n, Math.max(n.height - step, 0))!
    if (hashes.length > 10) step *= 2
  }
}

/**
 * headersAfterOf answers getheaders from the active chain: after the first locator hash on it (else
 * after genesis, as Core), through `stop` (all-zero: none), at most `max`.
 */
const headersAfterOf = (
  state: State,
  locator: ReadonlyArray<BlockHash>,
  stop: BlockHash,
  max: number,
): ReadonlyArray<BlockHeader> => {
  let start = 1
  for (const hash of locator) {
    const n = state.tree.get(toHex(hash))
    if (n !== undefined && state.active[n.height] === n) {
      start = n.height + 1
      break
    }
  }
  const stopHex = stop.every((b) => b === 0) ? undefined : toHex(stop)
  const out: Array<BlockHeader> = []
  for (let h = start; h < state.active.length && out.length < max; h++) {
    const n = state.active[h]!
    out.push(n.header)
    if (n.hex === stopHex) break
  }
  return out
}

/**
 * blocksToFetchOf lists the blocks without data between the fork of `target` with the active chain
 * and min(target, tip + window), in height order. Cost: O(log n) to find the window's top with the
 * skip pointers, then a walk down to the fork, O(window + reorg depth), never the whole path to a far
 * target.
 */
const blocksToFetchOf = (
  state: State,
  target: BlockHash,
  options: { readonly max: number; readonly window: number; readonly exclude: ReadonlySet<string> },
): ReadonlyArray<{ readonly hash: BlockHash; readonly height: number }> => {
  const node = state.tree.get(toHex(target))
  const tip = state.active[state.active.length - 1]!
  if (node === undefined || node.status === "invalid" || node.chainwork <= tip.chainwork || options.max <= 0)
    return []
  let fork = ancestorAt(state, node, Math.min(node.height, tip.height))!
  while (state.active[fork.height] !== fork) fork = fork.parent!
  const top = Math.min(node.height, tip.height + options.window)
  if (top <= fork.height) return []
  const path: Array<Node> = []
  for (let n = ancestorAt(state, node, top)!; n !== fork; n = n.parent!) {
    if (n.status === "invalid") return []
    if (n.status === "header" && !options.exclude.has(n.hex)) path.push(n)
  }
  return path
    .slice(-options.max)
    .reverse()
    .map((n) => ({ hash: n.hash, height: n.height }))
}

/** mtpOf is the median-time-past of the 11 blocks ending at `n`. */
const mtpOf = (n: Node): number => {
  const times: Array<number> = []
  let cur: Node | undefined = n
  for (let i = 0; i < 11 && cur !== undefined; i++, cur = cur.parent) times.push(cur.header.time)
  return medianTimePast(times)
}

// ---------------------------------------------------------------------------------------------------

/**
 * make builds the Chain actor over a ChainStore and a SigVerifier: it loads the header tree, creates
 * and commits the genesis block on a fresh store, and serves requests until its scope closes.
 */
export const make = (config: ChainConfig) =>
  Effect.gen(function* () {
    const store = yield* ChainStore
    const verifier = yield* SigVerifier
    const params = config.params
    const events = yield* PubSub.unbounded<ChainEvent>()
    const tipRef = yield* Ref.make<TipInfo | undefined>(undefined)
    /**
     * initialBlockDownload is Core's latch: true until the active tip is less than maxTipAge old by
     * the Clock, then false for the life of the node (it survives actor restarts).
     */
    let initialBlockDownload = true

    /** updateInitialBlockDownload re-evaluates the latch against the active tip. */
    const updateInitialBlockDownload = (state: State) =>
      Effect.gen(function* () {
        if (!initialBlockDownload) return
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        if (now - activeTip(state).header.time <= Duration.toSeconds(maxTipAge)) initialBlockDownload = false
      })

    const publishTip = (state: State) => {
      const tip = state.active[state.active.length - 1]!
      return Ref.set(tipRef, {
        hash: tip.hash,
        height: tip.height,
        chainwork: tip.chainwork,
        header: tip.header,
        medianTimePast: mtpOf(tip),
      }).pipe(
        Effect.zipRight(Metric.set(chainHeight, tip.height)),
        Effect.zipRight(updateInitialBlockDownload(state)),
      )
    }

    // -- loading ------------------------------------------------------------------------------------

    /** addNode links a new node into the tree (parents first) and keeps bestHeader up to date. */
    const addNode = (state: State, entry: IndexEntry, parent: Node | undefined): Node => {
      const node: Node = {
        hash: entry.hash,
        hex: toHex(entry.hash),
        header: entry.header,
        height: entry.height,
        chainwork: entry.chainwork,
        parent,
        skip: parent === undefined ? undefined : ancestorAt(state, parent, skipHeight(entry.height)),
        children: [],
        seq: state.seq++,
        status: entry.status,
        chainData: false,
      }
      parent?.children.push(node)
      state.tree.set(node.hex, node)
      considerBestHeader(state, node)
      return node
    }

    const genesisEntry = (): IndexEntry => ({
      hash: params.genesisHash,
      header: params.genesis.header,
      height: 0 as Height,
      chainwork: blockWork(params.genesis.header.bits),
      status: "valid",
    })

    /** load rebuilds the state from storage; on a fresh store it commits the genesis block first. */
    const load: Effect.Effect<State, StorageError | ChainCorrupt> = Effect.gen(function* () {
      let tip = yield* store.tip
      if (Option.isNone(tip)) {
        const genesis = genesisEntry()
        yield* store.putBlock(genesis.hash, encodeBlock(params.genesis))
        yield* store.commit({
          tip: { hash: genesis.hash, height: 0 as Height, utxoCommitment: encodeMuHash(MUHASH_EMPTY) },
          delta: { spent: [], created: [] },
          index: [genesis],
        })
        tip = yield* store.tip
      }
      const committed = Option.getOrThrow(tip)
      const entries = [...(yield* store.loadIndex)].sort((a, b) => a.height - b.height)
      const state: State = {
        tree: new Map(),
        active: [],
        candidates: new Set(),
        orphans: new Map(),
        orphanBytes: 0,
        rejected: new Set(),
        recent: new Map(),
        muhash: MUHASH_EMPTY,
        seq: 0,
        bestHeader: undefined,
        snapshotBase: 0,
        holdBlocks: false,
        halted: "",
      }
      for (const entry of entries) {
        const parent = entry.height === 0 ? undefined : state.tree.get(toHex(entry.header.prev))
        if (entry.height > 0 && parent === undefined) continue // unreachable header: ignore
        if (entry.height === 0 && !bytesEqual(entry.hash, params.genesisHash)) {
          return yield* new ChainCorrupt({
            detail: `stored genesis ${toHex(entry.hash)} is not ${params.name}'s`,
          })
        }
        addNode(state, entry, parent)
      }
      const tipNode = state.tree.get(toHex(committed.hash))
      if (tipNode === undefined)
        return yield* new ChainCorrupt({ detail: `tip ${toHex(committed.hash)} has no index entry` })
      for (let n: Node | undefined = tipNode; n !== undefined; n = n.parent) state.active[n.height] = n
      const decoded = decodeMuHash(committed.utxoCommitment)
      if (Either.isLeft(decoded))
        return yield* new ChainCorrupt({ detail: `tip commitment: ${decoded.left.message}` })
      state.muhash = decoded.right
      const snapshotRows = yield* recoverSnapshotRows(committed)
      state.snapshotBase = snapshotRows.height
      if (snapshotRows.failed) state.halted = haltedMessage
      // chainData flags and candidates, parents before children (entries are sorted by height)
      for (const node of state.tree.values()) {
        node.chainData =
          (node.status === "data" || node.status === "valid") &&
          (node.parent === undefined || node.parent.chainData)
        if (node.chainData && node.chainwork > tipNode.chainwork) state.candidates.add(node)
      }
      return state
    })

    const snapshotTable = store.table(SNAPSHOT_TABLE)

    /**
     * recoverSnapshotRows finishes or undoes a snapshot load a crash interrupted ("loading" left
     * behind): with the tip still at genesis the coins written so far are wiped; with the tip at the
     * base the load had committed and only its "base" row is written. Returns the base height (0: none).
     */
    const recoverSnapshotRows = (committed: ChainTip) =>
      Effect.gen(function* () {
        const loading = yield* snapshotTable.get("loading")
        if (Option.isSome(loading)) {
          if (committed.height === 0) {
            yield* Effect.logWarning("snapshot: an interrupted load is wiped; the node starts from genesis")
            yield* wipeToGenesis
          } else {
            yield* snapshotTable.write([
              [
                "base",
                encodeSnapshotState({
                  snapshotId: loading.value.slice(0, 32),
                  baseHash: committed.hash,
                  baseHeight: committed.height,
                  txoutsetHash: loading.value.slice(32, 64),
                  status: "assumed",
                }),
              ],
              ["loading", undefined],
            ])
          }
        }
        const base = yield* readSnapshotState
        return Option.match(base, {
          onNone: () => ({ height: 0, failed: false }),
          onSome: (b) => ({ height: b.baseHeight, failed: b.status === "failed" }),
        })
      })

    const haltedMessage =
      "the background validation of the UTXO snapshot this node started from disagrees with it: block processing stopped (start again from genesis without the snapshot)"

    /** settleSnapshotOf persists the verdict; "failed" halts block processing. */
    const settleSnapshotOf = (state: State, verdict: "validated" | "failed", detail: string) =>
      Effect.gen(function* () {
        const current = yield* readSnapshotState
        if (Option.isNone(current)) return
        yield* snapshotTable.put("base", encodeSnapshotState({ ...current.value, status: verdict }))
        if (verdict === "validated") {
          yield* Effect.logInfo(
            `snapshot: background validation agrees at height ${current.value.baseHeight} (${detail})`,
          )
          return
        }
        state.halted = haltedMessage
        yield* Effect.logError(`snapshot: ${haltedMessage}: ${detail}`)
      })

    const readSnapshotState = Effect.map(snapshotTable.get("base"), (row) =>
      Option.flatMap(row, (b) => Option.fromNullable(decodeSnapshotState(b))),
    )

    /** wipeToGenesis drops the UTXO set and commits the genesis tip (a failed or interrupted load). */
    const wipeToGenesis = Effect.gen(function* () {
      yield* store.resetChainState
      yield* store.commit({
        tip: { hash: params.genesisHash, height: 0 as Height, utxoCommitment: encodeMuHash(MUHASH_EMPTY) },
        delta: { spent: [], created: [] },
      })
      yield* snapshotTable.remove("loading")
    })

    // -- helpers run on the actor fiber ---------------------------------------------------------------

    const headerContext = (state: State, parent: Node, now: number): HeaderContext => {
      const height = parent.height + 1
      const start = ancestorAt(state, parent, Math.max(0, height - params.retargetInterval))
      return {
        prevHash: parent.hash,
        height,
        medianTimePast: mtpOf(parent),
        expectedBits: nextWorkRequired(params, {
          height,
          prevBits: parent.header.bits,
          prevTime: parent.header.time,
          intervalStartTime: start?.header.time ?? parent.header.time,
        }),
        now,
      }
    }

    /** markInvalid marks `node` and every descendant invalid, in memory and in the index. */
    const markInvalid = (state: State, node: Node, reason: RuleError) =>
      Effect.gen(function* () {
        const changed: Array<IndexEntry> = []
        const stack = [node]
        while (stack.length > 0) {
          const n = stack.pop()!
          if (n.status !== "invalid") {
            n.status = "invalid"
            n.invalidReason = reason
            n.chainData = false
            state.candidates.delete(n)
            changed.push(entryOf(n))
          }
          stack.push(...n.children)
        }
        if (state.bestHeader?.status === "invalid") recomputeBestHeader(state)
        yield* store.putIndex(changed).pipe(Effect.orDie)
      })

    /** setChainData flags `node` (which just got data) and any waiting descendants as connectable. */
    const setChainData = (state: State, node: Node) => {
      const stack = [node]
      while (stack.length > 0) {
        const n = stack.pop()!
        if (n.status !== "data" && n.status !== "valid") continue
        if (n.parent !== undefined && !n.parent.chainData) continue
        n.chainData = true
        state.candidates.add(n)
        stack.push(...n.children)
      }
    }

    /** readBlock is a block's decoded form and txids: from `recent` when just accepted, else from storage. */
    const readBlock = (state: State, node: Node) =>
      Effect.gen(function* () {
        const recent = state.recent.get(node.hex)
        if (recent !== undefined) return recent
        const bytes = yield* store.getBlock(node.hash)
        if (Option.isNone(bytes))
          return yield* Effect.die(new ChainCorrupt({ detail: `block ${node.hex} missing` }))
        const decoded = decodeBlockWithTxids(bytes.value)
        if (Either.isLeft(decoded)) {
          return yield* Effect.die(
            new ChainCorrupt({ detail: `stored block ${node.hex}: ${decoded.left.message}` }),
          )
        }
        return decoded.right
      })

    /** connectTip connects `node` (whose parent is the tip); a rule failure comes back as a Left. */
    const connectTip = (state: State, node: Node) =>
      Effect.gen(function* () {
        const { block, txids } = yield* readBlock(state, node)
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const ctx: BlockContext = { ...headerContext(state, node.parent!, now), params }
        const checked = yield* validateWithVerifier(verifier, block, ctx, store.coins, txids)
        if (Either.isLeft(checked)) return Either.left(checked.left)
        const connected = checked.right
        verifier.markTxVerified(txids.slice(1))
        const spentCoins = new Map<string, Coin>()
        let u = 0
        for (let t = 1; t < block.txs.length; t++) {
          for (const input of block.txs[t]!.inputs) {
            spentCoins.set(outpointKey(input.prevout.txid, input.prevout.index), connected.undo[u++]!)
          }
        }
        const muhash = muhashAdd(
          muhashRemove(
            state.muhash,
            connected.delta.spent.map((key) => utxoElementFromKey(key, spentCoins.get(key)!)),
          ),
          connected.delta.created.map(([key, coin]) => utxoElementFromKey(key, coin)),
        )
        node.status = "valid"
        const tip: ChainTip = {
          hash: node.hash,
          height: node.height as Height,
          utxoCommitment: encodeMuHash(muhash),
        }
        yield* store.commit({
          tip,
          delta: connected.delta,
          putUndo: [node.hash, encodeUndo(connected.undo)],
          index: [entryOf(node)],
        })
        state.muhash = muhash
        state.active.push(node)
        yield* PubSub.publish(
          events,
          ChainEvent.BlockConnected({ hash: node.hash, height: node.height, block, txids }),
        )
        return Either.right(undefined)
      })

    /** disconnectTip undoes the active tip with its undo record. */
    const disconnectTip = (state: State) =>
      Effect.gen(function* () {
        const node = state.active[state.active.length - 1]!
        const { block, txids } = yield* readBlock(state, node)
        const undoBytes = yield* store.getUndo(node.hash)
        if (Option.isNone(undoBytes))
          return yield* Effect.die(new ChainCorrupt({ detail: `undo of ${node.hex} missing` }))
        const undo = decodeUndo(undoBytes.value)
        if (Either.isLeft(undo))
          return yield* Effect.die(new ChainCorrupt({ detail: `undo of ${node.hex}: ${undo.left.message}` }))
        const delta = disconnectBlock(block, txids, undo.right)
        if (Either.isLeft(delta))
          return yield* Effect.die(new ChainCorrupt({ detail: `undo of ${node.hex}: ${delta.left.message}` }))
        const outputs = new Map<string, Coin>()
        block.txs.forEach((tx, t) => {
          const hex = toHex(txids[t]!)
          tx.outputs.forEach((o, n) => {
            outputs.set(`${hex}:${n}`, {
              value: o.value,
              pubkey: o.pubkey,
              height: node.height as Height,
              coinbase: t === 0,
            })
          })
        })
        const muhash = muhashAdd(
          muhashRemove(
            state.muhash,
            delta.right.spent.map((key) => utxoElementFromKey(key, outputs.get(key)!)),
          ),
          delta.right.created.map(([key, coin]) => utxoElementFromKey(key, coin)),
        )
        const parent = node.parent!
        yield* store.commit({
          tip: { hash: parent.hash, height: parent.height as Height, utxoCommitment: encodeMuHash(muhash) },
          delta: delta.right,
          deleteUndo: node.hash,
        })
        state.muhash = muhash
        state.active.pop()
        yield* PubSub.publish(
          events,
          ChainEvent.BlockDisconnected({ hash: node.hash, height: node.height, block }),
        )
      })

    const activeTip = (state: State) => state.active[state.active.length - 1]!

    /** bestCandidate: most work, then first seen. */
    const bestCandidate = (state: State): Node | undefined => {
      let best: Node | undefined
      for (const n of state.candidates) {
        if (
          best === undefined ||
          n.chainwork > best.chainwork ||
          (n.chainwork === best.chainwork && n.seq < best.seq)
        ) {
          best = n
        }
      }
      return best
    }

    /**
     * activateBestChain moves the active chain to the valid candidate with the most work: disconnect
     * to the fork point, connect along the new branch. A block that fails is marked invalid with its
     * descendants and the search starts again, which brings the node back to its best valid chain.
     * Returns the first rule failure met, if any, for the submitter.
     */
    const activateBestChain = (state: State) =>
      Effect.gen(function* () {
        let failure: { readonly node: Node; readonly error: RuleError } | undefined
        const startTip = activeTip(state)
        while (true) {
          const tip = activeTip(state)
          for (const n of state.candidates)
            if (n.chainwork <= tip.chainwork && n !== tip) state.candidates.delete(n)
          const best = bestCandidate(state)
          if (best === undefined || best.chainwork <= tip.chainwork) break
          let fork: Node | undefined = best
          while (fork !== undefined && state.active[fork.height] !== fork) fork = fork.parent
          if (fork === undefined) break
          if (config.plantedBug === "no-reorg" && fork !== tip) {
            // the planted bug: a heavier side branch is never switched to
            state.candidates.delete(best)
            continue
          }
          if (fork.height < state.snapshotBase) {
            // the blocks below a snapshot's base have no data to disconnect with: refuse the branch
            state.candidates.delete(best)
            yield* Effect.logWarning(
              `chain: ignoring branch ${best.hex}, it forks at ${fork.height} below the snapshot base ${state.snapshotBase}`,
            )
            continue
          }
          while (activeTip(state) !== fork) yield* disconnectTip(state)
          const path: Array<Node> = []
          for (let n: Node | undefined = best; n !== fork; n = n!.parent) path.push(n!)
          path.reverse()
          for (let i = 0; i < path.length; i++) {
            const node = path[i]!
            const [took, r] = yield* Effect.timed(connectTip(state, node))
            yield* Metric.update(blockValidationSeconds, Duration.toSeconds(took))
            if (Either.isLeft(r)) {
              failure ??= { node, error: r.left }
              yield* markInvalid(state, node, r.left)
              break
            }
            if (path.length >= PROGRESS_EVERY && (i + 1) % PROGRESS_EVERY === 0) {
              yield* Effect.logInfo(`connecting blocks: height ${node.height}, ${i + 1} of ${path.length}`)
            }
          }
        }
        if (activeTip(state) !== startTip) {
          const tip = activeTip(state)
          yield* publishTip(state)
          yield* PubSub.publish(events, ChainEvent.TipChanged({ hash: tip.hash, height: tip.height }))
        }
        return failure
      })

    /** acceptBlock runs every check that needs no UTXO set, stores the block, and activates. */
    const acceptBlock = (
      state: State,
      bytes: Uint8Array,
    ): Effect.Effect<readonly [SubmitResult, string], RuleError | DecodeError, never> =>
      Effect.gen(function* () {
        // a block we have (or know invalid) is recognised by its header's hash before any decoding
        const early = bytes.length >= HEADER_BYTES ? toHex(blockHashOf(bytes.subarray(0, HEADER_BYTES))) : ""
        const seen = state.tree.get(early)
        if (seen?.status === "data" || seen?.status === "valid" || state.orphans.has(early))
          return ["duplicate", early] as const
        const decoded: DecodedBlock = yield* decodeBlockWithTxids(bytes)
        const { block, txids } = decoded
        const hash = headerHash(block.header)
        const hex = toHex(hash)
        const known = state.tree.get(hex)
        if (known !== undefined && known.status === "invalid") {
          return yield* Effect.fail(blockError("duplicate-invalid", known.invalidReason?.message ?? "", 100))
        }
        const prevHex = toHex(block.header.prev)
        if (state.rejected.has(hex) || state.rejected.has(prevHex)) {
          rememberRejected(state, hex)
          return yield* Effect.fail(blockError("bad-prevblk", "previous block is invalid"))
        }
        const contextFree = checkBlock(block, params, txids)
        if (Either.isLeft(contextFree)) {
          if (!contextFree.left.corruptionPossible && known === undefined) rememberRejected(state, hex)
          return yield* Effect.fail(contextFree.left)
        }
        const parent = state.tree.get(prevHex)
        if (parent === undefined) {
          addOrphan(state, { hex, prevHex, bytes })
          return ["orphan", hex] as const
        }
        if (parent.status === "invalid") {
          rememberRejected(state, hex)
          return yield* Effect.fail(blockError("bad-prevblk", "previous block is invalid"))
        }
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const ctx = headerContext(state, parent, now)
        const node =
          known ??
          addNode(
            state,
            {
              hash,
              header: block.header,
              height: ctx.height as Height,
              chainwork: parent.chainwork + blockWork(block.header.bits),
              status: "header",
            },
            parent,
          )
        const contextual = Either.gen(function* () {
          yield* contextualCheckBlockHeader(block.header, ctx)
          yield* contextualCheckBlock(block, ctx.height, ctx.medianTimePast)
        })
        if (Either.isLeft(contextual)) {
          // A too-new block may become valid later: refuse it but remember nothing.
          if (contextual.left.reason === "time-too-new") {
            if (known === undefined) forgetNode(state, node)
          } else {
            yield* markInvalid(state, node, contextual.left)
          }
          return yield* Effect.fail(contextual.left)
        }
        yield* store.putBlock(hash, bytes).pipe(Effect.orDie)
        state.recent.set(hex, decoded)
        if (state.recent.size > MAX_RECENT) state.recent.delete(state.recent.keys().next().value!)
        node.status = "data"
        yield* store.putIndex([entryOf(node)]).pipe(Effect.orDie)
        setChainData(state, node)
        const failure = yield* activateBestChain(state).pipe(Effect.orDie)
        if (failure !== undefined && failure.node === node) return yield* Effect.fail(failure.error)
        if (statusOf(node) === "invalid") return yield* Effect.fail(node.invalidReason!)
        return [state.active[node.height] === node ? "active" : "side", hex] as const
      })

    const rememberRejected = (state: State, hex: string) => remember(state.rejected, hex, MAX_REJECTED)

    const forgetNode = (state: State, node: Node) => {
      state.tree.delete(node.hex)
      const siblings = node.parent?.children
      if (siblings !== undefined) siblings.splice(siblings.indexOf(node), 1)
      if (state.bestHeader === node) recomputeBestHeader(state)
    }

    /** addOrphan keeps a block whose parent is unknown, evicting the oldest beyond the bounds. */
    const addOrphan = (state: State, orphan: Orphan) => {
      if (orphan.bytes.length > config.maxOrphanBytes) return
      state.orphans.set(orphan.hex, orphan)
      state.orphanBytes += orphan.bytes.length
      for (const [hex, o] of state.orphans) {
        if (state.orphans.size <= config.maxOrphanBlocks && state.orphanBytes <= config.maxOrphanBytes) break
        state.orphans.delete(hex)
        state.orphanBytes -= o.bytes.length
      }
    }

    /** resolveOrphans accepts orphans whose parent just arrived, recursively (an explicit work list). */
    const resolveOrphans = (state: State, parentHex: string) =>
      Effect.gen(function* () {
        const work = [parentHex]
        while (work.length > 0) {
          const prev = work.pop()!
          for (const o of [...state.orphans.values()]) {
            if (o.prevHex !== prev) continue
            state.orphans.delete(o.hex)
            state.orphanBytes -= o.bytes.length
            const r = yield* Effect.either(acceptBlock(state, o.bytes))
            if (Either.isRight(r)) work.push(o.hex)
          }
        }
      })

    /**
     * acceptHeaders checks and adds a batch of headers in order (Core's AcceptBlockHeader, in Core's
     * order of checks), persists the new ones in one putIndex, then reports the first failure if any.
     * A header failing a rule is not remembered in the tree (as Core): its sender is banned or asked
     * again, and a too-new header may become valid later. An empty batch says nothing about the
     * sender's chain: its `last` is the active tip, which offers nothing to fetch.
     */
    const acceptHeaders = (
      state: State,
      headers: ReadonlyArray<BlockHeader>,
    ): Effect.Effect<HeadersResult, RuleError> =>
      Effect.gen(function* () {
        if (headers.length === 0) return { last: tipOf(activeTip(state)), added: 0 }
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const added: Array<Node> = []
        const outcome = ((): Either.Either<Node, RuleError> => {
          let last: Node | undefined
          for (let i = 0; i < headers.length; i++) {
            const header = headers[i]!
            if (last !== undefined && !bytesEqual(header.prev, last.hash)) {
              return Either.left(
                headerError("bad-headers-chain", `header ${i} does not follow header ${i - 1}`, 100),
              )
            }
            const hash = headerHash(header)
            const hex = toHex(hash)
            const known = state.tree.get(hex)
            if (known !== undefined) {
              if (known.status === "invalid") {
                return Either.left(headerError("duplicate-invalid", known.invalidReason?.message ?? "", 100))
              }
              last = known
              continue
            }
            if (state.rejected.has(hex)) return Either.left(headerError("duplicate-invalid", "", 100))
            const pow = checkBlockHeader(header, hash, params)
            if (Either.isLeft(pow)) return Either.left(pow.left)
            const prevHex = toHex(header.prev)
            const parent = state.tree.get(prevHex)
            if (parent === undefined && !state.rejected.has(prevHex)) {
              return Either.left(headerError("prev-blk-not-found", "previous header unknown", 0))
            }
            if (parent === undefined || parent.status === "invalid") {
              rememberRejected(state, hex)
              return Either.left(headerError("bad-prevblk", "previous block is invalid", 100))
            }
            const ctx = headerContext(state, parent, now)
            const contextual = contextualCheckBlockHeader(header, ctx)
            if (Either.isLeft(contextual)) return Either.left(contextual.left)
            last = addNode(
              state,
              {
                hash,
                header,
                height: ctx.height as Height,
                chainwork: parent.chainwork + blockWork(header.bits),
                status: "header",
              },
              parent,
            )
            added.push(last)
          }
          return Either.right(last!)
        })()
        if (added.length > 0) yield* store.putIndex(added.map(entryOf)).pipe(Effect.orDie)
        if (Either.isLeft(outcome)) return yield* Effect.fail(outcome.left)
        return { last: tipOf(outcome.right), added: added.length }
      })

    const reindex = (state: State) =>
      Effect.gen(function* () {
        yield* store.resetChainState
        yield* store.commit({
          tip: { hash: params.genesisHash, height: 0 as Height, utxoCommitment: encodeMuHash(MUHASH_EMPTY) },
          delta: { spent: [], created: [] },
        })
        state.active.length = 1
        state.muhash = MUHASH_EMPTY
        state.candidates.clear()
        for (const node of state.tree.values()) {
          if (node.status === "valid") node.status = "data"
        }
        state.active[0]!.status = "valid"
        for (const node of [...state.tree.values()].sort((a, b) => a.height - b.height)) {
          node.chainData =
            (node.status === "data" || node.status === "valid") &&
            (node.parent === undefined || node.parent.chainData)
          if (node.chainData && node.height > 0) state.candidates.add(node)
        }
        yield* Effect.logInfo(`reindex: rebuilding the UTXO set from ${state.candidates.size} stored blocks`)
        yield* activateBestChain(state)
        recomputeBestHeader(state)
        const tip = activeTip(state)
        yield* Effect.logInfo(`reindex: done at height ${tip.height}`)
        return { height: tip.height }
      })

    // -- UTXO snapshots -------------------------------------------------------------------------------

    const utxoDumpOf = (state: State) =>
      Effect.gen(function* () {
        const coins: Array<SnapshotEntry> = []
        yield* store.forEachCoin((key, coin) => {
          coins.push({ txid: fromHex(key.slice(0, 64))!, index: Number(key.slice(65)), coin })
        })
        const tip = activeTip(state)
        return {
          hash: tip.hash,
          height: tip.height,
          txoutsetHash: muhashFinalize(state.muhash),
          headers: state.active.map((n) => n.header),
          coins,
        }
      })

    /** headerPathTo is the headers from genesis to `hash` in the tree, or undefined when it is unknown. */
    const headerPathTo = (state: State, hash: BlockHash): ReadonlyArray<BlockHeader> | undefined => {
      const node = state.tree.get(toHex(hash))
      if (node === undefined) return undefined
      const out: Array<BlockHeader> = []
      for (let n: Node | undefined = node; n !== undefined; n = n.parent) out.push(n.header)
      return out.reverse()
    }

    const loadSnapshotInto = (state: State, source: SnapshotSource) =>
      Effect.gen(function* () {
        const { header } = source
        if (state.active.length !== 1) {
          return yield* new SnapshotError({
            reason: "not-at-genesis",
            detail: `the chain is at height ${activeTip(state).height}; a snapshot loads only into a node at genesis`,
          })
        }
        const now = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const headers = source.headers ?? headerPathTo(state, header.baseHash)
        if (headers === undefined)
          return yield* new SnapshotError({
            reason: "bad-headers",
            detail: `the base ${toHex(header.baseHash)} is not in the header tree yet`,
          })
        const checked = checkSnapshotHeaders(params, header, headers, now)
        if (Either.isLeft(checked)) return yield* checked.left
        const hashes = checked.right
        const loadingRow = new Uint8Array(64)
        loadingRow.set(header.snapshotId, 0)
        loadingRow.set(header.txoutsetHash, 32)
        yield* snapshotTable.put("loading", loadingRow)
        const loaded = yield* Effect.gen(function* () {
          let muhash = MUHASH_EMPTY
          let previous: SnapshotEntry | undefined
          let count = 0
          for (let i = 0; i < header.chunkHashes.length; i++) {
            const bytes = yield* source.chunk(i)
            const entries = checkChunk(header, i, bytes, previous)
            if (Either.isLeft(entries)) return yield* entries.left
            muhash = muhashAdd(muhash, entries.right.map(entryElement))
            yield* store.putCoins(entries.right.map((e) => [outpointKey(e.txid, e.index), e.coin] as const))
            previous = entries.right[entries.right.length - 1] ?? previous
            count += entries.right.length
            if ((i + 1) % 100 === 0)
              yield* Effect.logInfo(`snapshot: ${count} of ${header.coinCount} coins loaded`)
          }
          if (count !== header.coinCount)
            return yield* new SnapshotError({
              reason: "bad-chunk",
              detail: `${count} coins loaded, the header says ${header.coinCount}`,
            })
          if (!bytesEqual(muhashFinalize(muhash), header.txoutsetHash))
            return yield* new SnapshotError({
              reason: "bad-txoutset-hash",
              detail: `the loaded coins hash to ${toHex(muhashFinalize(muhash))}, the header says ${toHex(header.txoutsetHash)}`,
            })
          return muhash
        }).pipe(
          Effect.tapError((e) =>
            Effect.logWarning(`snapshot: load refused (${e.message}); wiping back to genesis`).pipe(
              Effect.zipRight(wipeToGenesis.pipe(Effect.orDie)),
            ),
          ),
          Effect.onInterrupt(() => wipeToGenesis.pipe(Effect.orDie)),
        )
        // The set checks out: the header chain joins the tree as the active chain (assumed valid).
        const path: Array<Node> = [state.active[0]!]
        for (let h = 1; h < headers.length; h++) {
          const { hash, chainwork } = hashes[h]!
          const node =
            state.tree.get(toHex(hash)) ??
            addNode(
              state,
              { hash, header: headers[h]!, height: h as Height, chainwork, status: "valid" },
              path[h - 1],
            )
          node.status = "valid"
          node.chainData = true
          path.push(node)
        }
        const base = path[path.length - 1]!
        yield* store.commit({
          tip: { hash: base.hash, height: base.height as Height, utxoCommitment: encodeMuHash(loaded) },
          delta: { spent: [], created: [] },
          index: path.slice(1).map(entryOf),
        })
        const snapshot: SnapshotState = {
          snapshotId: header.snapshotId,
          baseHash: base.hash,
          baseHeight: base.height,
          txoutsetHash: header.txoutsetHash,
          status: "assumed",
        }
        yield* snapshotTable.write([
          ["base", encodeSnapshotState(snapshot)],
          ["loading", undefined],
        ])
        state.active.length = 0
        state.active.push(...path)
        state.muhash = loaded
        state.snapshotBase = base.height
        state.candidates.clear()
        for (const child of base.children) setChainData(state, child)
        yield* Effect.logInfo(
          `snapshot: loaded ${header.coinCount} coins at height ${base.height} (${base.hex}); history below it is assumed valid`,
        )
        yield* activateBestChain(state)
        const tip = activeTip(state)
        yield* publishTip(state)
        yield* PubSub.publish(events, ChainEvent.TipChanged({ hash: tip.hash, height: tip.height }))
        return snapshot
      })

    // -- the actor ------------------------------------------------------------------------------------

    const initial = Effect.gen(function* () {
      const state = yield* load.pipe(Effect.orDie)
      yield* publishTip(state)
      return state
    })

    const handle = (state: State, cmd: Command): Effect.Effect<State> => {
      switch (cmd._tag) {
        case "Submit":
          if (state.halted !== "")
            return Deferred.fail(cmd.reply, blockError("snapshot-invalid", state.halted, 0)).pipe(
              Effect.as(state),
            )
          return Effect.gen(function* () {
            const r = yield* Effect.either(acceptBlock(state, cmd.bytes))
            if (Either.isRight(r) && (r.right[0] === "active" || r.right[0] === "side")) {
              yield* resolveOrphans(state, r.right[1])
            }
            yield* Deferred.complete(
              cmd.reply,
              Either.map(r, ([result]) => result),
            )
            return state
          })
        case "HashAt":
          return Deferred.succeed(cmd.reply, Option.fromNullable(state.active[cmd.height]?.hash)).pipe(
            Effect.as(state),
          )
        case "Entry": {
          const n = state.tree.get(toHex(cmd.hash))
          const value =
            n === undefined
              ? Option.none()
              : Option.some({ ...entryOf(n), active: state.active[n.height] === n })
          return Deferred.succeed(cmd.reply, value).pipe(Effect.as(state))
        }
        case "Commitment": {
          const tip = activeTip(state)
          const value = { hash: tip.hash, height: tip.height, commitment: muhashFinalize(state.muhash) }
          return Deferred.succeed(cmd.reply, value).pipe(Effect.as(state))
        }
        case "Reindex":
          return reindex(state).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.zipRight(publishTip(state)),
            Effect.as(state),
          )
        case "OrphanCount":
          return Deferred.succeed(cmd.reply, state.orphans.size).pipe(Effect.as(state))
        case "SubmitHeaders":
          return acceptHeaders(state, cmd.headers).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.as(state),
          )
        case "Locator":
          return Deferred.succeed(cmd.reply, locatorOf(state)).pipe(Effect.as(state))
        case "HeadersAfter":
          return Deferred.succeed(cmd.reply, headersAfterOf(state, cmd.locator, cmd.stop, cmd.max)).pipe(
            Effect.as(state),
          )
        case "BestHeader":
          return Deferred.succeed(cmd.reply, tipOf(bestHeaderOf(state))).pipe(Effect.as(state))
        case "BlocksToFetch":
          return Deferred.succeed(
            cmd.reply,
            state.holdBlocks || state.halted !== "" ? [] : blocksToFetchOf(state, cmd.target, cmd),
          ).pipe(Effect.as(state))
        case "SyncStatus":
          return Effect.gen(function* () {
            yield* updateInitialBlockDownload(state)
            const tip = activeTip(state)
            const best = bestHeaderOf(state)
            yield* Deferred.succeed(cmd.reply, {
              headers: best.height,
              initialBlockDownload,
              verificationProgress: best.height === 0 ? 1 : Math.min(1, tip.height / best.height),
              warnings: state.halted,
            })
            return state
          })
        case "UtxoDump":
          return utxoDumpOf(state).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.as(state),
          )
        case "SettleSnapshot":
          return settleSnapshotOf(state, cmd.verdict, cmd.detail).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.as(state),
          )
        case "HoldBlocks":
          state.holdBlocks = cmd.hold
          return Deferred.succeed(cmd.reply, undefined).pipe(Effect.as(state))
        case "LoadSnapshot":
          return loadSnapshotInto(state, cmd.source).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Deferred.done(cmd.reply, exit)),
            Effect.as(state),
          )
      }
    }

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "chain",
      capacity: 1024,
      initial,
      handle,
    })

    const service: ChainServiceApi = {
      submitBlock: (bytes) => Actor.ask(actor, (reply): Command => ({ _tag: "Submit", bytes, reply })),
      tip: Ref.get(tipRef).pipe(Effect.map((t) => t!)),
      hashAt: (height) => Actor.ask(actor, (reply): Command => ({ _tag: "HashAt", height, reply })),
      entry: (hash) => Actor.ask(actor, (reply): Command => ({ _tag: "Entry", hash, reply })),
      block: (hash) => store.getBlock(hash),
      utxoCommitment: Actor.ask(actor, (reply): Command => ({ _tag: "Commitment", reply })),
      reindex: Actor.ask(actor, (reply): Command => ({ _tag: "Reindex", reply })),
      events,
      orphanCount: Actor.ask(actor, (reply): Command => ({ _tag: "OrphanCount", reply })),
      submitHeaders: (headers) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "SubmitHeaders", headers, reply })),
      locator: Actor.ask(actor, (reply): Command => ({ _tag: "Locator", reply })),
      headersAfter: (locator, stop, max) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "HeadersAfter", locator, stop, max, reply })),
      bestHeader: Actor.ask(actor, (reply): Command => ({ _tag: "BestHeader", reply })),
      blocksToFetch: (target, { max, window, exclude }) =>
        Actor.ask(
          actor,
          (reply): Command => ({ _tag: "BlocksToFetch", target, max, window, exclude, reply }),
        ),
      syncStatus: Actor.ask(actor, (reply): Command => ({ _tag: "SyncStatus", reply })),
      utxoDump: Actor.ask(actor, (reply): Command => ({ _tag: "UtxoDump", reply })),
      loadSnapshot: (source) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "LoadSnapshot", source, reply })),
      snapshot: readSnapshotState,
      holdBlocks: (hold) => Actor.ask(actor, (reply): Command => ({ _tag: "HoldBlocks", hold, reply })),
      settleSnapshot: (verdict, detail) =>
        Actor.ask(actor, (reply): Command => ({ _tag: "SettleSnapshot", verdict, detail, reply })),
    }
    return service
  })

/** layer provides the Chain actor; it needs a ChainStore and a SigVerifier. */
export const layer = (config: ChainConfig): Layer.Layer<Chain, never, ChainStore | SigVerifier> =>
  Layer.scoped(Chain, make(config))
