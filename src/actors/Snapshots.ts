import * as fs from "node:fs"
import * as path from "node:path"
import { Context, Deferred, Duration, Effect, Either, Layer, Option, Ref, type Scope } from "effect"
import { blockError } from "../consensus/errors.js"
import { blockHashOf, sha256 } from "../consensus/hash.js"
import type { NetworkParams } from "../consensus/params.js"
import {
  chunkBytesOf,
  decodeSnapshotHeader,
  decodeSnapshotHeaders,
  SNAPSHOT_FIXED_BYTES,
  SnapshotError,
  type SnapshotHeader,
  snapshotCommitted,
  snapshotFixedCount,
  snapshotHeaderBytes,
  snapshotLayout,
} from "../consensus/snapshot.js"
import type { StorageError } from "../layers/ChainStore.js"
import { HEADER_BYTES } from "../schema/block.js"
import { bytesEqual, toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import {
  GetDataMessage,
  GetSnapshotMessage as GetSnapshot,
  GetSnapshotInfoMessage as GetSnapshotInfo,
  type GetSnapshotInfoMessage,
  type GetSnapshotMessage,
  INV_BLOCK,
  SnapshotChunkMessage,
  SnapshotInfoMessage,
} from "../schema/wire.js"
import { Chain, type SnapshotSource, type SnapshotState } from "./Chain.js"
import type { PeerHandle, PeerId } from "./net.js"
import { Misbehavior } from "./spamPolicy.js"

// ---------------------------------------------------------------------------------------------------
// Reading snapshot files

const ioError = (what: string) => (e: unknown) =>
  new SnapshotError({ reason: "io", detail: `${what}: ${e instanceof Error ? e.message : String(e)}` })

/** readAt reads exactly `length` bytes at `position` of an open file, or fails with bad-format (truncated). */
const readAt = (handle: fs.promises.FileHandle, file: string, position: number, length: number) =>
  Effect.tryPromise({
    try: async () => {
      const buffer = new Uint8Array(length)
      const { bytesRead } = await handle.read(buffer, 0, length, position)
      return bytesRead === length ? buffer : undefined
    },
    catch: ioError(`reading ${file}`),
  }).pipe(
    Effect.flatMap((b) =>
      b === undefined
        ? Effect.fail(new SnapshotError({ reason: "bad-format", detail: `${file} is truncated` }))
        : Effect.succeed(b),
    ),
  )

/** SnapshotFileHeader is a snapshot file's checked header, its bytes, and the file's layout. */
interface SnapshotFileHeader {
  readonly file: string
  readonly header: SnapshotHeader
  readonly headerBytes: Uint8Array
  readonly layout: ReturnType<typeof snapshotLayout>
}

/**
 * readSnapshotHeader reads and checks a snapshot file's header on an open handle: format,
 * self-consistent snapshot id, this network's magic, the file's exact length.
 */
const readSnapshotHeader = (handle: fs.promises.FileHandle, file: string, params: NetworkParams) =>
  Effect.gen(function* () {
    const badFormat = (detail: string) =>
      new SnapshotError({ reason: "bad-format", detail: `${file}: ${detail}` })
    const size = (yield* Effect.tryPromise({ try: () => handle.stat(), catch: ioError(`reading ${file}`) }))
      .size
    const fixed = snapshotFixedCount(yield* readAt(handle, file, 0, SNAPSHOT_FIXED_BYTES))
    if (Either.isLeft(fixed)) return yield* badFormat(fixed.left.message)
    const headerBytes = yield* readAt(handle, file, 0, snapshotHeaderBytes(fixed.right))
    const decoded = decodeSnapshotHeader(headerBytes)
    if (Either.isLeft(decoded)) return yield* badFormat(decoded.left.message)
    const header = decoded.right
    if (!bytesEqual(header.networkMagic, params.magic))
      return yield* new SnapshotError({
        reason: "wrong-network",
        detail: `${file} is a snapshot of another network than ${params.name}`,
      })
    const layout = snapshotLayout(header)
    if (size !== layout.totalBytes)
      return yield* badFormat(`${size} bytes, the header describes ${layout.totalBytes}`)
    return { file, header, headerBytes, layout } satisfies SnapshotFileHeader
  })

const openHandle = (file: string) =>
  Effect.acquireRelease(
    Effect.tryPromise({ try: () => fs.promises.open(file, "r"), catch: ioError(`opening ${file}`) }),
    (h) => Effect.promise(() => h.close()),
  )

/**
 * openSnapshotFile opens a snapshot file for reading within a scope: it checks the header
 * (`readSnapshotHeader`) and reads the header chain's bytes, and reads chunks on demand at their
 * offsets. The header chain, chunks and MuHash are checked by the Chain when it loads them.
 */
export const openSnapshotFile = (
  file: string,
  params: NetworkParams,
): Effect.Effect<SnapshotSource, SnapshotError, Scope.Scope> =>
  Effect.gen(function* () {
    const target = path.resolve(file)
    const handle = yield* openHandle(target)
    const { header, layout } = yield* readSnapshotHeader(handle, target, params)
    const headers = decodeSnapshotHeaders(
      yield* readAt(handle, target, layout.headersAt, layout.chunksAt - layout.headersAt),
      header.baseHeight + 1,
    )
    if (Either.isLeft(headers))
      return yield* new SnapshotError({ reason: "bad-format", detail: `${target}: ${headers.left.message}` })
    return {
      header,
      headers: headers.right,
      chunk: (index: number) =>
        index < 0 || index >= header.chunkHashes.length
          ? Effect.fail(new SnapshotError({ reason: "bad-chunk", detail: `no chunk ${index}` }))
          : readAt(handle, target, layout.chunkAt(index), chunkBytesOf(header, index)),
    }
  })

// ---------------------------------------------------------------------------------------------------
// The service

/** SnapshotsConfig: the network, and the P2P fetch's timings and pipeline depth. */
export interface SnapshotsConfig {
  readonly params: NetworkParams
  /** how long a peer may take to answer getsnapinfo */
  readonly infoTimeout: Duration.Duration
  /** how long a peer may take to answer one getsnapshot before the chunk is asked elsewhere */
  readonly chunkTimeout: Duration.Duration
  /** chunk requests in flight per peer (issue 9: at most 4) */
  readonly maxInFlightPerPeer: number
  /** how long a fetch waits for a peer serving the snapshot, and for Sync to bring the base's header */
  readonly waitFor: Duration.Duration
  /** how long a peer may take to answer the background validation's getdata for one block */
  readonly blockTimeout: Duration.Duration
}

/** defaultSnapshotsConfig: 10 s for a header, 30 s for a chunk, 5 s for a block, 4 in flight per peer, 5 minutes of waiting. */
export const defaultSnapshotsConfig = (params: NetworkParams): SnapshotsConfig => ({
  params,
  infoTimeout: Duration.seconds(10),
  chunkTimeout: Duration.seconds(30),
  maxInFlightPerPeer: 4,
  waitFor: Duration.minutes(5),
  blockTimeout: Duration.seconds(5),
})

/**
 * SnapshotsService serves UTXO snapshot files to peers and fetches snapshots from them (issue 9).
 * Peer actors call `peerConnected`/`peerDisconnected`, `serveRequest` (getsnapinfo, getsnapshot:
 * answered from a served file, silence otherwise) and `receive` (snapinfo, snapchunk: handed
 * to the fetch that asked, ignored otherwise). Any fiber may call `serve` and `fetch`.
 */
export interface SnapshotsService {
  /** serve makes a snapshot file available to peers (its header is checked and kept; chunks are read on demand). */
  readonly serve: (file: string) => Effect.Effect<SnapshotHeader, SnapshotError>
  /** served lists the snapshot ids (hex) this node serves. */
  readonly served: Effect.Effect<ReadonlyArray<string>>
  readonly peerConnected: (peer: PeerHandle) => Effect.Effect<void>
  readonly peerDisconnected: (id: PeerId) => Effect.Effect<void>
  readonly serveRequest: (
    peer: PeerHandle,
    msg: GetSnapshotInfoMessage | GetSnapshotMessage,
  ) => Effect.Effect<void>
  readonly receive: (peer: PeerHandle, msg: SnapshotInfoMessage | SnapshotChunkMessage) => Effect.Effect<void>
  /**
   * fetch downloads the snapshot `snapshotId` from the connected peers: its header from every peer
   * that has it (a header whose id is not `snapshotId` is the peer's lie: scored), then its chunks in
   * parallel, round-robin over those peers with at most `maxInFlightPerPeer` requests each; a chunk
   * whose sha256 is not the header's is refused, its peer penalised (ban score 100) and the chunk asked
   * of another; a timeout asks another too. Fails when no peer serves it or a chunk cannot be had.
   */
  readonly fetch: (
    snapshotId: Uint8Array,
  ) => Effect.Effect<
    { readonly header: SnapshotHeader; readonly chunks: ReadonlyArray<Uint8Array> },
    SnapshotError
  >
  /**
   * fetchBlock asks the connected peers for one block by hash, for the background validation below a
   * snapshot (it goes past Sync, which fetches only above the tip): one peer at a time, those that
   * failed least first, `blockTimeout` each. None when no peer gave it (the caller checks the block).
   */
  readonly fetchBlock: (hash: BlockHash) => Effect.Effect<Option.Option<Uint8Array>>
  /** receiveBlock takes a block `fetchBlock` is waiting for from that peer (true); any other is Sync's (false). */
  readonly receiveBlock: (peer: PeerHandle, payload: Uint8Array) => Effect.Effect<boolean>
}

/** Snapshots is the service tag. */
export class Snapshots extends Context.Tag("fibercoin/Snapshots")<Snapshots, SnapshotsService>() {}

/** badChunk is the misbehaviour of a peer that sent a chunk contradicting the committed hash list. */
const badChunk = (idHex: string, index: number) =>
  Misbehavior.Invalid({
    error: blockError(
      "bad-snapshot-chunk",
      `chunk ${index} of snapshot ${idHex} does not match its committed hash`,
    ),
  })

/** make builds the service; its maps are touched only in synchronous steps (no interleaving inside one). */
export const make = (config: SnapshotsConfig) =>
  Effect.gen(function* () {
    const served = new Map<string, SnapshotFileHeader>()
    const peers = yield* Ref.make(new Map<PeerId, PeerHandle>())
    /** answers awaited: `<peer>/info` and `<peer>/<id hex>/<chunk>` */
    const waiters = new Map<string, Deferred.Deferred<Uint8Array>>()

    const serve = (file: string) =>
      Effect.scoped(
        Effect.gen(function* () {
          const target = path.resolve(file)
          const handle = yield* openHandle(target)
          const read = yield* readSnapshotHeader(handle, target, config.params)
          served.set(toHex(read.header.snapshotId), read)
          yield* Effect.logInfo(`snapshot: serving ${toHex(read.header.snapshotId)} from ${target}`)
          return read.header
        }),
      )

    /**
     * readChunk reads one served chunk synchronously (≤ 810 kB, about a millisecond, like an LMDB
     * read): an answer never waits on the event loop's I/O, so a simulated network under TestClock
     * sees it arrive at once, however loaded the machine.
     */
    const readChunk = (s: SnapshotFileHeader, index: number) =>
      Effect.try({
        try: () => {
          const length = chunkBytesOf(s.header, index)
          const buffer = new Uint8Array(length)
          const fd = fs.openSync(s.file, "r")
          try {
            if (fs.readSync(fd, buffer, 0, length, s.layout.chunkAt(index)) !== length)
              throw new Error(`${s.file} is truncated`)
          } finally {
            fs.closeSync(fd)
          }
          return buffer
        },
        catch: ioError(`reading ${s.file}`),
      })

    const serveRequest = (peer: PeerHandle, msg: GetSnapshotInfoMessage | GetSnapshotMessage) =>
      Effect.gen(function* () {
        const s = served.get(toHex(msg.snapshotId))
        if (s === undefined) return
        if (msg._tag === "getsnapinfo")
          return yield* peer.send(new SnapshotInfoMessage({ header: s.headerBytes }))
        if (msg.chunkIndex >= s.header.chunkHashes.length) return
        const bytes = yield* Effect.either(readChunk(s, msg.chunkIndex))
        if (Either.isLeft(bytes)) return yield* Effect.logWarning(`snapshot: serving: ${bytes.left.message}`)
        yield* peer.send(
          new SnapshotChunkMessage({
            snapshotId: msg.snapshotId,
            chunkIndex: msg.chunkIndex,
            entries: bytes.right,
          }),
        )
      })

    const receive = (peer: PeerHandle, msg: SnapshotInfoMessage | SnapshotChunkMessage) =>
      Effect.suspend(() => {
        const key =
          msg._tag === "snapinfo"
            ? `${peer.info.id}/info`
            : `${peer.info.id}/${toHex(msg.snapshotId)}/${msg.chunkIndex}`
        const waiter = waiters.get(key)
        if (waiter === undefined) return Effect.void // unasked: dropped
        waiters.delete(key)
        return Deferred.succeed(waiter, msg._tag === "snapinfo" ? msg.header : msg.entries)
      })

    /** ask sends `msg` to `peer` and waits for the answer under `key`, at most `timeout` (none: timed out). */
    const ask = (
      peer: PeerHandle,
      key: string,
      msg: GetSnapshotInfo | GetSnapshot,
      timeout: Duration.Duration,
    ) =>
      Effect.gen(function* () {
        const answer = yield* Deferred.make<Uint8Array>()
        waiters.set(key, answer)
        yield* peer.send(msg)
        return yield* Deferred.await(answer).pipe(Effect.timeoutOption(timeout))
      }).pipe(Effect.ensuring(Effect.sync(() => waiters.delete(key))))

    /** waitForPeers waits (bounded by config.waitFor) until at least one peer is connected. */
    const waitForPeers = Effect.gen(function* () {
      const rounds = Math.max(1, Math.ceil(Duration.toMillis(config.waitFor) / 1000))
      for (let i = 0; i < rounds; i++) {
        const now = [...(yield* Ref.get(peers)).values()]
        if (now.length > 0) return now
        yield* Effect.sleep(Duration.seconds(1))
      }
      return []
    })

    const fetch = (snapshotId: Uint8Array) =>
      Effect.gen(function* () {
        const idHex = toHex(snapshotId)
        const candidates = yield* waitForPeers
        const infos = yield* Effect.forEach(
          candidates,
          (peer) =>
            Effect.map(
              ask(peer, `${peer.info.id}/info`, new GetSnapshotInfo({ snapshotId }), config.infoTimeout),
              (bytes) => [peer, bytes] as const,
            ),
          { concurrency: "unbounded" },
        )
        let header: SnapshotHeader | undefined
        const servers: Array<PeerHandle> = []
        for (const [peer, bytes] of infos) {
          if (Option.isNone(bytes)) continue
          const decoded = decodeSnapshotHeader(bytes.value)
          if (Either.isLeft(decoded) || !bytesEqual(decoded.right.snapshotId, snapshotId)) {
            yield* peer.misbehave(
              Misbehavior.ProtocolViolation({ detail: `snapinfo: not the header of snapshot ${idHex}` }),
            )
            continue
          }
          header ??= decoded.right
          servers.push(peer)
        }
        if (header === undefined)
          return yield* new SnapshotError({ reason: "io", detail: `no peer serves snapshot ${idHex}` })
        const committed = header
        yield* Effect.logInfo(
          `snapshot: fetching ${committed.chunkHashes.length} chunks of ${idHex} from ${servers.length} peers`,
        )
        const semaphores = new Map(
          yield* Effect.forEach(servers, (p) =>
            Effect.map(Effect.makeSemaphore(config.maxInFlightPerPeer), (s) => [p.info.id, s] as const),
          ),
        )
        const bad = new Set<PeerId>()
        const fetchChunk = (index: number) =>
          Effect.gen(function* () {
            for (let attempt = 0; attempt < servers.length * 3; attempt++) {
              const live = servers.filter((p) => !bad.has(p.info.id))
              if (live.length === 0) break
              const peer = live[(index + attempt) % live.length]!
              const bytes = yield* semaphores.get(peer.info.id)!.withPermits(1)(
                ask(
                  peer,
                  `${peer.info.id}/${idHex}/${index}`,
                  new GetSnapshot({ snapshotId, chunkIndex: index }),
                  config.chunkTimeout,
                ),
              )
              if (Option.isNone(bytes)) continue
              if (bytesEqual(sha256(bytes.value), committed.chunkHashes[index]!)) return bytes.value
              bad.add(peer.info.id)
              yield* Effect.logWarning(
                `snapshot: peer ${peer.info.id} sent a bad chunk ${index}; asking another`,
              )
              yield* peer.misbehave(badChunk(idHex, index))
            }
            return yield* new SnapshotError({
              reason: "bad-chunk",
              detail: `no peer gave a good chunk ${index}`,
            })
          })
        const chunks = yield* Effect.forEach(
          committed.chunkHashes.map((_, i) => i),
          fetchChunk,
          { concurrency: Math.max(1, servers.length * config.maxInFlightPerPeer) },
        )
        return { header: committed, chunks }
      })

    /** failures per peer of block requests: the least failing peers are asked first */
    const blockFailures = new Map<PeerId, number>()

    const fetchBlock = (hash: BlockHash) =>
      Effect.gen(function* () {
        const hex = toHex(hash)
        const candidates = [...(yield* Ref.get(peers)).values()].sort(
          (a, b) => (blockFailures.get(a.info.id) ?? 0) - (blockFailures.get(b.info.id) ?? 0),
        )
        for (const peer of candidates) {
          const key = `${peer.info.id}/block/${hex}`
          const answer = yield* Deferred.make<Uint8Array>()
          waiters.set(key, answer)
          const bytes = yield* peer
            .send(new GetDataMessage({ items: [{ type: INV_BLOCK, hash }] }))
            .pipe(
              Effect.zipRight(Deferred.await(answer)),
              Effect.timeoutOption(config.blockTimeout),
              Effect.ensuring(Effect.sync(() => waiters.delete(key))),
            )
          if (Option.isSome(bytes)) return bytes
          blockFailures.set(peer.info.id, (blockFailures.get(peer.info.id) ?? 0) + 1)
        }
        return Option.none<Uint8Array>()
      })

    const receiveBlock = (peer: PeerHandle, payload: Uint8Array) =>
      Effect.suspend(() => {
        if (payload.length < HEADER_BYTES) return Effect.succeed(false)
        const key = `${peer.info.id}/block/${toHex(blockHashOf(payload.subarray(0, HEADER_BYTES)))}`
        const waiter = waiters.get(key)
        if (waiter === undefined) return Effect.succeed(false)
        waiters.delete(key)
        return Effect.as(Deferred.succeed(waiter, payload), true)
      })

    const service: SnapshotsService = {
      serve,
      served: Effect.sync(() => [...served.keys()]),
      peerConnected: (peer) => Ref.update(peers, (m) => new Map(m).set(peer.info.id, peer)),
      peerDisconnected: (id) =>
        Ref.update(peers, (m) => {
          const next = new Map(m)
          next.delete(id)
          return next
        }),
      serveRequest,
      receive,
      fetch,
      fetchBlock,
      receiveBlock,
    }
    return service
  })

/** layer provides the Snapshots service. */
export const layer = (config: SnapshotsConfig): Layer.Layer<Snapshots> =>
  Layer.effect(Snapshots, make(config))

/**
 * loadFromPeers loads the snapshot `snapshotId` (hex; the operator's word or a committed value) from
 * peers into a node at genesis: the Chain holds block downloads meanwhile (headers still sync), the
 * snapshot is fetched (`fetch`), its header checked against the committed values, the base's header
 * awaited from headers-first sync (bounded by config.waitFor), and the Chain loads it, checking the
 * header chain, every chunk and the MuHash. Block downloads resume whatever happens.
 */
export const loadFromPeers = (
  snapshotIdHex: string,
  params: NetworkParams,
  waitFor: Duration.Duration = Duration.minutes(5),
): Effect.Effect<SnapshotState, SnapshotError | StorageError, Chain | Snapshots> =>
  Effect.gen(function* () {
    const chain = yield* Chain
    const snapshots = yield* Snapshots
    const tip = yield* chain.tip
    if (tip.height > 0)
      return yield* new SnapshotError({
        reason: "not-at-genesis",
        detail: `the chain is at height ${tip.height}; a snapshot loads only into a node at genesis`,
      })
    const id = Buffer.from(snapshotIdHex, "hex")
    if (id.length !== 32)
      return yield* new SnapshotError({
        reason: "bad-format",
        detail: `${snapshotIdHex} is not a snapshot id`,
      })
    yield* chain.holdBlocks(true)
    return yield* Effect.gen(function* () {
      const { header, chunks } = yield* snapshots.fetch(new Uint8Array(id))
      if (!snapshotCommitted(header, params.assumeutxo, snapshotIdHex.toLowerCase()))
        return yield* new SnapshotError({ reason: "not-committed", detail: `snapshot ${snapshotIdHex}` })
      const rounds = Math.max(1, Math.ceil(Duration.toMillis(waitFor) / 1000))
      for (let i = 0; i < rounds && Option.isNone(yield* chain.entry(header.baseHash)); i++)
        yield* Effect.sleep(Duration.seconds(1))
      return yield* chain.loadSnapshot({
        header,
        headers: undefined,
        chunk: (index) =>
          index < chunks.length
            ? Effect.succeed(chunks[index]!)
            : Effect.fail(new SnapshotError({ reason: "bad-chunk", detail: `no chunk ${index}` })),
      })
    }).pipe(Effect.ensuring(chain.holdBlocks(false)))
  })
