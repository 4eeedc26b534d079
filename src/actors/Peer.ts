import { Clock, Duration, Effect, Either, Option, Random, Ref, Stream } from "effect"
import { decodeBlockWithTxids } from "../consensus/checkBlock.js"
import { blockHashOf } from "../consensus/hash.js"
import { buildProof } from "../consensus/merkleProof.js"
import type { StorageError } from "../layers/ChainStore.js"
import type { Connection, Endpoint } from "../layers/Transport.js"
import { HEADER_BYTES } from "../schema/block.js"
import { encodeMessage, encodeRawFrame, FrameEvent, Framer, MAX_FRAME_PAYLOAD } from "../schema/frame.js"
import { toHex } from "../schema/hex.js"
import { bytesToHost, hostToBytes } from "../schema/netaddr.js"
import type { BlockHash, TxId } from "../schema/primitives.js"
import {
  AddrMessage,
  CFCHECKPT_INTERVAL,
  CFCheckptMessage,
  CFHeadersMessage,
  CFilterMessage,
  type Command,
  FILTER_TYPE_BASIC,
  GetAddrMessage,
  type GetCFCheckptMessage,
  type GetCFHeadersMessage,
  type GetCFiltersMessage,
  type GetDataMessage,
  type GetProofMessage,
  type GetSnapshotInfoMessage,
  type GetSnapshotMessage,
  HeadersMessage,
  INV_BLOCK,
  INV_TX,
  type InvItem,
  InvMessage,
  MAX_GETCFHEADERS,
  MAX_GETCFILTERS,
  MAX_HEADERS,
  MAX_SNAPSHOT_CHUNK_BYTES,
  NotFoundMessage,
  PingMessage,
  PongMessage,
  UdpAddrMessage,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../schema/wire.js"
import { AddrBook } from "./AddrBook.js"
import { remember } from "./bounded.js"
import { Chain } from "./Chain.js"
import { FilterIndex, type FilterRangeError } from "./FilterIndex.js"
import { LightClient } from "./LightClient.js"
import { Mempool } from "./Mempool.js"
import { initialPeerStats, NetProbe, type PeerHandle, type PeerId, type PeerInfo } from "./net.js"
import { Relay } from "./Relay.js"
import { Snapshots } from "./Snapshots.js"
import type { PeerGuard } from "./SpamFilter.js"
import { Sync } from "./Sync.js"
import { describe, Misbehavior } from "./spamPolicy.js"

/** PROTOCOL_VERSION is the version this node speaks (the first; later ones negotiate down to the lower). */
export const PROTOCOL_VERSION = 1

/** RAW_COMMANDS reach their actor undecoded: the Chain and the Mempool decode them once, there. */
const RAW_COMMANDS: ReadonlySet<Command> = new Set<Command>(["block", "tx"])

/** MAX_REQUESTED_BLOCKS bounds the memory of blocks asked of one peer and not yet delivered (Sync asks 16 at a time). */
const MAX_REQUESTED_BLOCKS = 1_024

/** entriesOf is how many entries a message carries, as its type's bucket counts them. */
const entriesOf = (msg: WireMessage): number => {
  switch (msg._tag) {
    case "inv":
    case "getdata":
    case "notfound":
      return msg.items.length
    case "addr":
    case "udpaddr":
      return msg.entries.length
    case "getproof":
      return msg.txids.length
    default:
      return 1
  }
}

/** PeerOptions: what a connection's Peer says about us, and its timeouts and budget. */
export interface PeerOptions {
  readonly magic: Uint8Array
  /** SERVICE_* bits of this node */
  readonly services: number
  readonly userAgent: string
  /** the port this node listens on (0: it does not), announced in version */
  readonly listenPort: number
  /** a configured peer (connect/addnode) */
  readonly static: boolean
  /** this connection's version nonce; the PeerManager knows all of them, to spot self-connections */
  readonly nonce: bigint
  /** the version/verack exchange must finish within this (limits.handshakeTimeoutSeconds) */
  readonly handshakeTimeout: Duration.Duration
  /** a ping is sent this often; its pong measures the round trip */
  readonly pingInterval: Duration.Duration
  /** a ping unanswered this long drops the peer */
  readonly pingTimeout: Duration.Duration
  /** nothing received for this long drops the peer */
  readonly idleTimeout: Duration.Duration
  /** unsent bytes beyond this drop the peer (it does not read) */
  readonly sendBudgetBytes: number
  /** getdata answers wait while more than this is unsent (serve at the pace the peer reads) */
  readonly serveHighWaterBytes: number
}

/** defaultPeerOptions: Core's timings (2 min pings, 20 min ping and idle timeouts) and a send budget of ~4 blocks. */
export const defaultPeerTimings = {
  handshakeTimeout: Duration.seconds(60),
  pingInterval: Duration.minutes(2),
  pingTimeout: Duration.minutes(20),
  idleTimeout: Duration.minutes(20),
  sendBudgetBytes: 4 * MAX_FRAME_PAYLOAD,
  serveHighWaterBytes: MAX_FRAME_PAYLOAD,
} as const

/** PeerHooks connect a Peer to the PeerManager that started it. */
export interface PeerHooks {
  /** isOwnNonce: a version carrying one of our own nonces means we dialled ourselves */
  readonly isOwnNonce: (nonce: bigint) => boolean
  /** ready registers a handshaken peer; false refuses it (duplicate, limits): it is disconnected */
  readonly ready: (peer: PeerHandle) => Effect.Effect<boolean>
  /** relayAddr passes addresses (of either kind) fit for relay to other peers */
  readonly relayAddr: (from: PeerHandle, message: AddrMessage | UdpAddrMessage) => Effect.Effect<void>
}

const ZERO_HOST = new Uint8Array(16)

/** splitInv separates transaction items (for Relay) from block items (for Sync). */
const splitInv = (items: ReadonlyArray<InvItem>) => {
  const txs: Array<InvItem> = []
  const blocks: Array<InvItem> = []
  for (const item of items) (item.type === INV_TX ? txs : blocks).push(item)
  return { txs, blocks }
}

/**
 * run is one connection's Peer actor: the fiber that owns `conn` from the first byte to the close.
 * It sends our version (at once when outbound, on the peer's version when inbound), answers with
 * verack, and once both versions and veracks crossed within the handshake timeout registers the peer
 * (`hooks.ready`), tells Sync and Relay, and routes what it reads: inv/notfound split by item type
 * between Relay (transactions) and Sync (blocks), headers and blocks to Sync, transactions to Relay,
 * addresses to the AddrBook; getdata and getheaders it serves itself, at the pace the peer reads.
 *
 * Messages are handled one at a time in arrival order, so a slow consumer slows only this peer's
 * reading (the transport then stops reading its socket). Returns when the connection ends, with the
 * reason; it never fails: a broken peer is a closed connection, not a crashed node.
 *
 * The spam filter's `guard` sees every byte and message first: bytes beyond the peer's byte bucket
 * pause reading; a message beyond its buckets is dropped unread and scored; framing errors, bad
 * checksums, undecodable payloads, anything but version/verack before the handshake and a second
 * version are scored, and the peer is disconnected when the score reaches the ban threshold (framing
 * errors and protocol violations disconnect at once).
 */
export const run = (
  id: PeerId,
  conn: Connection,
  options: PeerOptions,
  hooks: PeerHooks,
  guard: PeerGuard,
): Effect.Effect<string, never, Chain | Mempool | Sync | Relay | AddrBook> =>
  Effect.scoped(
    Effect.gen(function* () {
      const chain = yield* Chain
      const mempool = yield* Mempool
      const sync = yield* Sync
      const relay = yield* Relay
      const addrBook = yield* AddrBook
      const probe = yield* NetProbe
      /** the UTXO snapshot server and fetcher (issue 9); without it snapshot messages are ignored */
      const snapshots = yield* Effect.serviceOption(Snapshots)
      /** the compact filter index, on full and miner nodes (issue 9); without it filter requests are violations */
      const filterIndex = yield* Effect.serviceOption(FilterIndex)
      /** a light node's LightClient (issue 9): it takes filter answers and the blocks it asked for */
      const light = yield* Effect.serviceOption(LightClient)
      const stats = yield* Ref.make(initialPeerStats)
      const framer = new Framer(options.magic, RAW_COMMANDS)
      const nonce = options.nonce
      let closedReason: string | undefined
      let lastRecv = yield* Clock.currentTimeMillis
      let pingOut: { readonly nonce: bigint; readonly at: number } | undefined
      let theirVersion: VersionMessage | undefined
      let gotVerack = false
      let sentVersion = false
      let handle: PeerHandle | undefined
      let servedGetAddr = false
      /** blocks asked of this peer (hex, oldest first): a block not in here is unrequested */
      const requestedBlocks = new Set<string>()

      const observe = (
        direction: "in" | "out",
        command: Command,
        message: WireMessage | undefined,
        payload?: Uint8Array,
      ) =>
        probe.observe({
          direction,
          local: conn.local,
          remote: conn.remote,
          peer: id,
          command,
          message,
          payload,
        })

      const disconnect = (reason: string) =>
        Effect.gen(function* () {
          if (closedReason !== undefined) return
          closedReason = reason
          yield* Effect.logDebug(
            `peer ${id} ${conn.remote.host}:${conn.remote.port}: disconnecting: ${reason}`,
          )
          yield* conn.close
        })

      /** write queues a frame; a peer whose unsent bytes pass the budget is aborted. */
      const write = (frame: Uint8Array) =>
        Effect.gen(function* () {
          if (closedReason !== undefined) return
          const ok = yield* Effect.isSuccess(conn.write(frame))
          if (!ok) return yield* disconnect("connection closed")
          yield* Ref.update(stats, (s) => ({ ...s, bytesSent: s.bytesSent + frame.length }))
          if ((yield* conn.pendingWriteBytes) > options.sendBudgetBytes) {
            closedReason = "send budget exceeded (the peer does not read)"
            yield* Effect.logInfo(`peer ${id}: ${closedReason}; dropped`)
            yield* conn.abort
          }
        })

      const send = (msg: WireMessage) =>
        Effect.suspend(() => {
          observe("out", msg._tag, msg)
          if (msg._tag === "getdata") {
            for (const item of msg.items) {
              if (item.type !== INV_BLOCK) continue
              remember(requestedBlocks, toHex(item.hash), MAX_REQUESTED_BLOCKS)
            }
          }
          return write(encodeMessage(options.magic, msg))
        })

      const sendRaw = (command: Command, payload: Uint8Array) =>
        Effect.suspend(() => {
          observe("out", command, undefined, payload)
          return write(encodeRawFrame(options.magic, command, payload))
        })

      /** drained waits (polling the Clock) until the unsent bytes fall under the high-water mark; false if the peer went away. */
      const drained = Effect.gen(function* () {
        while (closedReason === undefined && (yield* conn.pendingWriteBytes) > options.serveHighWaterBytes) {
          yield* Effect.sleep(Duration.millis(10))
        }
        return closedReason === undefined
      })

      const sendVersion = Effect.gen(function* () {
        if (sentVersion) return
        sentVersion = true
        const tip = yield* chain.tip
        yield* send(
          new VersionMessage({
            protocolVersion: PROTOCOL_VERSION,
            services: options.services,
            bestHeight: tip.height,
            userAgent: options.userAgent,
            nonce,
            listenPort: options.listenPort,
            theirAddress: { host: hostToBytes(conn.remote.host) ?? ZERO_HOST, port: conn.remote.port },
          }),
        )
      })

      /** misbehave scores `m` with the spam filter; a banned peer (score at the threshold) is dropped. */
      const misbehave = (m: Misbehavior) =>
        Effect.gen(function* () {
          const verdict = yield* guard.misbehave(m)
          yield* Ref.update(stats, (s) => ({ ...s, banScore: verdict.score }))
          yield* Effect.logDebug(`peer ${id}: ${describe(m)}; score ${verdict.score}`)
          if (verdict.banned) yield* disconnect(`banned: ${describe(m)}`)
        })

      /** violation scores a protocol violation and drops the peer whatever its score. */
      const violation = (detail: string) =>
        Effect.zipRight(misbehave(Misbehavior.ProtocolViolation({ detail })), disconnect(detail))

      const makeHandle = (version: VersionMessage, connectedAt: number): PeerHandle => {
        const theirView: Endpoint = {
          host: bytesToHost(version.theirAddress.host),
          port: version.theirAddress.port,
        }
        const info: PeerInfo = {
          id,
          addr: conn.remote,
          inbound: conn.direction === "inbound",
          transport: conn.transport ?? "tcp",
          static: options.static,
          version: Math.min(version.protocolVersion, PROTOCOL_VERSION),
          subver: version.userAgent,
          services: version.services,
          startingHeight: version.bestHeight,
          listenPort: version.listenPort,
          theirView,
          connectedAt,
        }
        return {
          info,
          send,
          sendRaw,
          disconnect,
          stats: Ref.get(stats),
          updateStats: (f) => Ref.update(stats, f),
          misbehave,
        }
      }

      /** serveGetData answers blocks from storage and transactions from the mempool; the rest in one notfound. */
      const serveGetData = (msg: GetDataMessage) =>
        Effect.gen(function* () {
          const missing: Array<InvItem> = []
          for (const item of msg.items) {
            if (!(yield* drained)) return
            if (item.type === INV_BLOCK) {
              const bytes = yield* chain
                .block(item.hash as BlockHash)
                .pipe(
                  Effect.catchAll((e) =>
                    Effect.logWarning(`getdata: reading block ${toHex(item.hash)}: ${e.message}`).pipe(
                      Effect.as(Option.none<Uint8Array>()),
                    ),
                  ),
                )
              if (Option.isSome(bytes)) yield* sendRaw("block", bytes.value)
              else missing.push(item)
            } else {
              const entry = yield* mempool.get(item.hash as TxId)
              if (Option.isSome(entry)) yield* sendRaw("tx", entry.value.bytes)
              else missing.push(item)
            }
          }
          if (missing.length > 0) yield* send(new NotFoundMessage({ items: missing }))
        })

      /**
       * serveSnapshotRequest answers getsnapinfo/getsnapshot from the Snapshots service (issue 9) at the
       * pace the peer reads; a chunk request is charged a whole chunk's bytes to the peer's byte bucket
       * (as a getproof is charged its block), so a chunk flood slows to the pace of a peer sending us
       * that much. Without the service, or for a snapshot not served here, there is no answer.
       */
      const serveSnapshotRequest = (peer: PeerHandle, msg: GetSnapshotInfoMessage | GetSnapshotMessage) =>
        Effect.gen(function* () {
          if (Option.isNone(snapshots) || !(yield* drained)) return
          if (msg._tag === "getsnapshot") {
            const pause = yield* guard.throttle(MAX_SNAPSHOT_CHUNK_BYTES)
            if (pause > 0) yield* Effect.sleep(Duration.millis(pause))
          }
          yield* snapshots.value.serveRequest(peer, msg)
        })

      /**
       * serveGetProof answers a getproof with a merkle proof of those of its txids the block holds
       * (issue 9), read from storage like a getdata's block; an unknown block gets no answer.
       */
      const serveGetProof = (msg: GetProofMessage) =>
        Effect.gen(function* () {
          if (!(yield* drained)) return
          const bytes = yield* chain
            .block(msg.blockHash as BlockHash)
            .pipe(
              Effect.catchAll((e) =>
                Effect.logWarning(`getproof: reading block ${toHex(msg.blockHash)}: ${e.message}`).pipe(
                  Effect.as(Option.none<Uint8Array>()),
                ),
              ),
            )
          if (Option.isNone(bytes)) return
          // the proof is small but costs a block's decoding and hashing: charge the block's bytes to the
          // peer's byte bucket, so a getproof flood slows to the pace of a peer sending us those blocks
          const pause = yield* guard.throttle(bytes.value.length)
          if (pause > 0) yield* Effect.sleep(Duration.millis(pause))
          const decoded = decodeBlockWithTxids(bytes.value)
          if (Either.isLeft(decoded))
            return yield* Effect.logWarning(
              `getproof: stored block ${toHex(msg.blockHash)}: ${decoded.left.message}`,
            )
          const wanted = new Set(msg.txids.map(toHex))
          const { block, txids } = decoded.right
          yield* sendRaw(
            "proof",
            buildProof(
              block.header,
              txids,
              txids.map((txid) => wanted.has(toHex(txid))),
            ),
          )
        })

      /** handshake processes version and verack until both sides are done; true once ready. */
      const onHandshakeMessage = (msg: WireMessage) =>
        Effect.gen(function* () {
          if (msg._tag === "version") {
            if (theirVersion !== undefined) return yield* violation("a second version message")
            if (hooks.isOwnNonce(msg.nonce)) return yield* disconnect("connected to self")
            theirVersion = msg
            yield* sendVersion
            yield* send(new VerackMessage())
          } else if (msg._tag === "verack") {
            if (theirVersion === undefined) return yield* violation("verack before version")
            gotVerack = true
          } else {
            return yield* violation(`${msg._tag} before the handshake`)
          }
          if (theirVersion === undefined || !gotVerack || closedReason !== undefined) return
          const peer = makeHandle(theirVersion, yield* Clock.currentTimeMillis)
          if (!(yield* hooks.ready(peer))) return yield* disconnect("refused by the peer manager")
          handle = peer
          yield* sync.peerConnected(peer)
          yield* relay.peerConnected(peer)
          if (Option.isSome(snapshots)) yield* snapshots.value.peerConnected(peer)
          if (Option.isSome(light)) yield* light.value.peerConnected(peer)
          if (!peer.info.inbound) yield* send(new GetAddrMessage())
        })

      const onMessage = (peer: PeerHandle, msg: WireMessage): Effect.Effect<void> => {
        switch (msg._tag) {
          case "ping":
            return send(new PongMessage({ nonce: msg.nonce }))
          case "pong":
            return Effect.gen(function* () {
              if (pingOut === undefined || pingOut.nonce !== msg.nonce) return
              const now = yield* Clock.currentTimeMillis
              const pingMs = now - pingOut.at
              pingOut = undefined
              yield* Ref.update(stats, (s) => ({ ...s, pingMs }))
            })
          case "inv":
          case "notfound": {
            const { txs, blocks } = splitInv(msg.items)
            const make = (items: Array<InvItem>) =>
              msg._tag === "inv" ? new InvMessage({ items }) : new NotFoundMessage({ items })
            return Effect.gen(function* () {
              if (txs.length > 0) yield* relay.receive(peer, make(txs))
              if (blocks.length > 0) yield* sync.receive(peer, make(blocks))
            })
          }
          case "getdata":
            return serveGetData(msg)
          case "getsnapinfo":
          case "getsnapshot":
            return serveSnapshotRequest(peer, msg)
          case "snapinfo":
          case "snapchunk":
            return Option.isSome(snapshots) ? snapshots.value.receive(peer, msg) : Effect.void
          case "getproof":
            return serveGetProof(msg)
          case "proof":
            return Effect.void // a full node asks for no proofs (the light role will route them)
          case "getheaders":
            return Effect.flatMap(
              chain.headersAfter(msg.locator as ReadonlyArray<BlockHash>, msg.stop as BlockHash, MAX_HEADERS),
              (headers) => send(new HeadersMessage({ headers: [...headers] })),
            )
          case "headers":
          case "sendheaders":
            return sync.receive(peer, msg)
          case "getaddr":
            // answered once per connection, to inbound peers only (Core): no scraping the book
            if (!peer.info.inbound || servedGetAddr) return Effect.void
            servedGetAddr = true
            return Effect.zipRight(
              Effect.flatMap(addrBook.getAddr, (entries) =>
                entries.length === 0 ? Effect.void : send(new AddrMessage({ entries: [...entries] })),
              ),
              Effect.flatMap(addrBook.getUdpAddr, (entries) =>
                entries.length === 0 ? Effect.void : send(new UdpAddrMessage({ entries: [...entries] })),
              ),
            )
          case "addr":
            return Effect.flatMap(addrBook.addGossip(peer.info, msg.entries), (relayed) =>
              relayed.length === 0
                ? Effect.void
                : hooks.relayAddr(peer, new AddrMessage({ entries: [...relayed] })),
            )
          case "udpaddr":
            return Effect.flatMap(addrBook.addUdpGossip(peer.info, msg.entries), (relayed) =>
              relayed.length === 0
                ? Effect.void
                : hooks.relayAddr(peer, new UdpAddrMessage({ entries: [...relayed] })),
            )
          case "getcfilters":
          case "getcfheaders":
          case "getcfcheckpt":
            return serveFilterRequest(msg)
          case "cfilter":
          case "cfheaders":
            // answers to a light node's requests; a full node asks none
            return Option.isSome(light) ? light.value.receive(peer, msg) : Effect.void
          case "cfcheckpt":
            return Effect.void
          case "reject":
            return Effect.logDebug(`peer ${id} rejected our ${msg.command}: ${msg.reason}`)
          case "version":
          case "verack":
            return violation(`a second ${msg._tag}`)
          case "tx":
          case "block":
            return Effect.void // arrive raw (RAW_COMMANDS)
        }
      }

      /** onBlock passes a block on if it was asked for, or if the unrequested allowance has room. */
      const onBlock = (peer: PeerHandle, payload: Uint8Array) =>
        Effect.gen(function* () {
          // a block the snapshot's background validation asked for (issue 9): it takes it, Sync never sees it
          if (Option.isSome(snapshots) && (yield* snapshots.value.receiveBlock(peer, payload))) return
          const hex =
            payload.length >= HEADER_BYTES ? toHex(blockHashOf(payload.subarray(0, HEADER_BYTES))) : ""
          if (!requestedBlocks.delete(hex) && !(yield* guard.unrequested("block"))) return yield* afterDrop
          // a light node asked for it (a filter match): the LightClient checks it, the Chain never sees it
          if (Option.isSome(light)) yield* light.value.receiveBlock(peer, payload)
          else yield* sync.receiveBlock(peer, payload)
        })

      /** afterDrop mirrors the guard's score into the stats and drops a banned peer. */
      const afterDrop = Effect.gen(function* () {
        const { score, banned } = yield* guard.standing
        yield* Ref.update(stats, (s) => ({ ...s, banScore: score }))
        if (banned) yield* disconnect("banned: flooding")
      })

      /**
       * serveFilterRequest answers getcfilters, getcfheaders and getcfcheckpt from the FilterIndex
       * (BIP157), cfilters one at a time at the pace the peer reads. The blocks asked are charged to the
       * peer's filters bucket (excess: dropped and scored as a flood). A request we cannot serve by
       * the rules (no index here: we announced no SERVICE_FILTERS; another filter type; an unknown or
       * inactive stop hash; a start above the stop; more blocks than BIP157 allows) is dropped and
       * scored as a protocol violation; one reaching blocks the index has not caught up with is
       * ignored (our lag, not the peer's fault).
       */
      const serveFilterRequest = (msg: GetCFiltersMessage | GetCFHeadersMessage | GetCFCheckptMessage) =>
        Effect.gen(function* () {
          const refuse = (detail: string) =>
            misbehave(Misbehavior.ProtocolViolation({ detail: `${msg._tag}: ${detail}` }))
          if (Option.isNone(filterIndex)) return yield* refuse("compact filters are not served here")
          if (msg.filterType !== FILTER_TYPE_BASIC) return yield* refuse(`filter type ${msg.filterType}`)
          const index = filterIndex.value
          const stopHash = msg.stopHash as BlockHash
          /** failed: a storage error is logged, our lag ignored, the peer's fault scored */
          const failed = (e: FilterRangeError | StorageError) =>
            e._tag === "StorageError"
              ? Effect.logWarning(`${msg._tag}: ${e.message}`)
              : e.reason === "not-indexed"
                ? Effect.logDebug(`${msg._tag}: ${e.message}`)
                : refuse(e.reason)
          if (msg._tag === "getcfcheckpt") {
            const headers = yield* Effect.either(index.checkpoints(stopHash, CFCHECKPT_INTERVAL))
            if (headers._tag === "Left") return yield* failed(headers.left)
            if (!(yield* guard.admitFilters(Math.max(1, headers.right.length)))) return yield* afterDrop
            return yield* send(
              new CFCheckptMessage({
                filterType: FILTER_TYPE_BASIC,
                stopHash,
                filterHeaders: [...headers.right],
              }),
            )
          }
          const max = msg._tag === "getcfilters" ? MAX_GETCFILTERS : MAX_GETCFHEADERS
          const result = yield* Effect.either(index.headersRange(msg.startHeight, stopHash, max))
          if (result._tag === "Left") return yield* failed(result.left)
          const range = result.right
          if (!(yield* guard.admitFilters(range.blocks.length))) return yield* afterDrop
          if (msg._tag === "getcfheaders") {
            return yield* send(
              new CFHeadersMessage({
                filterType: FILTER_TYPE_BASIC,
                stopHash,
                previousFilterHeader: range.previousHeader,
                filterHashes: range.blocks.map((b) => b.filterHash),
              }),
            )
          }
          for (const block of range.blocks) {
            if (!(yield* drained)) return
            const filter = yield* index
              .filter(block.hash)
              .pipe(
                Effect.catchAll((e) =>
                  Effect.as(Effect.logWarning(`getcfilters: ${e.message}`), Option.none<Uint8Array>()),
                ),
              )
            if (Option.isNone(filter)) return
            yield* send(
              new CFilterMessage({
                filterType: FILTER_TYPE_BASIC,
                blockHash: block.hash,
                filter: filter.value,
              }),
            )
          }
        })

      /** onEvent handles one frame event; `closing` marks the framing error that closed the Framer (the last event of a push). */
      const onEvent = (event: FrameEvent, closing: boolean): Effect.Effect<void> =>
        FrameEvent.$match(event, {
          Error: ({ error }) =>
            closing
              ? Effect.zipRight(
                  misbehave(Misbehavior.BadFrame({ error })),
                  disconnect(`bad frame: ${error.message}`),
                )
              : misbehave(
                  error.what === "frame.checksum"
                    ? Misbehavior.BadChecksum()
                    : Misbehavior.Malformed({ error }),
                ),
          Raw: ({ command, payload }) =>
            Effect.gen(function* () {
              observe("in", command, undefined, payload)
              if (handle === undefined) return yield* violation(`${command} before the handshake`)
              if (!(yield* guard.admit(command, 1))) return yield* afterDrop
              return command === "block"
                ? yield* onBlock(handle, payload)
                : yield* relay.receiveTx(handle, payload)
            }),
          Message: ({ message }) =>
            Effect.gen(function* () {
              observe("in", message._tag, message)
              if (!(yield* guard.admit(message._tag, entriesOf(message)))) return yield* afterDrop
              return handle === undefined
                ? yield* onHandshakeMessage(message)
                : yield* onMessage(handle, message)
            }),
        })

      // -- timers: handshake deadline, pings, idleness ------------------------------------------------
      yield* Effect.forkScoped(
        Effect.sleep(options.handshakeTimeout).pipe(
          Effect.zipRight(
            Effect.suspend(() => (handle === undefined ? disconnect("handshake timeout") : Effect.void)),
          ),
        ),
      )
      yield* Effect.forkScoped(
        Effect.forever(
          Effect.gen(function* () {
            yield* Effect.sleep(options.pingInterval)
            const now = yield* Clock.currentTimeMillis
            if (now - lastRecv > Duration.toMillis(options.idleTimeout))
              return yield* disconnect("idle timeout")
            if (pingOut !== undefined) {
              if (now - pingOut.at > Duration.toMillis(options.pingTimeout)) yield* disconnect("ping timeout")
              return
            }
            if (handle === undefined) return
            const n = BigInt(yield* Random.nextIntBetween(1, 2 ** 30))
            pingOut = { nonce: n, at: now }
            yield* send(new PingMessage({ nonce: n }))
          }),
        ),
      )

      // -- the read loop ----------------------------------------------------------------------------------
      if (conn.direction === "outbound") yield* sendVersion
      yield* conn.read.pipe(
        Stream.runForEach((chunk) =>
          Effect.gen(function* () {
            lastRecv = yield* Clock.currentTimeMillis
            yield* Ref.update(stats, (s) => ({ ...s, bytesRecv: s.bytesRecv + chunk.length }))
            const events = framer.push(chunk)
            for (let i = 0; i < events.length; i++) {
              if (closedReason !== undefined) return
              yield* onEvent(events[i]!, framer.closed && i === events.length - 1)
            }
            // over its byte rate: stop reading for a while (the peer's send buffer fills, not our memory)
            const pause = yield* guard.throttle(chunk.length)
            if (pause > 0 && closedReason === undefined) yield* Effect.sleep(Duration.millis(pause))
          }),
        ),
        Effect.catchAll((e) => disconnect(e.message)),
      )
      yield* disconnect("closed by the peer")
      if (handle !== undefined) {
        yield* sync.peerDisconnected(id)
        yield* relay.peerDisconnected(id)
        if (Option.isSome(snapshots)) yield* snapshots.value.peerDisconnected(id)
        if (Option.isSome(light)) yield* light.value.peerDisconnected(id)
      }
      return closedReason ?? "closed"
    }),
  ).pipe(Effect.annotateLogs("peer", id))
