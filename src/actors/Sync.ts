import {
  Clock,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  PubSub,
  Queue,
  type Scope,
} from "effect"
import { headerHash } from "../consensus/checkBlock.js"
import { blockHashOf } from "../consensus/hash.js"
import { type BlockHeader, HEADER_BYTES } from "../schema/block.js"
import { toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import {
  GetDataMessage,
  GetHeadersMessage,
  HeadersMessage,
  INV_BLOCK,
  type InvItem,
  InvMessage,
  MAX_HEADERS,
  type NotFoundMessage,
  SERVICE_FULL,
  SERVICE_MINER,
  SendHeadersMessage,
} from "../schema/wire.js"
import * as Actor from "./Actor.js"
import { remember } from "./bounded.js"
import { Chain, type HeaderTip } from "./Chain.js"
import type { PeerHandle, PeerId } from "./net.js"
import { Misbehavior } from "./spamPolicy.js"

/** SyncConfig: block download limits and timeouts (Core's defaults where it has them). */
export interface SyncConfig {
  /** blocks requested from one peer at a time (Core's MAX_BLOCKS_IN_TRANSIT_PER_PEER) */
  readonly maxInFlightPerPeer: number
  /** blocks fetched at most this far above the active tip (Core's BLOCK_DOWNLOAD_WINDOW) */
  readonly window: number
  /** a peer holding the block the window waits on for this long is a staller: dropped, its blocks re-assigned */
  readonly stallTimeout: Duration.Duration
  /** any block request unanswered for this long is re-assigned and the peer dropped */
  readonly blockTimeout: Duration.Duration
  /** how often timeouts are checked */
  readonly tick: Duration.Duration
  /** how often a progress line is logged while behind the best header */
  readonly progressEvery: Duration.Duration
  /**
   * headers messages in a row that do not connect to our tree before the peer is dropped (Core's
   * MAX_NUM_UNCONNECTING_HEADERS_MSGS): each one costs us a getheaders round trip
   */
  readonly maxUnconnectingHeaders?: number
  /** per-peer memory of the block hashes it knows (announced, sent, or announced to it) */
  readonly maxKnownPerPeer?: number
  /**
   * false for a light node (issue 9): headers only. It neither downloads blocks for the Chain nor
   * announces any (its LightClient fetches the few blocks its filters match itself).
   */
  readonly downloadBlocks?: boolean
}

export const defaultSyncConfig: SyncConfig = {
  maxInFlightPerPeer: 16,
  window: 1024,
  stallTimeout: Duration.seconds(5),
  blockTimeout: Duration.seconds(60),
  tick: Duration.seconds(1),
  progressEvery: Duration.seconds(10),
  maxUnconnectingHeaders: 10,
  maxKnownPerPeer: 1_000,
}

/** SyncMessage is what a Peer hands to Sync: headers, and inv/notfound holding block items only. */
export type SyncMessage = HeadersMessage | InvMessage | NotFoundMessage | SendHeadersMessage

/**
 * SyncService is the Sync actor (any fiber may call it; the Peer actors do): headers-first block download from every synced peer and block
 * announcements (headers to peers that sent sendheaders, inv to the others).
 */
export interface SyncService {
  /** peerConnected: a peer finished its handshake (Sync sends it getheaders if it serves blocks) */
  readonly peerConnected: (peer: PeerHandle) => Effect.Effect<void>
  /** peerDisconnected: its in-flight blocks go back to the queue */
  readonly peerDisconnected: (id: PeerId) => Effect.Effect<void>
  /**
   * receive hands over a peer's message; it waits while that peer has Actor.defaultPerSource messages
   * queued or in progress (an inv is dropped instead when the mailbox is full)
   */
  readonly receive: (peer: PeerHandle, msg: SyncMessage) => Effect.Effect<void>
  /** receiveBlock: a `block` frame's payload, undecoded (the Chain decodes it); waits as `receive` */
  readonly receiveBlock: (peer: PeerHandle, payload: Uint8Array) => Effect.Effect<void>
}

export class Sync extends Context.Tag("fibercoin/Sync")<Sync, SyncService>() {}

/** MAX_BLOCKS_TO_ANNOUNCE: more new blocks than this since what a peer knows are announced as one inv of the tip (Core's). */
const MAX_BLOCKS_TO_ANNOUNCE = 8

/** MAX_INV_BLOCKS_PER_MESSAGE: block items of one inv looked up (the newest); an honest peer announces a few. */
const MAX_INV_BLOCKS_PER_MESSAGE = 64

/** KNOWN_FROM_HEADERS: the newest headers of a batch remembered as known by its sender (announcements look 9 back). */
const KNOWN_FROM_HEADERS = 2 * MAX_BLOCKS_TO_ANNOUNCE

const ZERO_HASH = new Uint8Array(32) as BlockHash

// ---------------------------------------------------------------------------------------------------
// State, owned by the actor fiber only.

/** Request is one block asked of one peer. */
interface Request {
  readonly hex: string
  readonly hash: BlockHash
  readonly height: number
  readonly peer: PeerId
  /** ms (Clock) when the getdata went out */
  readonly at: number
}

interface PeerState {
  readonly handle: PeerHandle
  /** full nodes and miners serve blocks; light nodes only headers */
  readonly servesBlocks: boolean
  /** the most-work header we know the peer has (its headers, its block invs, blocks it sent) */
  bestKnown: HeaderTip | undefined
  bestKnownHex: string | undefined
  readonly inFlight: Map<string, Request>
  /** it sent sendheaders (BIP130): announce to it with headers */
  prefersHeaders: boolean
  /** block hashes it knows, oldest first, bounded: never announced to it again */
  readonly known: Set<string>
  /** blocks it answered notfound: not asked of it again */
  readonly notFound: Set<string>
  /** headers messages in a row that did not connect */
  unconnecting: number
  /**
   * when (Clock ms) our last getheaders to it went out, until an answer connects: announcements that
   * do not connect meanwhile are blocks it found while answering, not misbehaviour
   */
  headersAskedAt: number | undefined
}

interface Stall {
  readonly peer: PeerId
  /** the block at tip + 1 it holds */
  readonly hex: string
  readonly since: number
}

interface State {
  readonly peers: Map<PeerId, PeerState>
  /** every block in flight, by hex hash: one peer at a time per block */
  readonly inFlight: Map<string, Request>
  /** the peer that holds the block everyone else waits on, since when */
  stall: Stall | undefined
  /** the tip last announced (hex) */
  lastAnnounced: string | undefined
  lastProgressAt: number
}

type Command = Data.TaggedEnum<{
  Connected: { readonly peer: PeerHandle }
  Disconnected: { readonly id: PeerId }
  Message: { readonly peer: PeerHandle; readonly msg: SyncMessage }
  Block: { readonly peer: PeerHandle; readonly payload: Uint8Array }
  // biome-ignore lint/complexity/noBannedTypes: Data.TaggedEnum spells a case without fields `{}`
  TipChanged: {}
  // biome-ignore lint/complexity/noBannedTypes: as above
  Tick: {}
}>
const Command = Data.taggedEnum<Command>()

const servesBlocks = (services: number): boolean => (services & (SERVICE_FULL | SERVICE_MINER)) !== 0

const blockItems = (items: ReadonlyArray<InvItem>): ReadonlyArray<InvItem> =>
  items.filter((i) => i.type === INV_BLOCK)

// ---------------------------------------------------------------------------------------------------

/**
 * make starts the Sync actor in the current scope (Core's net_processing, simplified):
 *
 * - on connect: `sendheaders`, and `getheaders` to peers that serve blocks, with a locator from our
 *   best header's parent (so a peer as far as we are still answers with one header: its best);
 * - headers go to `Chain.submitHeaders` (proof of work and linkage are checked before any block is
 *   asked for); a full batch is continued from its last header; an invalid one costs the sender its
 *   ban score and the connection; one that does not connect is answered with a locator, up to
 *   `maxUnconnectingHeaders` times in a row;
 * - an inv of an unknown block is answered with getheaders (headers-first even for announcements);
 * - blocks are fetched from every peer whose best known header has more work than our tip, at most
 *   `maxInFlightPerPeer` per peer and `window` above the tip, each from one peer at a time;
 * - the peer holding the block at tip + 1 while another peer has free slots and nothing left to ask
 *   for (the window is full, or the rest is in flight) is a staller: after `stallTimeout` it is
 *   dropped and its blocks fetched elsewhere; so is any peer holding a request for `blockTimeout`;
 * - a new tip is announced at once, with headers to peers that asked for them (BIP130) and an inv of
 *   the tip to the rest, never to a peer that announced or sent it; not while catching up.
 */
export const make = (config: SyncConfig): Effect.Effect<SyncService, never, Chain | Scope.Scope> =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const maxUnconnecting = config.maxUnconnectingHeaders ?? 10
    const maxKnown = config.maxKnownPerPeer ?? 1_000
    const maxInFlight = Math.max(1, config.maxInFlightPerPeer)
    /** a peer is topped up once half its slots are free: fewer, larger getdata messages */
    const refillAt = Math.ceil(maxInFlight / 2)
    const stallMs = Duration.toMillis(config.stallTimeout)
    const blockTimeoutMs = Duration.toMillis(config.blockTimeout)
    const progressMs = Duration.toMillis(config.progressEvery)
    /**
     * the connected peers' handles, kept across a restart of the actor: a restarted actor asks them
     * for headers again instead of forgetting them
     */
    const registry = new Map<PeerId, PeerHandle>()
    // subscribed before the actor starts, so no tip change is missed
    const chainEvents = yield* PubSub.subscribe(chain.events)

    const newPeer = (handle: PeerHandle): PeerState => ({
      handle,
      servesBlocks: servesBlocks(handle.info.services),
      bestKnown: undefined,
      bestKnownHex: undefined,
      inFlight: new Map(),
      prefersHeaders: false,
      known: new Set(),
      notFound: new Set(),
      unconnecting: 0,
      headersAskedAt: undefined,
    })

    const now = Clock.currentTimeMillis

    /**
     * requestHeaders sends getheaders (stop: none, or `stop`) with a locator from the best header's
     * parent, as Core does: a peer as far as we are answers with at least our best header, and so
     * tells us what it has (an empty answer would not).
     */
    const requestHeaders = (ps: PeerState, stop: BlockHash = ZERO_HASH) =>
      Effect.gen(function* () {
        const locator = yield* chain.locator
        const fromParent = locator.length > 1 ? locator.slice(1) : locator
        ps.headersAskedAt = yield* now
        yield* ps.handle.send(new GetHeadersMessage({ locator: [...fromParent], stop }))
      })

    const updateBestKnown = (ps: PeerState, tip: HeaderTip) =>
      Effect.gen(function* () {
        if (ps.bestKnown !== undefined && tip.chainwork <= ps.bestKnown.chainwork) return
        ps.bestKnown = tip
        ps.bestKnownHex = toHex(tip.hash)
        yield* ps.handle.updateStats((s) => ({ ...s, syncedHeaders: tip.height }))
      })

    /** release puts a request back: the block may be asked of another peer. */
    const release = (state: State, req: Request) => {
      state.inFlight.delete(req.hex)
      state.peers.get(req.peer)?.inFlight.delete(req.hex)
      if (state.stall?.hex === req.hex) state.stall = undefined
    }

    /** drop disconnects a peer and forgets it at once; its blocks go back to the queue. */
    const drop = (state: State, ps: PeerState, reason: string) =>
      Effect.gen(function* () {
        const id = ps.handle.info.id
        yield* Effect.logInfo(`peer ${id} dropped: ${reason}`)
        yield* ps.handle.disconnect(reason)
        forget(state, id)
      })

    const forget = (state: State, id: PeerId) => {
      const ps = state.peers.get(id)
      if (ps === undefined) return
      for (const req of [...ps.inFlight.values()]) release(state, req)
      if (state.stall?.peer === id) state.stall = undefined
      state.peers.delete(id)
      registry.delete(id)
    }

    /** misbehaving reports the failure to the spam filter and drops the peer (bcoin: the network code alone penalizes). */
    const misbehaving = (state: State, ps: PeerState, m: Misbehavior, reason: string) =>
      Effect.gen(function* () {
        yield* ps.handle.misbehave(m)
        yield* drop(state, ps, reason)
      })

    // -- block download ---------------------------------------------------------------------------

    /**
     * schedule tops up every peer that has blocks we lack, and notes the staller: the peer holding the
     * block at tip + 1 while another peer that could fetch more has nothing left to ask for (the window
     * is full, or everything else is in flight).
     */
    const schedule = (state: State) =>
      Effect.gen(function* () {
        const tip = yield* chain.tip
        const at = yield* now
        let exclude: Set<string> | undefined
        /** peers that could fetch more than they were given */
        const waiting: Array<PeerId> = []
        for (const ps of state.peers.values()) {
          const best = ps.bestKnown
          if (!ps.servesBlocks || best === undefined || best.chainwork <= tip.chainwork) continue
          const free = maxInFlight - ps.inFlight.size
          if (free < refillAt) continue
          exclude ??= new Set(state.inFlight.keys())
          const excluded = ps.notFound.size === 0 ? exclude : new Set([...exclude, ...ps.notFound])
          const blocks = yield* chain.blocksToFetch(best.hash, {
            max: free,
            window: config.window,
            exclude: excluded,
          })
          const id = ps.handle.info.id
          if (blocks.length < free) waiting.push(id)
          if (blocks.length === 0) continue
          for (const b of blocks) {
            const hex = toHex(b.hash)
            const req: Request = { hex, hash: b.hash, height: b.height, peer: id, at }
            state.inFlight.set(hex, req)
            ps.inFlight.set(hex, req)
            exclude.add(hex)
          }
          yield* ps.handle.send(
            new GetDataMessage({ items: blocks.map((b) => ({ type: INV_BLOCK, hash: b.hash })) }),
          )
        }
        // the block the tip waits for, and who holds it
        let next: Request | undefined
        for (const req of state.inFlight.values()) {
          if (req.height === tip.height + 1) {
            next = req
            break
          }
        }
        if (next === undefined || !waiting.some((id) => id !== next.peer)) {
          state.stall = undefined
        } else if (state.stall?.hex !== next.hex || state.stall.peer !== next.peer) {
          state.stall = { peer: next.peer, hex: next.hex, since: at }
        }
      })

    /** checkTimeouts drops the staller after stallTimeout and any peer with a request older than blockTimeout. */
    const checkTimeouts = (state: State) =>
      Effect.gen(function* () {
        const at = yield* now
        const stall = state.stall
        if (stall !== undefined && at - stall.since >= stallMs) {
          const ps = state.peers.get(stall.peer)
          state.stall = undefined
          if (ps?.inFlight.has(stall.hex)) yield* drop(state, ps, "stalling block download")
        }
        const late = new Set<PeerId>()
        for (const req of state.inFlight.values()) if (at - req.at >= blockTimeoutMs) late.add(req.peer)
        for (const id of late) {
          const ps = state.peers.get(id)
          if (ps !== undefined) yield* drop(state, ps, "block download timeout")
        }
      })

    // -- announcements ----------------------------------------------------------------------------

    /**
     * announce tells every peer about the new active blocks it does not know: headers (at most 8,
     * connecting to one it knows) to peers that sent sendheaders, else an inv of the tip. A peer with
     * as much work as our tip needs nothing. While blocks from a peer with more work are in flight we
     * are catching up, and announce once they are in (Core does not announce during initial download).
     */
    const announce = (state: State) =>
      Effect.gen(function* () {
        const tip = yield* chain.tip
        const tipHex = toHex(tip.hash)
        if (tipHex === state.lastAnnounced || tip.height === 0) return
        if (state.inFlight.size > 0) {
          for (const ps of state.peers.values()) {
            if (ps.servesBlocks && ps.bestKnown !== undefined && ps.bestKnown.chainwork > tip.chainwork)
              return
          }
        }
        // the active chain's last blocks, oldest first: one more than may be announced as headers
        const base = Math.max(0, tip.height - MAX_BLOCKS_TO_ANNOUNCE - 1)
        const baseHash = yield* chain.hashAt(base)
        if (Option.isNone(baseHash)) return
        const headers = yield* chain.headersAfter([baseHash.value], tip.hash, MAX_BLOCKS_TO_ANNOUNCE + 1)
        const recent = headers.map((header) => ({ header, hex: toHex(headerHash(header)) }))
        // the chain moved on meanwhile: its TipChanged follows
        if (recent.length === 0 || recent[recent.length - 1]!.hex !== tipHex) return
        state.lastAnnounced = tipHex
        for (const ps of state.peers.values()) {
          if (ps.bestKnown !== undefined && ps.bestKnown.chainwork >= tip.chainwork) continue
          let i = recent.length - 1
          while (i >= 0 && !ps.known.has(recent[i]!.hex) && ps.bestKnownHex !== recent[i]!.hex) i--
          const fresh = recent.slice(i + 1)
          if (fresh.length === 0) continue
          // headers must connect to a block the peer knows: one of ours it knows, or genesis
          const connects = i >= 0 || base === 0
          if (ps.prefersHeaders && connects && fresh.length <= MAX_BLOCKS_TO_ANNOUNCE) {
            yield* ps.handle.send(new HeadersMessage({ headers: fresh.map((f) => f.header) }))
          } else {
            yield* ps.handle.send(new InvMessage({ items: [{ type: INV_BLOCK, hash: tip.hash }] }))
          }
          for (const f of fresh) remember(ps.known, f.hex, maxKnown, true)
        }
      })

    /** settle runs after every command: fill the download slots, then announce a new tip if due. */
    const settle = (state: State) =>
      config.downloadBlocks === false ? Effect.void : Effect.zipRight(schedule(state), announce(state))

    // -- handlers ---------------------------------------------------------------------------------

    const handleConnected = (state: State, peer: PeerHandle) =>
      Effect.gen(function* () {
        const id = peer.info.id
        if (state.peers.has(id)) return
        registry.set(id, peer)
        const ps = newPeer(peer)
        state.peers.set(id, ps)
        yield* peer.send(new SendHeadersMessage())
        if (ps.servesBlocks) yield* requestHeaders(ps)
      })

    const handleHeaders = (state: State, ps: PeerState, headers: ReadonlyArray<BlockHeader>) =>
      Effect.gen(function* () {
        // an empty answer: the peer has nothing after our locator
        if (headers.length === 0) {
          ps.headersAskedAt = undefined
          return
        }
        const submitted = yield* Effect.either(chain.submitHeaders(headers))
        if (Either.isLeft(submitted)) {
          const e = submitted.left
          if (e.reason === "prev-blk-not-found") {
            // while our getheaders is unanswered, the peer's announcements cannot connect yet (it
            // mines or learns blocks faster than we catch up): neither counted nor asked again
            const asked = ps.headersAskedAt
            if (asked !== undefined && (yield* now) - asked < blockTimeoutMs) return
            ps.unconnecting++
            if (ps.unconnecting > maxUnconnecting)
              return yield* drop(state, ps, "too many unconnecting headers")
            return yield* requestHeaders(ps)
          }
          if (e.banScore > 0)
            return yield* misbehaving(
              state,
              ps,
              Misbehavior.Invalid({ error: e }),
              `invalid headers: ${e.reason}`,
            )
          return yield* Effect.logDebug(`peer ${ps.handle.info.id}: headers refused: ${e.message}`)
        }
        ps.unconnecting = 0
        ps.headersAskedAt = undefined
        for (const h of headers.slice(-KNOWN_FROM_HEADERS))
          remember(ps.known, toHex(headerHash(h)), maxKnown, true)
        yield* updateBestKnown(ps, submitted.right.last)
        // a full batch: the peer has more; continue from where it ended
        if (headers.length >= MAX_HEADERS) {
          ps.headersAskedAt = yield* now
          yield* ps.handle.send(
            new GetHeadersMessage({ locator: [submitted.right.last.hash], stop: ZERO_HASH }),
          )
        }
      })

    const handleInv = (ps: PeerState, items: ReadonlyArray<InvItem>) =>
      Effect.gen(function* () {
        let unknown: BlockHash | undefined
        for (const item of blockItems(items).slice(-MAX_INV_BLOCKS_PER_MESSAGE)) {
          const hash = item.hash as BlockHash
          remember(ps.known, toHex(hash), maxKnown, true)
          const entry = yield* chain.entry(hash)
          if (entry._tag === "None") {
            unknown = hash
          } else if (entry.value.status !== "invalid") {
            yield* updateBestKnown(ps, { hash, height: entry.value.height, chainwork: entry.value.chainwork })
          }
        }
        // headers first, even for announcements: ask for the headers up to the newest unknown block
        if (unknown !== undefined) yield* requestHeaders(ps, unknown)
      })

    const handleNotFound = (state: State, ps: PeerState, items: ReadonlyArray<InvItem>) =>
      Effect.sync(() => {
        for (const item of blockItems(items)) {
          const hex = toHex(item.hash)
          const req = ps.inFlight.get(hex)
          if (req === undefined) continue
          release(state, req)
          remember(ps.notFound, hex, maxKnown, true)
        }
      })

    /**
     * handleBlock hands a block to the Chain. One we did not ask of this peer may be one we have: it is
     * looked up by its hash first, and a stored one goes no further (issue 7: a duplicate costs one
     * header hash and an index lookup, not a decode of the whole block); one we asked of it we lacked.
     */
    const handleBlock = (state: State, ps: PeerState, payload: Uint8Array) =>
      Effect.gen(function* () {
        const hash = blockHashOf(payload.subarray(0, HEADER_BYTES))
        const hex = toHex(hash)
        const req = state.inFlight.get(hex)
        if (req !== undefined) release(state, req)
        remember(ps.known, hex, maxKnown, true)
        if (req?.peer !== ps.handle.info.id) {
          const known = yield* chain.entry(hash)
          if (known._tag === "Some" && (known.value.status === "data" || known.value.status === "valid")) {
            const { height, chainwork } = known.value
            return yield* updateBestKnown(ps, { hash, height, chainwork })
          }
        }
        const submitted = yield* Effect.either(chain.submitBlock(payload))
        if (Either.isLeft(submitted)) {
          const e = submitted.left
          if (e._tag === "DecodeError")
            return yield* misbehaving(
              state,
              ps,
              Misbehavior.Malformed({ error: e }),
              `malformed block: ${e.message}`,
            )
          if (e.banScore > 0)
            return yield* misbehaving(
              state,
              ps,
              Misbehavior.Invalid({ error: e }),
              `invalid block: ${e.reason}`,
            )
          return yield* Effect.logDebug(`peer ${ps.handle.info.id}: block ${hex} refused: ${e.message}`)
        }
        if (submitted.right === "duplicate") return
        // a block pushed to us whose parent we lack: fetch the headers that lead to it
        if (submitted.right === "orphan") yield* requestHeaders(ps)
        let height = req?.height
        if (req === undefined || req.peer !== ps.handle.info.id) {
          // not what we asked of it: it has the block, so it knows the header
          const entry = yield* chain.entry(hash)
          if (entry._tag === "Some" && entry.value.status !== "invalid") {
            height = entry.value.height
            yield* updateBestKnown(ps, { hash, height, chainwork: entry.value.chainwork })
          }
        }
        const at = yield* now
        yield* ps.handle.updateStats((s) => ({
          ...s,
          syncedBlocks: height === undefined ? s.syncedBlocks : Math.max(s.syncedBlocks, height),
          lastBlockAt: at,
        }))
      })

    const handleTick = (state: State) =>
      Effect.gen(function* () {
        yield* checkTimeouts(state)
        // a light node downloads no blocks: its tip stays at genesis, a progress line would mislead
        if (config.downloadBlocks === false) return
        const at = yield* now
        if (at - state.lastProgressAt < progressMs) return
        state.lastProgressAt = at
        const tip = yield* chain.tip
        const best = yield* chain.bestHeader
        if (best.height <= tip.height) return
        const pct = ((tip.height / best.height) * 100).toFixed(1)
        yield* Effect.logInfo(
          `sync: height ${tip.height} of ${best.height} (${pct}%), ${state.peers.size} peers, ${state.inFlight.size} blocks in flight`,
        )
      })

    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Effect.gen(function* () {
        switch (cmd._tag) {
          case "Connected":
            yield* handleConnected(state, cmd.peer)
            break
          case "Disconnected":
            forget(state, cmd.id)
            break
          case "Message": {
            const ps = state.peers.get(cmd.peer.info.id)
            if (ps === undefined) return state
            const msg = cmd.msg
            switch (msg._tag) {
              case "headers":
                yield* handleHeaders(state, ps, msg.headers)
                break
              case "inv":
                yield* handleInv(ps, msg.items)
                break
              case "notfound":
                yield* handleNotFound(state, ps, msg.items)
                break
              case "sendheaders":
                ps.prefersHeaders = true
                break
            }
            break
          }
          case "Block": {
            const ps = state.peers.get(cmd.peer.info.id)
            if (ps === undefined) return state
            yield* handleBlock(state, ps, cmd.payload)
            break
          }
          case "TipChanged":
            break
          case "Tick":
            yield* handleTick(state)
            break
        }
        yield* settle(state)
        return state
      })

    const initial = Effect.gen(function* () {
      const state: State = {
        peers: new Map(),
        inFlight: new Map(),
        stall: undefined,
        // only tips that come later are announced: a new peer learns our chain from getheaders
        lastAnnounced: toHex((yield* chain.tip).hash),
        lastProgressAt: yield* now,
      }
      // after a restart: the peers are still connected; learn their chains again
      for (const handle of registry.values()) {
        const ps = newPeer(handle)
        state.peers.set(handle.info.id, ps)
        if (ps.servesBlocks) yield* requestHeaders(ps)
      }
      return state
    })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "sync",
      capacity: 4096,
      initial,
      handle,
    })

    // tip changes, coalesced: one TipChanged command for however many events are waiting
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          const first = yield* Queue.take(chainEvents)
          const rest = yield* Queue.takeAll(chainEvents)
          let tipChanged = first._tag === "TipChanged"
          for (const e of rest) tipChanged ||= e._tag === "TipChanged"
          if (tipChanged) yield* actor.send(Command.TipChanged())
        }),
      ),
    )
    yield* Effect.forkScoped(
      Effect.forever(Effect.sleep(config.tick).pipe(Effect.zipRight(actor.send(Command.Tick())))),
    )

    const service: SyncService = {
      peerConnected: (peer) => actor.send(Command.Connected({ peer })),
      peerDisconnected: (id) => actor.send(Command.Disconnected({ id })),
      // announcements are hints: dropped rather than stall the peer's reader when the peer has its
      // quota in use or the mailbox is full (trySendFrom), so invs cannot fill the mailbox either; the
      // rest queue within the peer's quota (Actor.defaultPerSource), so a flooder waits on itself and
      // another peer's headers or block wait behind at most that many of its messages. 4 per peer
      // keeps IBD's pipeline full: while one block is validated up to three wait queued behind it,
      // and the rest of the peer's blocks in flight wait in its socket, not in our memory.
      receive: (peer, msg) =>
        msg._tag === "inv"
          ? Effect.asVoid(actor.trySendFrom(peer.info.id, Command.Message({ peer, msg })))
          : actor.sendFrom(peer.info.id, Command.Message({ peer, msg })),
      receiveBlock: (peer, payload) => actor.sendFrom(peer.info.id, Command.Block({ peer, payload })),
    }
    return service
  })

/** layer provides the Sync actor; it needs the Chain actor. */
export const layer = (config: SyncConfig): Layer.Layer<Sync, never, Chain> => Layer.scoped(Sync, make(config))
