import {
  Cause,
  Chunk,
  Clock,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  Exit,
  Layer,
  Option,
  PubSub,
  Queue,
  type Scope,
} from "effect"
import type { RuleError } from "../consensus/errors.js"
import { txidOf } from "../consensus/hash.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { toHex } from "../schema/hex.js"
import type { TxId } from "../schema/primitives.js"
import { decodeTx } from "../schema/tx.js"
import {
  GetDataMessage,
  INV_TX,
  type InvItem,
  InvMessage,
  MAX_INV_ENTRIES,
  type NotFoundMessage,
} from "../schema/wire.js"
import * as Actor from "./Actor.js"
import { remember } from "./bounded.js"
import { Chain } from "./Chain.js"
import { Mempool, type MempoolEvent, type MempoolReject } from "./Mempool.js"
import type { PeerHandle, PeerId } from "./net.js"
import { Misbehavior } from "./spamPolicy.js"

/** RelayConfig: transaction relay timing and memory bounds. */
export interface RelayConfig {
  /** announcements to a peer are batched and sent this often (trickle); request timeouts are checked as often */
  readonly trickleInterval: Duration.Duration
  /** a requested transaction not delivered within this is asked of another announcer */
  readonly requestTimeout: Duration.Duration
  /** per-peer memory of transactions it knows (announced to us, sent by us, got from it) */
  readonly maxKnownPerPeer: number
  /**
   * transactions requested from one peer at a time (Core's MAX_PEER_TX_REQUEST_IN_FLIGHT); further
   * items it announces wait for a free slot (at this peer or another announcer's)
   */
  readonly maxInFlightPerPeer?: number
  /**
   * transactions one peer may have announced and not yet delivered, in flight or waiting (Core's
   * MAX_PEER_TX_ANNOUNCEMENTS): beyond it its announcements are ignored, so an inv flood of made-up
   * hashes costs bounded memory
   */
  readonly maxAnnouncementsPerPeer?: number
  /** transactions remembered as refused (Core's recentRejects), so they are not fetched again */
  readonly maxRecentRejects?: number
  /** transactions remembered as confirmed (removed from the pool by a block), so they are not fetched again */
  readonly maxRecentConfirmed?: number
  /**
   * false for a light node (issue 9), which cannot validate others' transactions: announcements are
   * noted (so they are not announced back) but never fetched; its own still go out
   */
  readonly requestTransactions?: boolean
  /**
   * transactions remembered as in the pool (accepted, not removed since), so a copy delivered again is
   * dropped by its txid without asking the pool; beyond it the oldest are forgotten, and a copy of one
   * of those goes to the pool, which refuses it by txid too
   */
  readonly maxRecentAccepted?: number
}

export const defaultRelayConfig: RelayConfig = {
  trickleInterval: Duration.seconds(2),
  requestTimeout: Duration.seconds(60),
  maxKnownPerPeer: 50_000,
  maxInFlightPerPeer: 100,
  maxAnnouncementsPerPeer: 5_000,
  maxRecentRejects: 50_000,
  maxRecentConfirmed: 50_000,
  maxRecentAccepted: 50_000,
}

/** RelayMessage is what a Peer hands to Relay: inv/notfound holding transaction items only. */
export type RelayMessage = InvMessage | NotFoundMessage

/**
 * RelayService is the Relay actor: transaction inv → getdata → tx with one request per item at a
 * time (timeout, then another announcer), trickled announcements, nothing echoed to its source.
 */
export interface RelayService {
  readonly peerConnected: (peer: PeerHandle) => Effect.Effect<void>
  readonly peerDisconnected: (id: PeerId) => Effect.Effect<void>
  /** receive hands over a peer's message; it waits while that peer has Actor.defaultPerSource queued or in progress */
  readonly receive: (peer: PeerHandle, msg: RelayMessage) => Effect.Effect<void>
  /** receiveTx: a `tx` frame's payload, undecoded (the Mempool decodes it); waits as `receive` */
  readonly receiveTx: (peer: PeerHandle, payload: Uint8Array) => Effect.Effect<void>
}

export class Relay extends Context.Tag("fibercoin/Relay")<Relay, RelayService>() {}

// ---------------------------------------------------------------------------------------------------
// The Relay actor. Everything below `make` runs on the actor's fiber; the state is nobody else's.

/**
 * mailboxCapacity: commands queued before a sender waits. A peer's messages come through `sendFrom`
 * (at most Actor.defaultPerSource queued or in progress per peer), so the mailbox never fills with one
 * peer's; beyond its quota a peer's reader waits (back-pressure on its reads).
 */
const mailboxCapacity = 4096

/** PeerRelay is what Relay keeps about one connected peer. */
interface PeerRelay {
  readonly handle: PeerHandle
  /** txids (hex) the peer knows: announced to us, sent to us, announced by us; oldest first, bounded */
  readonly known: Set<string>
  /** pool transactions to announce at the next trickle, in acceptance order (parents before children) */
  readonly queue: Map<string, TxId>
  /** requests sent to this peer and not answered yet */
  inFlight: number
  /** requests naming this peer, as the one asked or as a later candidate */
  announced: number
  /** requests (hex) that wait for a free slot and that this peer could serve */
  readonly waiting: Set<string>
}

/**
 * TxRequest is one transaction we want. It is asked of one peer at a time (`peer`); `announcers` are
 * the other peers that announced it, in announcement order, each asked in turn when the current one
 * times out, answers notfound or disconnects. `peer` is undefined while every announcer is at its
 * in-flight limit.
 */
interface TxRequest {
  readonly txid: TxId
  peer: PeerId | undefined
  /** when it was sent to `peer`, ms (Clock) */
  at: number
  readonly announcers: Array<PeerId>
}

interface State {
  readonly peers: Map<PeerId, PeerRelay>
  /** by txid hex */
  readonly requests: Map<string, TxRequest>
  /** txids (hex) refused by the pool: not fetched again (bounded, oldest forgotten first) */
  readonly recentRejects: Set<string>
  /** txids (hex) a block took out of the pool: not fetched again (bounded) */
  readonly recentConfirmed: Set<string>
  /**
   * txids (hex) in the pool, as its events tell (TxAccepted in, TxRemoved out): neither fetched nor
   * handed to the pool again (bounded, oldest forgotten first; empty after a restart: a miss only
   * costs a round trip to the pool)
   */
  readonly recentAccepted: Set<string>
}

/** Ctx is one command's view: the state, its time, and the getdata items to send when it is done. */
interface Ctx {
  readonly state: State
  readonly now: number
  readonly getdata: Map<PeerId, Array<InvItem>>
}

type Command = Data.TaggedEnum<{
  PeerConnected: { readonly peer: PeerHandle }
  PeerDisconnected: { readonly id: PeerId }
  Receive: { readonly peer: PeerHandle; readonly msg: RelayMessage }
  ReceiveTx: { readonly peer: PeerHandle; readonly payload: Uint8Array }
  /** trickle announcements and check request timeouts */
  Tick: Record<never, never>
  /** pool events are waiting in the subscription */
  Sync: Record<never, never>
}>
const Command = Data.taggedEnum<Command>()

/** chunks splits items into frames of at most MAX_INV_ENTRIES. */
const chunks = <A>(items: ReadonlyArray<A>): Array<Array<A>> => {
  const out: Array<Array<A>> = []
  for (let i = 0; i < items.length; i += MAX_INV_ENTRIES) out.push(items.slice(i, i + MAX_INV_ENTRIES))
  return out
}

/** transientRejects are pool refusals the sender did nothing wrong for and that say nothing lasting about the tx. */
const transientRejects: ReadonlySet<string> = new Set(["txn-already-in-mempool"])

/**
 * make builds the Relay actor over the Mempool. Pool events are drained at the start of every command
 * (and right after the actor's own `accept`), on the actor's fiber, so a transaction is queued for
 * announcement before the next message is handled; a second subscription only wakes the actor when
 * it is idle. A ticker fiber sends `Tick` every trickleInterval (Effect.sleep, so TestClock drives it).
 */
export const make = (
  config: RelayConfig,
): Effect.Effect<RelayService, never, Mempool | Chain | Scope.Scope> =>
  Effect.gen(function* () {
    const mempool = yield* Mempool
    const poolEvents = yield* PubSub.subscribe(mempool.events)
    /** the Chain's events: a new tip clears the reject memory (Core's recentRejects reset) */
    const chainEvents = yield* PubSub.subscribe((yield* Chain).events)
    const wake = yield* PubSub.subscribe(mempool.events)

    const maxInFlight = config.maxInFlightPerPeer ?? defaultRelayConfig.maxInFlightPerPeer!
    const maxAnnounced = config.maxAnnouncementsPerPeer ?? defaultRelayConfig.maxAnnouncementsPerPeer!
    const maxRejects = config.maxRecentRejects ?? defaultRelayConfig.maxRecentRejects!
    const maxConfirmed = config.maxRecentConfirmed ?? defaultRelayConfig.maxRecentConfirmed!
    const maxAccepted = config.maxRecentAccepted ?? defaultRelayConfig.maxRecentAccepted!
    const timeoutMs = Duration.toMillis(config.requestTimeout)

    /**
     * connected survives a restart of the actor: the connections are still there, so `initial`
     * registers them again (with empty memories) instead of ignoring their messages from then on.
     */
    const connected = new Map<PeerId, PeerHandle>()

    const peerRelay = (handle: PeerHandle): PeerRelay => ({
      handle,
      known: new Set(),
      queue: new Map(),
      inFlight: 0,
      announced: 0,
      waiting: new Set(),
    })

    const initial = Effect.sync(
      (): State => ({
        peers: new Map([...connected].map(([id, handle]) => [id, peerRelay(handle)])),
        requests: new Map(),
        recentRejects: new Set(),
        recentConfirmed: new Set(),
        recentAccepted: new Set(),
      }),
    )

    // -- requests ----------------------------------------------------------------------------------
    // Invariants: a request names each peer at most once (as `peer` or in `announcers`), only
    // connected peers, and `announced`/`inFlight` count exactly those namings; a request without any
    // peer is deleted.

    /**
     * assign asks a waiting request of the first announcer with a free slot (taking it out of
     * `announcers`); if none has one, the request waits in every announcer's `waiting` set; with no
     * announcer left, it is given up.
     */
    const assign = (ctx: Ctx, hex: string, r: TxRequest): void => {
      const { peers, requests } = ctx.state
      for (let i = 0; i < r.announcers.length; i++) {
        const id = r.announcers[i]!
        const p = peers.get(id)
        if (p === undefined || p.inFlight >= maxInFlight) continue
        r.announcers.splice(i, 1)
        r.peer = id
        r.at = ctx.now
        p.inFlight++
        p.waiting.delete(hex)
        for (const a of r.announcers) peers.get(a)?.waiting.delete(hex)
        const items = ctx.getdata.get(id)
        if (items === undefined) ctx.getdata.set(id, [{ type: INV_TX, hash: r.txid }])
        else items.push({ type: INV_TX, hash: r.txid })
        return
      }
      if (r.announcers.length === 0) {
        requests.delete(hex)
        return
      }
      for (const a of r.announcers) peers.get(a)?.waiting.add(hex)
    }

    /** fill gives a peer's free slots to the requests waiting for it. */
    const fill = (ctx: Ctx, p: PeerRelay): void => {
      for (const hex of p.waiting) {
        if (p.inFlight >= maxInFlight) return
        p.waiting.delete(hex)
        const r = ctx.state.requests.get(hex)
        if (r !== undefined && r.peer === undefined) assign(ctx, hex, r)
      }
    }

    /** release takes a request from the peer it was asked of (timeout, notfound, gone) and asks the next announcer. */
    const release = (ctx: Ctx, hex: string, r: TxRequest): void => {
      const p = r.peer === undefined ? undefined : ctx.state.peers.get(r.peer)
      r.peer = undefined
      if (p !== undefined) {
        p.inFlight--
        p.announced--
      }
      assign(ctx, hex, r)
      if (p !== undefined) fill(ctx, p)
    }

    /** finish forgets a request: the transaction arrived, or is in the pool by another way. */
    const finish = (ctx: Ctx, hex: string): void => {
      const { peers, requests } = ctx.state
      const r = requests.get(hex)
      if (r === undefined) return
      requests.delete(hex)
      for (const a of r.announcers) {
        const q = peers.get(a)
        if (q === undefined) continue
        q.announced--
        q.waiting.delete(hex)
      }
      const p = r.peer === undefined ? undefined : peers.get(r.peer)
      if (p !== undefined) {
        p.inFlight--
        p.announced--
        fill(ctx, p)
      }
    }

    /** seen: the transaction was refused, confirmed or accepted lately: nothing is asked of anyone about it. */
    const seen = (state: State, hex: string): boolean =>
      state.recentRejects.has(hex) || state.recentConfirmed.has(hex) || state.recentAccepted.has(hex)

    /**
     * want records that peer `p` has transaction `txid` and fetches it unless we have it, it was
     * refused or confirmed lately, or it is being fetched already (then `p` joins its announcers).
     */
    const want = (ctx: Ctx, p: PeerRelay, txid: TxId) =>
      Effect.gen(function* () {
        const { requests } = ctx.state
        const hex = toHex(txid)
        const id = p.handle.info.id
        if (seen(ctx.state, hex)) return
        const r = requests.get(hex)
        if (r !== undefined) {
          if (r.peer === id || r.announcers.includes(id) || p.announced >= maxAnnounced) return
          r.announcers.push(id)
          p.announced++
          if (r.peer === undefined) assign(ctx, hex, r)
          return
        }
        if (p.announced >= maxAnnounced) {
          yield* Effect.logDebug(`peer ${id}: too many announcements pending; ignoring tx ${hex}`)
          return
        }
        if (Option.isSome(yield* mempool.get(txid))) return
        const request: TxRequest = {
          txid: txid.slice() as TxId,
          peer: undefined,
          at: ctx.now,
          announcers: [id],
        }
        requests.set(hex, request)
        p.announced++
        assign(ctx, hex, request)
      })

    // -- pool events ---------------------------------------------------------------------------------

    const handlePoolEvent = (ctx: Ctx, event: MempoolEvent): void => {
      const { peers, recentRejects, recentConfirmed, recentAccepted } = ctx.state
      switch (event._tag) {
        case "TxAccepted": {
          const hex = toHex(event.entry.txid)
          finish(ctx, hex)
          recentRejects.delete(hex)
          remember(recentAccepted, hex, maxAccepted)
          for (const p of peers.values()) if (!p.known.has(hex)) p.queue.set(hex, event.entry.txid)
          return
        }
        case "TxRemoved": {
          const hex = toHex(event.txid)
          recentAccepted.delete(hex)
          for (const p of peers.values()) p.queue.delete(hex)
          if (event.why === "block") remember(recentConfirmed, hex, maxConfirmed)
          return
        }
      }
    }

    /** syncPool applies every pool event published so far, in order. */
    const syncPool = (ctx: Ctx) =>
      Effect.map(Queue.takeAll(poolEvents), (events) => {
        for (const event of events) handlePoolEvent(ctx, event)
      })

    // -- handlers ------------------------------------------------------------------------------------

    const handlePeerConnected = (ctx: Ctx, handle: PeerHandle): void => {
      connected.set(handle.info.id, handle)
      if (!ctx.state.peers.has(handle.info.id)) ctx.state.peers.set(handle.info.id, peerRelay(handle))
    }

    /** handlePeerDisconnected forgets the peer; what it was asked for goes to the next announcer. */
    const handlePeerDisconnected = (ctx: Ctx, id: PeerId): void => {
      const { peers, requests } = ctx.state
      connected.delete(id)
      if (!peers.delete(id)) return
      for (const [hex, r] of requests) {
        const i = r.announcers.indexOf(id)
        if (i >= 0) r.announcers.splice(i, 1)
        if (r.peer === id) release(ctx, hex, r)
        else if (r.peer === undefined && r.announcers.length === 0) requests.delete(hex)
      }
    }

    const handleInv = (ctx: Ctx, p: PeerRelay, msg: InvMessage) =>
      Effect.gen(function* () {
        for (const item of msg.items) {
          if (item.type !== INV_TX) continue
          const hex = toHex(item.hash)
          remember(p.known, hex, config.maxKnownPerPeer)
          p.queue.delete(hex)
          if (config.requestTransactions !== false) yield* want(ctx, p, item.hash as TxId)
        }
      })

    /** handleNotFound: the peer does not have it; the request moves on to the next announcer at once. */
    const handleNotFound = (ctx: Ctx, p: PeerRelay, msg: NotFoundMessage): void => {
      const { requests } = ctx.state
      const id = p.handle.info.id
      for (const item of msg.items) {
        if (item.type !== INV_TX) continue
        const hex = toHex(item.hash)
        const r = requests.get(hex)
        if (r === undefined) continue
        if (r.peer === id) {
          release(ctx, hex, r)
          continue
        }
        const i = r.announcers.indexOf(id)
        if (i < 0) continue
        r.announcers.splice(i, 1)
        p.announced--
        p.waiting.delete(hex)
        if (r.peer === undefined && r.announcers.length === 0) requests.delete(hex)
      }
    }

    /**
     * handleTx gives a delivered transaction (asked for or not, as Core) to the pool. Accepted: the peer
     * was first to give us a transaction (eviction protection). Orphan: its parents not in the pool are
     * asked of the same peer (a confirmed one too: the pool does not say which it misses, and the peer
     * answers notfound). Refused: remembered so it is not fetched again, and a rule violation (or bytes
     * that are no transaction) is reported to the spam filter, which bans at its threshold. A
     * transaction seen lately (in the pool, refused, confirmed) is dropped by its txid before the pool
     * decodes or checks anything (issue 7: duplicates cost no validation).
     */
    const handleTx = (ctx: Ctx, p: PeerRelay, payload: Uint8Array) =>
      Effect.gen(function* () {
        const { recentRejects } = ctx.state
        const id = p.handle.info.id
        const txid = txidOf(payload)
        const hex = toHex(txid)
        remember(p.known, hex, config.maxKnownPerPeer)
        p.queue.delete(hex)
        finish(ctx, hex)
        if (seen(ctx.state, hex)) return
        const exit = yield* Effect.exit(mempool.accept(payload, { allowOrphan: true }))
        yield* syncPool(ctx)
        if (Exit.isSuccess(exit)) {
          if (exit.value._tag === "Accepted") {
            yield* Effect.logDebug(`tx ${hex} from peer ${id} accepted`)
            yield* p.handle.updateStats((s) => ({ ...s, lastTxAt: ctx.now }))
            return
          }
          yield* Effect.logDebug(`tx ${hex} from peer ${id} is an orphan; asking it for the parents`)
          const tx = decodeTx(payload)
          if (Either.isLeft(tx)) return
          const parents = new Map<string, TxId>()
          for (const input of tx.right.inputs) parents.set(toHex(input.prevout.txid), input.prevout.txid)
          for (const parent of parents.values()) yield* want(ctx, p, parent)
          return
        }
        const failure = Cause.failureOption(exit.cause)
        if (Option.isNone(failure)) {
          // the pool could not decide (its verifier lost, shutdown): nothing is known about the tx
          yield* Effect.logWarning(`tx ${hex} from peer ${id}: the mempool failed`, exit.cause)
          return
        }
        const error: DecodeError | RuleError | MempoolReject = failure.value
        if (error._tag !== "DecodeError" && transientRejects.has(error.reason)) return
        remember(recentRejects, hex, maxRejects)
        yield* Effect.logDebug(`tx ${hex} from peer ${id} refused: ${error.message}`)
        if (error._tag === "DecodeError") yield* p.handle.misbehave(Misbehavior.Malformed({ error }))
        else if (error._tag === "RuleError" && error.banScore > 0)
          yield* p.handle.misbehave(Misbehavior.Invalid({ error }))
      })

    /** handleTick trickles each peer's queued announcements and moves timed-out requests on. */
    const handleTick = (ctx: Ctx) =>
      Effect.gen(function* () {
        for (const [hex, r] of ctx.state.requests) {
          if (r.peer === undefined || ctx.now - r.at < timeoutMs) continue
          yield* Effect.logDebug(`tx ${hex}: peer ${r.peer} did not deliver in time`)
          release(ctx, hex, r)
        }
        for (const p of ctx.state.peers.values()) {
          if (p.queue.size === 0) continue
          const items: Array<InvItem> = []
          for (const [hex, txid] of p.queue) {
            if (p.known.has(hex)) continue
            items.push({ type: INV_TX, hash: txid })
            remember(p.known, hex, config.maxKnownPerPeer)
          }
          p.queue.clear()
          for (const chunk of chunks(items)) yield* p.handle.send(new InvMessage({ items: chunk }))
        }
      })

    /** withPeer runs a message's handler if its peer is connected (a late message of a gone peer is dropped). */
    const withPeer = (ctx: Ctx, peer: PeerHandle, f: (p: PeerRelay) => Effect.Effect<void>) => {
      const p = ctx.state.peers.get(peer.info.id)
      return p === undefined ? Effect.logDebug(`ignoring a message of unknown peer ${peer.info.id}`) : f(p)
    }

    const handleCommand = (ctx: Ctx, cmd: Command): Effect.Effect<void> => {
      switch (cmd._tag) {
        case "PeerConnected":
          return Effect.sync(() => handlePeerConnected(ctx, cmd.peer))
        case "PeerDisconnected":
          return Effect.sync(() => handlePeerDisconnected(ctx, cmd.id))
        case "Receive":
          return withPeer(ctx, cmd.peer, (p) => {
            const msg = cmd.msg
            return msg._tag === "inv"
              ? handleInv(ctx, p, msg)
              : Effect.sync(() => handleNotFound(ctx, p, msg))
          })
        case "ReceiveTx":
          return withPeer(ctx, cmd.peer, (p) => handleTx(ctx, p, cmd.payload))
        case "Tick":
          return handleTick(ctx)
        case "Sync":
          return Effect.void
      }
    }

    /** handle applies the pool events so far, then the command, then sends the getdata it decided on. */
    const handle = (state: State, cmd: Command): Effect.Effect<State> =>
      Effect.gen(function* () {
        const ctx: Ctx = { state, now: yield* Clock.currentTimeMillis, getdata: new Map() }
        // a transaction refused under the old tip (non-final, spending what was missing) may be valid
        // under the new one: forget the refusals, as Core does on every new tip
        const tipEvents = yield* Queue.takeAll(chainEvents)
        if (Chunk.some(tipEvents, (e) => e._tag === "TipChanged")) state.recentRejects.clear()
        yield* syncPool(ctx)
        yield* handleCommand(ctx, cmd)
        for (const [id, items] of ctx.getdata) {
          const p = state.peers.get(id)
          if (p === undefined) continue
          for (const chunk of chunks(items)) yield* p.handle.send(new GetDataMessage({ items: chunk }))
        }
        return state
      })

    const actor = yield* Actor.make<Command, State, never, never>({
      name: "relay",
      capacity: mailboxCapacity,
      initial,
      handle,
    })

    // The waker: when pool events arrive while the actor is idle, nudge it to queue their announcements.
    yield* Effect.forkScoped(
      Effect.forever(
        Queue.take(wake).pipe(
          Effect.zipRight(Queue.takeAll(wake)),
          Effect.zipRight(actor.send(Command.Sync())),
        ),
      ),
    )
    // The ticker: trickle and timeouts.
    yield* Effect.forkScoped(
      Effect.forever(Effect.sleep(config.trickleInterval).pipe(Effect.zipRight(actor.send(Command.Tick())))),
    )

    const service: RelayService = {
      peerConnected: (peer) => actor.send(Command.PeerConnected({ peer })),
      peerDisconnected: (id) => actor.send(Command.PeerDisconnected({ id })),
      // a peer's messages queue within its quota: a flooder waits on itself, not everyone behind it
      receive: (peer, msg) => actor.sendFrom(peer.info.id, Command.Receive({ peer, msg })),
      receiveTx: (peer, payload) => actor.sendFrom(peer.info.id, Command.ReceiveTx({ peer, payload })),
    }
    return service
  })

/** layer provides the Relay actor over the Mempool (and the Chain's events: a new tip clears its reject memory). */
export const layer = (config: RelayConfig): Layer.Layer<Relay, never, Mempool | Chain> =>
  Layer.scoped(Relay, make(config))
