import {
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  PubSub,
  Ref,
  type Scope,
} from "effect"
import {
  buildFilter,
  filterHash,
  filterHeader,
  keyItem,
  matchAny,
  outpointItem,
  ZERO_FILTER_HEADER,
} from "../consensus/blockFilter.js"
import { decodeBlockWithTxids, headerHash } from "../consensus/checkBlock.js"
import { merkleRoot } from "../consensus/merkle.js"
import type { NetworkParams } from "../consensus/params.js"
import { keyOf } from "../consensus/utxo.js"
import { ChainStore, type KeyedTable, type StorageError } from "../layers/ChainStore.js"
import { Keystore } from "../layers/Keystore.js"
import { type Block, encodeBlock } from "../schema/block.js"
import { decodeWith, type Reader, varintSize, Writer } from "../schema/codec.js"
import { COIN_BYTES, type Coin, decodeCoin, encodeCoin } from "../schema/coin.js"
import { bytesEqual, fromHex, toHex } from "../schema/hex.js"
import type { BlockHash, Height, TxId } from "../schema/primitives.js"
import {
  type CFHeadersMessage,
  type CFilterMessage,
  GetCFHeadersMessage,
  GetCFiltersMessage,
  GetDataMessage,
  INV_BLOCK,
  SERVICE_FILTERS,
  SERVICE_FULL,
  SERVICE_MINER,
} from "../schema/wire.js"
import * as Actor from "./Actor.js"
import { Chain, ChainEvent } from "./Chain.js"
import { KeyWindow } from "./keyWindow.js"
import type { PeerHandle, PeerId } from "./net.js"
import { Misbehavior } from "./spamPolicy.js"
import { defaultLookahead, type WalletSourceService } from "./Wallet.js"

/**
 * The LightClient actor (issue 9): a light node's view of the chain. The light node keeps headers only
 * (the Chain actor, fed by Sync in headers-only mode). This actor walks the best header chain block by
 * block and, for each, decides from a compact block filter (BIP157/158 style, src/consensus/
 * blockFilter.ts) whether the block may touch the wallet: the filter is checked against the filter
 * header chain (asked of two peers when it can, compared; a disagreement is settled by the block
 * itself and the liar banned), matched against the wallet's keys and its coins' outpoints locally —
 * no peer learns what the wallet watches — and only matching blocks are downloaded whole, checked
 * against their header (hash, merkle root) and passed on. It is the light wallet's `WalletSource`:
 * its events are BlockConnected for every block of the chain (matching ones whole, the rest without
 * transactions) and BlockDisconnected on a reorg; its coins are the wallet's own unspent outputs.
 *
 * What it keeps (ChainStore table `light`): the scanned tip, the filter header of every scanned block
 * (by hash), the wallet's coins, and for each matched block its coinbase and the transactions that
 * touched the wallet (for a reorg) — never a block body.
 */

/** LightClientConfig: the network, the wallet's lookahead, batch size and timings. */
export interface LightClientConfig {
  readonly network: NetworkParams
  /** keys watched beyond the keystore's count (the wallet's gap limit; default the wallet's) */
  readonly lookahead?: number
  /** blocks per getcfheaders / getcfilters round (BIP157 allows 1,000 filters a request) */
  readonly batch: number
  /** a request unanswered this long goes to another peer */
  readonly requestTimeout: Duration.Duration
  /** how often the best header and timeouts are looked at */
  readonly tick: Duration.Duration
}

export const defaultLightClientConfig = (network: NetworkParams): LightClientConfig => ({
  network,
  batch: 1_000,
  requestTimeout: Duration.seconds(20),
  tick: Duration.seconds(1),
})

/** LightStatus is what the light RPC reports. */
export interface LightStatus {
  /** the scanned tip: every block up to it was checked against the wallet's filters */
  readonly height: number
  readonly hash: BlockHash
  /** peers serving filters / serving blocks */
  readonly filterPeers: number
  readonly blockPeers: number
}

/** LightClientService: the wallet's source, the peers' entry points, and the status. */
export interface LightClientService extends WalletSourceService {
  readonly peerConnected: (peer: PeerHandle) => Effect.Effect<void>
  readonly peerDisconnected: (id: PeerId) => Effect.Effect<void>
  /** receive takes a peer's cfheaders and cfilter answers */
  readonly receive: (peer: PeerHandle, msg: CFHeadersMessage | CFilterMessage) => Effect.Effect<void>
  /** receiveBlock takes a block this client asked for (a `block` frame's payload) */
  readonly receiveBlock: (peer: PeerHandle, payload: Uint8Array) => Effect.Effect<void>
  /** hashAt is the scanned chain's block at `height` */
  readonly hashAt: (height: number) => Effect.Effect<Option.Option<BlockHash>>
  readonly status: Effect.Effect<LightStatus>
}

export class LightClient extends Context.Tag("fibercoin/LightClient")<LightClient, LightClientService>() {}

// ---------------------------------------------------------------------------------------------------
// State, owned by the actor's fiber (the coin map is read by the wallet's fiber through `coin`).

/** LIGHT_TABLE is the ChainStore table the client persists in. */
export const LIGHT_TABLE = "light"
const TIP_ROW = "tip"
const fhRow = (hex: string) => `fh:${hex}`
const coinRow = (key: string) => `coin:${key}`
const blockRow = (hex: string) => `blk:${hex}`

interface Peer {
  readonly handle: PeerHandle
  readonly filters: boolean
  readonly blocks: boolean
}

/** Batch is one round of the scan: heights [start, start + hashes.length) of the best chain. */
interface Batch {
  readonly start: number
  readonly hashes: ReadonlyArray<BlockHash>
  readonly stopHex: string
  /** peers asked for the filter headers and what each answered (filter hashes, in order) */
  readonly asked: Set<PeerId>
  readonly answers: Map<PeerId, ReadonlyArray<Uint8Array>>
  /** the agreed filter hashes once the headers stage is over */
  agreed: ReadonlyArray<Uint8Array> | undefined
  /** the peer asked for the filters, and what came in (by index) */
  filterPeer: PeerId | undefined
  readonly filters: Array<Uint8Array | undefined>
  /** a block asked for: a match being fetched, or a dispute being settled */
  block: { readonly index: number; readonly hex: string; readonly peer: PeerId } | undefined
  /** when the outstanding request was sent (Clock ms) */
  sentAt: number
}

interface State {
  /** the scanned chain: hashes by height, and each block's filter header */
  readonly chain: Array<BlockHash>
  readonly filterHeaders: Array<Uint8Array>
  /** hex hashes of scanned blocks that touched the wallet (their transactions are stored) */
  readonly matched: Set<string>
  /** the wallet's keys, watched as the Wallet does (same keystore, same lookahead) */
  readonly window: KeyWindow
  readonly peers: Map<PeerId, Peer>
  batch: Batch | undefined
  /**
   * the best header chain above `fork` as last walked (hashes from fork + 1 up to the header
   * `bestHex`): reused while the best header stays, so a long scan walks the Chain's index once
   */
  ahead:
    | { readonly bestHex: string; readonly fork: number; readonly hashes: ReadonlyArray<BlockHash> }
    | undefined
}

type Command = Data.TaggedEnum<{
  Connected: { readonly peer: PeerHandle }
  Disconnected: { readonly id: PeerId }
  Headers: { readonly peer: PeerHandle; readonly msg: CFHeadersMessage }
  Filter: { readonly peer: PeerHandle; readonly msg: CFilterMessage }
  BlockIn: { readonly peer: PeerHandle; readonly payload: Uint8Array }
  HashAt: { readonly height: number; readonly reply: Deferred.Deferred<Option.Option<BlockHash>> }
  Status: { readonly reply: Deferred.Deferred<LightStatus> }
  // biome-ignore lint/complexity/noBannedTypes: Data.TaggedEnum spells a case without fields `{}`
  Tick: {}
}>
const Command = Data.taggedEnum<Command>()

/** Stored is what a matched block leaves behind: its coinbase and wallet transactions, and the coins it spent. */
interface Stored {
  readonly block: Block
  readonly txids: ReadonlyArray<TxId>
  readonly spent: ReadonlyArray<readonly [string, Coin]>
}

/** a stored row: varbytes block (coinbase and wallet transactions), then count ‖ (outpoint key, coin)… */
const MAX_STORED_BYTES = 8_000_000

const encodeStored = (s: Stored): Uint8Array => {
  const block = encodeBlock(s.block)
  const spent = s.spent.map(([key, coin]) => [new TextEncoder().encode(key), encodeCoin(coin)] as const)
  const w = new Writer(
    varintSize(block.length) +
      block.length +
      varintSize(spent.length) +
      spent.reduce((n, [k, c]) => n + varintSize(k.length) + k.length + c.length, 0),
  )
  w.varBytes(block)
  w.varint(spent.length)
  for (const [k, c] of spent) {
    w.varBytes(k)
    w.raw(c)
  }
  return w.finish()
}

const readStored = (r: Reader) => {
  const block = r.varBytes("stored.block", MAX_STORED_BYTES)
  const n = r.count("stored.spent", 1_000_000, 1 + COIN_BYTES)
  const spent: Array<readonly [string, Uint8Array]> = []
  for (let i = 0; i < n; i++) {
    const key = new TextDecoder().decode(r.varBytes("stored.key", 80))
    spent.push([key, r.bytesN(COIN_BYTES, "stored.coin")])
  }
  return { block, spent }
}

/** decodeStored reads our own row back; undefined for a corrupt one (then the reorg restores less). */
const decodeStored = (bytes: Uint8Array): Stored | undefined => {
  const row = decodeWith("stored", MAX_STORED_BYTES, readStored)(bytes)
  if (Either.isLeft(row)) return undefined
  const decoded = decodeBlockWithTxids(row.right.block)
  if (Either.isLeft(decoded)) return undefined
  const spent: Array<readonly [string, Coin]> = []
  for (const [key, raw] of row.right.spent) {
    const coin = decodeCoin(raw)
    if (Either.isLeft(coin)) return undefined
    spent.push([key, coin.right])
  }
  return { block: decoded.right.block, txids: decoded.right.txids, spent }
}

// ---------------------------------------------------------------------------------------------------

/**
 * make starts the LightClient actor over the Chain (headers), the Keystore (the wallet's keys) and
 * ChainStore's `light` table.
 */
export const make = (
  config: LightClientConfig,
): Effect.Effect<LightClientService, StorageError, Chain | Keystore | ChainStore | Scope.Scope> =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const keystore = yield* Keystore
    const table: KeyedTable = (yield* ChainStore).table(LIGHT_TABLE)
    const lookahead = config.lookahead ?? defaultLookahead
    const timeoutMs = Duration.toMillis(config.requestTimeout)
    const events = yield* PubSub.unbounded<ChainEvent>()
    const genesis = (yield* chain.hashAt(0)).pipe(Option.getOrThrow)
    /** the wallet's unspent coins, by outpoint key: written by the actor, read by the wallet (`coin`) */
    const coins = new Map<string, Coin>()
    const tipRef = yield* Ref.make({ hash: genesis, height: 0 })

    // -- loading ---------------------------------------------------------------------------------

    const rows = new Map(yield* table.entries)
    for (const [key, value] of rows) {
      if (!key.startsWith("coin:")) continue
      const coin = decodeCoin(value)
      if (Either.isRight(coin)) coins.set(key.slice(5), coin.right)
    }
    /** the scanned chain from storage: the tip row, then back through the Chain's index to genesis */
    const loadChain = Effect.gen(function* () {
      const tipRow = rows.get(TIP_ROW)
      const path: Array<BlockHash> = [genesis]
      // the genesis block's filter header, from the params' genesis block (BIP157: over a zero header)
      const params = config.network
      const genesisHeader = filterHeader(
        filterHash(buildFilter(params.genesis, params.genesisHash)),
        ZERO_FILTER_HEADER,
      )
      const headers: Array<Uint8Array> = [genesisHeader]
      if (tipRow === undefined || tipRow.length !== 32) return { path, headers }
      const back: Array<BlockHash> = []
      let cur = tipRow as BlockHash
      for (;;) {
        const entry = yield* chain.entry(cur)
        if (Option.isNone(entry) || entry.value.height === 0) break
        back.push(cur)
        cur = entry.value.header.prev as BlockHash
      }
      for (const hash of back.reverse()) {
        const fh = rows.get(fhRow(toHex(hash)))
        if (fh === undefined) break
        path.push(hash)
        headers.push(fh)
      }
      return { path, headers }
    })

    // -- keys and the watch list ---------------------------------------------------------------

    /** watchItems: every watched key and every coin's outpoint, as the filters hash them */
    const watchItems = (state: State): Array<Uint8Array> => [
      ...[...state.window.keys.keys()].map((hex) => keyItem(fromHex(hex)!)),
      ...[...coins.keys()].map((key) => {
        const [txid, n] = key.split(":")
        return outpointItem(fromHex(txid!)!, Number(n))
      }),
    ]

    // -- peers -----------------------------------------------------------------------------------

    const now = Clock.currentTimeMillis
    /**
     * pick finds a peer that serves `want` and has the block at `height` (its headers reached it: full
     * nodes announce only blocks they connected), so no request names a block the peer lacks, which
     * BIP157 servers punish; none: wait for the next tick
     */
    const pick = (
      state: State,
      want: "filters" | "blocks",
      height: number,
      avoid: ReadonlySet<PeerId> = new Set(),
    ) =>
      Effect.gen(function* () {
        for (const p of state.peers.values()) {
          if (!p[want] || avoid.has(p.handle.info.id)) continue
          if ((yield* p.handle.stats).syncedHeaders >= height) return p
        }
        return undefined
      })

    /** stopHeight is the height of the batch's last block. */
    const stopHeight = (batch: Batch) => batch.start + batch.hashes.length - 1

    const liar = (state: State, id: PeerId, what: string) =>
      Effect.gen(function* () {
        const p = state.peers.get(id)
        state.peers.delete(id)
        if (p === undefined) return
        yield* Effect.logWarning(`light: peer ${id} served a wrong ${what}: banned`)
        yield* p.handle.misbehave(Misbehavior.Lied({ what }))
        yield* p.handle.disconnect(`served a wrong ${what}`)
      })

    // -- the scan --------------------------------------------------------------------------------

    const tipOf = (state: State) => state.chain.length - 1

    /**
     * follow lines the scanned chain up with the best header chain: blocks above the fork point are
     * disconnected (newest first), and a new batch starts from there.
     */
    const follow = (state: State) =>
      Effect.gen(function* () {
        const best = yield* chain.bestHeader
        const bestHex = toHex(best.hash)
        const tip = tipOf(state)
        const ahead = state.ahead
        let height: number
        let path: Array<BlockHash>
        if (
          ahead !== undefined &&
          ahead.bestHex === bestHex &&
          ahead.fork <= tip &&
          tip <= ahead.fork + ahead.hashes.length &&
          (tip === ahead.fork || bytesEqual(ahead.hashes[tip - ahead.fork - 1]!, state.chain[tip]!))
        ) {
          height = tip
          path = ahead.hashes.slice(tip - ahead.fork).reverse()
        } else {
          // walk back from the best header to a block on the scanned chain
          path = []
          let cur = best.hash
          height = best.height
          while (height > tipOf(state) || !bytesEqual(state.chain[height]!, cur)) {
            path.push(cur)
            const entry = yield* chain.entry(cur)
            if (Option.isNone(entry)) return
            cur = entry.value.header.prev as BlockHash
            height--
          }
          state.ahead = { bestHex, fork: height, hashes: [...path].reverse() }
        }
        if (tipOf(state) > height) {
          // a reorg below the scanned tip: whatever batch was running was on the old branch
          state.batch = undefined
          while (tipOf(state) > height) yield* disconnectTip(state)
        }
        if (state.batch !== undefined) {
          // the running batch goes on while its last block is still ahead on the best chain
          const last = state.batch.hashes[state.batch.hashes.length - 1]!
          if (path.some((h) => bytesEqual(h, last))) return
          state.batch = undefined
        }
        if (path.length === 0) return
        const hashes = path.reverse().slice(0, config.batch)
        state.batch = {
          start: height + 1,
          hashes,
          stopHex: toHex(hashes[hashes.length - 1]!),
          asked: new Set(),
          answers: new Map(),
          agreed: undefined,
          filterPeer: undefined,
          filters: hashes.map(() => undefined),
          block: undefined,
          sentAt: 0,
        }
        yield* askHeaders(state)
      })

    /** askHeaders asks up to two filter peers for the batch's filter headers. */
    const askHeaders = (state: State) =>
      Effect.gen(function* () {
        const batch = state.batch!
        const stopHash = batch.hashes[batch.hashes.length - 1]!
        while (batch.asked.size < 2) {
          const p = yield* pick(state, "filters", stopHeight(batch), batch.asked)
          if (p === undefined) break
          batch.asked.add(p.handle.info.id)
          yield* p.handle.send(new GetCFHeadersMessage({ filterType: 0, startHeight: batch.start, stopHash }))
        }
        batch.sentAt = yield* now
      })

    const onHeaders = (state: State, peer: PeerHandle, msg: CFHeadersMessage) =>
      Effect.gen(function* () {
        const batch = state.batch
        const id = peer.info.id
        if (batch === undefined || batch.agreed !== undefined || !batch.asked.has(id)) return
        if (toHex(msg.stopHash) !== batch.stopHex) return
        if (msg.filterHashes.length !== batch.hashes.length)
          return yield* liar(state, id, "filter header range")
        // the chain of filter headers must continue ours
        if (!bytesEqual(msg.previousFilterHeader, state.filterHeaders[batch.start - 1]!))
          return yield* liar(state, id, "filter header chain")
        batch.answers.set(id, msg.filterHashes)
        yield* settleHeaders(state)
      })

    /**
     * settleHeaders: with every asked peer's answer in (or one answer and no second peer), agree on the
     * filter hashes; two that differ are settled by the first block where they do.
     */
    const settleHeaders = (state: State) =>
      Effect.gen(function* () {
        const batch = state.batch!
        const live = [...batch.asked].filter((id) => state.peers.has(id))
        if (live.some((id) => !batch.answers.has(id)) || batch.answers.size === 0) return
        const answers = [...batch.answers.values()]
        const first = answers[0]!
        const differs = answers.length > 1 ? first.findIndex((h, i) => !bytesEqual(h, answers[1]![i]!)) : -1
        if (differs < 0) {
          batch.agreed = first
          return yield* askFilters(state)
        }
        // a dispute: fetch the block where they differ and compute its filter ourselves
        yield* askBlock(state, differs)
      })

    const askFilters = (state: State) =>
      Effect.gen(function* () {
        const batch = state.batch!
        const avoid = new Set<PeerId>(batch.filterPeer === undefined ? [] : [batch.filterPeer])
        const p =
          (yield* pick(state, "filters", stopHeight(batch), avoid)) ??
          (yield* pick(state, "filters", stopHeight(batch)))
        if (p === undefined) return
        batch.filterPeer = p.handle.info.id
        const stopHash = batch.hashes[batch.hashes.length - 1]!
        yield* p.handle.send(new GetCFiltersMessage({ filterType: 0, startHeight: batch.start, stopHash }))
        batch.sentAt = yield* now
      })

    const askBlock = (state: State, index: number) =>
      Effect.gen(function* () {
        const batch = state.batch!
        const hash = batch.hashes[index]!
        const p = yield* pick(state, "blocks", batch.start + index)
        // no peer has it yet: noted with no peer (-1), so the next late check asks again
        batch.block = { index, hex: toHex(hash), peer: p?.handle.info.id ?? -1 }
        batch.sentAt = p === undefined ? 0 : yield* now
        if (p !== undefined) yield* p.handle.send(new GetDataMessage({ items: [{ type: INV_BLOCK, hash }] }))
      })

    const onFilter = (state: State, peer: PeerHandle, msg: CFilterMessage) =>
      Effect.gen(function* () {
        const batch = state.batch
        if (batch === undefined || batch.agreed === undefined || batch.filterPeer !== peer.info.id) return
        const index = batch.hashes.findIndex((h) => bytesEqual(h, msg.blockHash))
        if (index < 0 || batch.filters[index] !== undefined) return
        if (!bytesEqual(filterHash(msg.filter), batch.agreed[index]!))
          return yield* liar(state, peer.info.id, "filter")
        batch.filters[index] = msg.filter
        batch.sentAt = yield* now
        yield* advance(state)
      })

    /** advance scans the batch's filters in order until one matches (its block is fetched) or the batch ends. */
    const advance = (state: State) =>
      Effect.gen(function* () {
        for (;;) {
          const batch = state.batch
          if (batch === undefined || batch.agreed === undefined || batch.block !== undefined) return
          const index = tipOf(state) + 1 - batch.start
          if (index >= batch.hashes.length) {
            state.batch = undefined
            const best = yield* chain.bestHeader
            yield* Effect.logInfo(`light: filters checked to height ${tipOf(state)} of ${best.height}`)
            return yield* follow(state)
          }
          const filter = batch.filters[index]
          if (filter === undefined) return
          const hash = batch.hashes[index]!
          const matched = matchAny(filter, hash, watchItems(state))
          if (matched) return yield* askBlock(state, index)
          yield* connect(state, hash, batch.agreed[index]!, undefined)
        }
      })

    const onBlock = (state: State, peer: PeerHandle, payload: Uint8Array) =>
      Effect.gen(function* () {
        const batch = state.batch
        const wanted = batch?.block
        if (batch === undefined || wanted === undefined || wanted.peer !== peer.info.id) return
        const decoded = decodeBlockWithTxids(payload)
        if (Either.isLeft(decoded)) return yield* liar(state, peer.info.id, "block (undecodable)")
        const { block, txids } = decoded.right
        const hash = headerHash(block.header)
        if (toHex(hash) !== wanted.hex) return // not the one asked for
        const root = merkleRoot(txids)
        if (root.mutated || !bytesEqual(root.root, block.header.merkleRoot))
          return yield* liar(state, peer.info.id, "block (merkle root)")
        batch.block = undefined
        const computed = filterHash(buildFilter(block, hash))
        if (batch.agreed === undefined) {
          // settling a dispute: whoever's hash differs from the block's own filter lied
          for (const [id, hashes] of [...batch.answers]) {
            if (!bytesEqual(hashes[wanted.index]!, computed)) {
              batch.answers.delete(id)
              yield* liar(state, id, "filter header")
            }
          }
          return yield* settleHeaders(state)
        }
        // a match: the filter it matched must be the block's own
        if (!bytesEqual(computed, batch.agreed[wanted.index]!)) {
          for (const id of batch.asked) yield* liar(state, id, "filter header")
          state.batch = undefined
          return
        }
        yield* connect(state, hash, batch.agreed[wanted.index]!, { block, txids })
        yield* advance(state)
      })

    // -- connecting and disconnecting -----------------------------------------------------------

    /**
     * connect appends a scanned block: with its body (a match) the wallet's coins change and its
     * coinbase and wallet transactions are stored; without, only the tip moves. One write for all.
     */
    const connect = (
      state: State,
      hash: BlockHash,
      fHash: Uint8Array,
      body: { readonly block: Block; readonly txids: ReadonlyArray<TxId> } | undefined,
    ) =>
      Effect.gen(function* () {
        const height = tipOf(state) + 1
        const fh = filterHeader(fHash, state.filterHeaders[height - 1]!)
        const hex = toHex(hash)
        const writes: Array<readonly [string, Uint8Array | undefined]> = [
          [TIP_ROW, hash],
          [fhRow(hex), fh],
        ]
        let event: ChainEvent
        if (body === undefined) {
          const header = (yield* chain.entry(hash)).pipe(Option.getOrThrow).header
          event = ChainEvent.BlockConnected({ hash, height, block: { header, txs: [] }, txids: [] })
        } else {
          const { block, txids } = body
          const spent: Array<readonly [string, Coin]> = []
          const kept = new Set<number>([0])
          block.txs.forEach((tx, t) => {
            const txHex = toHex(txids[t]!)
            if (t > 0) {
              for (const input of tx.inputs) {
                const key = keyOf(input.prevout)
                const coin = coins.get(key)
                if (coin === undefined) continue
                coins.delete(key)
                spent.push([key, coin])
                writes.push([coinRow(key), undefined])
                kept.add(t)
              }
            }
            tx.outputs.forEach((output, vout) => {
              if (state.window.ownerOf(output.pubkey) === undefined) return
              const key = `${txHex}:${vout}`
              const coin: Coin = {
                value: output.value,
                pubkey: output.pubkey,
                height: height as Height,
                coinbase: t === 0,
              }
              coins.set(key, coin)
              writes.push([coinRow(key), encodeCoin(coin)])
              kept.add(t)
            })
          })
          const stored: Stored = {
            block: { header: block.header, txs: block.txs.filter((_, t) => kept.has(t)) },
            txids: txids.filter((_, t) => kept.has(t)),
            spent,
          }
          writes.push([blockRow(hex), encodeStored(stored)])
          state.matched.add(hex)
          // the wallet sees the whole block (it reads the coinbase at index 0)
          event = ChainEvent.BlockConnected({ hash, height, block, txids })
        }
        yield* table.write(writes).pipe(Effect.orDie)
        state.chain.push(hash)
        state.filterHeaders.push(fh)
        yield* Ref.set(tipRef, { hash, height })
        yield* PubSub.publish(events, event)
        yield* PubSub.publish(events, ChainEvent.TipChanged({ hash, height }))
      })

    /** disconnectTip takes the scanned tip off (a reorg): its coins go, the coins it spent come back. */
    const disconnectTip = (state: State) =>
      Effect.gen(function* () {
        const height = tipOf(state)
        const hash = state.chain[height]!
        const hex = toHex(hash)
        const writes: Array<readonly [string, Uint8Array | undefined]> = [[fhRow(hex), undefined]]
        let block: Block
        if (state.matched.has(hex)) {
          const row = yield* table.get(blockRow(hex)).pipe(Effect.orDie)
          const stored = Option.isSome(row) ? decodeStored(row.value) : undefined
          block = stored?.block ?? {
            header: (yield* chain.entry(hash)).pipe(Option.getOrThrow).header,
            txs: [],
          }
          for (const [t, tx] of block.txs.entries()) {
            const txHex = toHex(stored!.txids[t]!)
            for (let vout = 0; vout < tx.outputs.length; vout++) {
              const key = `${txHex}:${vout}`
              if (coins.delete(key)) writes.push([coinRow(key), undefined])
            }
          }
          for (const [key, coin] of stored?.spent ?? []) {
            coins.set(key, coin)
            writes.push([coinRow(key), encodeCoin(coin)])
          }
          writes.push([blockRow(hex), undefined])
          state.matched.delete(hex)
        } else {
          block = { header: (yield* chain.entry(hash)).pipe(Option.getOrThrow).header, txs: [] }
        }
        const parent = state.chain[height - 1]!
        writes.push([TIP_ROW, parent])
        yield* table.write(writes).pipe(Effect.orDie)
        state.chain.pop()
        state.filterHeaders.pop()
        yield* Ref.set(tipRef, { hash: parent, height: height - 1 })
        yield* PubSub.publish(events, ChainEvent.BlockDisconnected({ hash, height, block }))
        yield* PubSub.publish(events, ChainEvent.TipChanged({ hash: parent, height: height - 1 }))
      })

    // -- timeouts --------------------------------------------------------------------------------

    /** retry re-asks whatever the batch waits for of another peer once the request is late. */
    const retry = (state: State) =>
      Effect.gen(function* () {
        const batch = state.batch
        if (batch === undefined || (yield* now) - batch.sentAt < timeoutMs) return
        if (batch.block !== undefined) {
          const stuck = batch.block
          batch.block = undefined
          state.peers.delete(stuck.peer)
          return yield* askBlock(state, stuck.index)
        }
        if (batch.agreed === undefined) {
          for (const id of batch.asked) if (!batch.answers.has(id)) state.peers.delete(id)
          batch.asked.clear()
          for (const id of batch.answers.keys()) batch.asked.add(id)
          yield* askHeaders(state)
          return yield* settleHeaders(state)
        }
        if (batch.filterPeer !== undefined) state.peers.delete(batch.filterPeer)
        yield* askFilters(state)
      })

    // -- the actor -------------------------------------------------------------------------------

    const initial = Effect.gen(function* () {
      const loaded = yield* loadChain
      const state: State = {
        chain: loaded.path,
        filterHeaders: loaded.headers,
        matched: new Set([...rows.keys()].filter((k) => k.startsWith("blk:")).map((k) => k.slice(4))),
        window: new KeyWindow(keystore.publicKey, lookahead),
        peers: new Map(),
        batch: undefined,
        ahead: undefined,
      }
      state.window.deriveUpTo((yield* keystore.count) + lookahead)
      const height = tipOf(state)
      yield* Ref.set(tipRef, { hash: state.chain[height]!, height })
      yield* Effect.logInfo(`light: scanned to height ${height}; ${coins.size} wallet coins`)
      return state
    })

    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Effect.gen(function* () {
        switch (cmd._tag) {
          case "Connected": {
            const s = cmd.peer.info.services
            state.peers.set(cmd.peer.info.id, {
              handle: cmd.peer,
              filters: (s & SERVICE_FILTERS) !== 0,
              blocks: (s & (SERVICE_FULL | SERVICE_MINER)) !== 0,
            })
            break
          }
          case "Disconnected":
            state.peers.delete(cmd.id)
            break
          case "Headers":
            yield* onHeaders(state, cmd.peer, cmd.msg)
            break
          case "Filter":
            yield* onFilter(state, cmd.peer, cmd.msg)
            break
          case "BlockIn":
            yield* onBlock(state, cmd.peer, cmd.payload)
            break
          case "HashAt":
            yield* Deferred.succeed(cmd.reply, Option.fromNullable(state.chain[cmd.height]))
            break
          case "Status": {
            const peers = [...state.peers.values()]
            yield* Deferred.succeed(cmd.reply, {
              height: tipOf(state),
              hash: state.chain[tipOf(state)]!,
              filterPeers: peers.filter((p) => p.filters).length,
              blockPeers: peers.filter((p) => p.blocks).length,
            })
            break
          }
          case "Tick":
            // new keys handed out since: watch them too
            state.window.deriveUpTo((yield* keystore.count) + lookahead)
            yield* retry(state)
            // every tick, not only between batches: a reorg may take the running batch's blocks away
            yield* follow(state)
            if (state.batch !== undefined && state.batch.asked.size === 0) yield* askHeaders(state)
            break
        }
        return state
      })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "light-client",
      capacity: 4096,
      initial,
      handle,
    })
    yield* Effect.forkScoped(
      Effect.forever(Effect.sleep(config.tick).pipe(Effect.zipRight(actor.send(Command.Tick())))),
    )

    const service: LightClientService = {
      tip: Ref.get(tipRef),
      events,
      coin: (key) => coins.get(key),
      forEachCoin: (visit) =>
        Effect.sync(() => {
          for (const [key, coin] of coins) visit(key, coin)
        }),
      peerConnected: (peer) => actor.send(Command.Connected({ peer })),
      peerDisconnected: (id) => actor.send(Command.Disconnected({ id })),
      receive: (peer, msg) =>
        msg._tag === "cfheaders"
          ? actor.sendFrom(peer.info.id, Command.Headers({ peer, msg }))
          : actor.sendFrom(peer.info.id, Command.Filter({ peer, msg })),
      receiveBlock: (peer, payload) => actor.sendFrom(peer.info.id, Command.BlockIn({ peer, payload })),
      hashAt: (height) => Actor.ask(actor, (reply) => Command.HashAt({ height, reply })),
      status: Actor.ask(actor, (reply: Deferred.Deferred<LightStatus>) => Command.Status({ reply })),
    }
    return service
  })

/** layer provides the LightClient; the node also offers it as the wallet's source. */
export const layer = (
  config: LightClientConfig,
): Layer.Layer<LightClient, StorageError, Chain | Keystore | ChainStore> =>
  Layer.scoped(LightClient, make(config))
