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
import { blockError, type RuleError } from "../consensus/errors.js"
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
import { outpointKey, type UtxoView } from "../consensus/utxo.js"
import { ChainStore, type StorageError } from "../layers/ChainStore.js"
import { SigVerifier, type SigVerifierService } from "../layers/SigVerifier.js"
import { type Block, type BlockHeader, encodeBlock } from "../schema/block.js"
import type { BlockStatus, ChainTip, IndexEntry } from "../schema/chain.js"
import { type Coin, decodeUndo, encodeUndo } from "../schema/coin.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { bytesEqual, toHex } from "../schema/hex.js"
import type { BlockHash, Height, TxId } from "../schema/primitives.js"
import * as Actor from "./Actor.js"

/** PROGRESS_EVERY: connecting a long branch (reindex, a big import) logs a progress line this often. */
const PROGRESS_EVERY = 1000

/** MAX_RECENT bounds the decoded blocks kept between accepting and connecting them. */
const MAX_RECENT = 16

/** MAX_REJECTED bounds the memory of refused block hashes. */
const MAX_REJECTED = 10_000

/** ChainConfig: the network and the orphan-pool bounds (policy, from config). */
export interface ChainConfig {
  readonly params: NetworkParams
  /** blocks whose parent is unknown, kept until it arrives: at most this many… */
  readonly maxOrphanBlocks: number
  /** …and at most this many bytes in all */
  readonly maxOrphanBytes: number
}

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
   * CBlockLocator: ten steps of 1, then doubling; at most 101 hashes, the last the genesis hash).
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
  }>
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

/** statusOf reads a node's status afresh (it may change across an activation). */
const statusOf = (n: Node): BlockStatus => n.status

const entryOf = (n: Node): IndexEntry => ({
  hash: n.hash,
  header: n.header,
  height: n.height as Height,
  chainwork: n.chainwork,
  status: n.status,
})

/** ancestorAt walks from `n` to its ancestor at `height` (the active chain answers directly). */
const ancestorAt = (state: State, n: Node, height: number): Node | undefined => {
  if (state.active[n.height] === n) return state.active[height]
  let cur: Node | undefined = n
  while (cur !== undefined && cur.height > height) cur = cur.parent
  return cur
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

    const publishTip = (state: State) => {
      const tip = state.active[state.active.length - 1]!
      return Ref.set(tipRef, {
        hash: tip.hash,
        height: tip.height,
        chainwork: tip.chainwork,
        header: tip.header,
        medianTimePast: mtpOf(tip),
      }).pipe(Effect.zipRight(Metric.set(chainHeight, tip.height)))
    }

    // -- loading ------------------------------------------------------------------------------------

    const addNode = (state: State, entry: IndexEntry, parent: Node | undefined): Node => {
      const node: Node = {
        hash: entry.hash,
        hex: toHex(entry.hash),
        header: entry.header,
        height: entry.height,
        chainwork: entry.chainwork,
        parent,
        children: [],
        seq: state.seq++,
        status: entry.status,
        chainData: false,
      }
      parent?.children.push(node)
      state.tree.set(node.hex, node)
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
      // chainData flags and candidates, parents before children (entries are sorted by height)
      for (const node of state.tree.values()) {
        node.chainData =
          (node.status === "data" || node.status === "valid") &&
          (node.parent === undefined || node.parent.chainData)
        if (node.chainData && node.chainwork > tipNode.chainwork) state.candidates.add(node)
      }
      return state
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
        const decoded: DecodedBlock = yield* decodeBlockWithTxids(bytes)
        const { block, txids } = decoded
        const hash = headerHash(block.header)
        const hex = toHex(hash)
        const known = state.tree.get(hex)
        if (known !== undefined) {
          if (known.status === "invalid") {
            return yield* Effect.fail(
              blockError("duplicate-invalid", known.invalidReason?.message ?? "", 100),
            )
          }
          if (known.status === "data" || known.status === "valid") return ["duplicate", hex] as const
        }
        if (state.orphans.has(hex)) return ["duplicate", hex] as const
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

    const rememberRejected = (state: State, hex: string) => {
      state.rejected.add(hex)
      if (state.rejected.size > MAX_REJECTED) state.rejected.delete(state.rejected.values().next().value!)
    }

    const forgetNode = (state: State, node: Node) => {
      state.tree.delete(node.hex)
      const siblings = node.parent?.children
      if (siblings !== undefined) siblings.splice(siblings.indexOf(node), 1)
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
        const tip = activeTip(state)
        yield* Effect.logInfo(`reindex: done at height ${tip.height}`)
        return { height: tip.height }
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
      submitHeaders: () => Effect.dieMessage("Chain.submitHeaders: not implemented yet"),
      locator: Effect.dieMessage("Chain.locator: not implemented yet"),
      headersAfter: () => Effect.dieMessage("Chain.headersAfter: not implemented yet"),
      bestHeader: Effect.dieMessage("Chain.bestHeader: not implemented yet"),
      blocksToFetch: () => Effect.dieMessage("Chain.blocksToFetch: not implemented yet"),
      syncStatus: Effect.dieMessage("Chain.syncStatus: not implemented yet"),
    }
    return service
  })

/** layer provides the Chain actor; it needs a ChainStore and a SigVerifier. */
export const layer = (config: ChainConfig): Layer.Layer<Chain, never, ChainStore | SigVerifier> =>
  Layer.scoped(Chain, make(config))
