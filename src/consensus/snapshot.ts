import { Data, Either } from "effect"
import { type BlockHeader, HEADER_BYTES, readHeader } from "../schema/block.js"
import { decodeWith, type Reader, Writer } from "../schema/codec.js"
import { COIN_BYTES, type Coin, readCoin, writeCoin } from "../schema/coin.js"
import type { DecodeError } from "../schema/DecodeError.js"
import { bytesEqual, toHex } from "../schema/hex.js"
import type { BlockHash } from "../schema/primitives.js"
import { checkBlockHeader, contextualCheckBlockHeader, headerHash } from "./checkBlock.js"
import { sha256 } from "./hash.js"
import { blockWork, medianTimePast, nextWorkRequired } from "./pow.js"

/**
 * UTXO snapshots (issue 9, assumeutxo): the UTXO set at one block in a chunked file, so a fresh node
 * can start at that block instead of replaying history. Pure: encoding, decoding and every check that
 * needs no clock or I/O. Layout (integers little-endian):
 *
 * ```
 * header   "fcsnap" 6 ‖ version u8 (1) ‖ network magic 4 ‖ base hash 32 ‖ base height u32 ‖
 *          coin count u64 ‖ chunk size u32 (10,000) ‖ txoutset hash 32 (MuHash3072, hash_serialized) ‖
 *          chunk count u32 ‖ chunk sha256 × chunk count ‖ snapshot id 32 (sha256 of all before it)
 * headers  the block headers from genesis to the base, 80 bytes each (base height + 1 of them)
 * chunks   chunk i = entry count u32 ‖ entries; an entry is txid 32 ‖ index u32 ‖ coin (src/schema/coin.ts),
 *          exactly the element the MuHash hashes; entries sorted by (txid bytes, index) across the
 *          whole file; every chunk but the last holds `chunk size` entries
 * ```
 *
 * The snapshot id commits to every header field, the chunk-hash list included, so a committed id (in
 * the network params or given by the operator) fixes the whole set; each chunk is checked against its
 * hash on its own (a bad chunk from a peer is caught before it touches the store), and the MuHash over
 * all loaded coins must equal the header's.
 */

/** SNAPSHOT_MAGIC opens every snapshot file. */
export const SNAPSHOT_MAGIC = new TextEncoder().encode("fcsnap")
/** SNAPSHOT_VERSION is the format version this code writes and reads. */
export const SNAPSHOT_VERSION = 1
/** SNAPSHOT_CHUNK_ENTRIES is the chunk size written (and the most a chunk may hold: issue 9's ≤ 10,000). */
export const SNAPSHOT_CHUNK_ENTRIES = 10_000
/** MAX_SNAPSHOT_CHUNKS bounds a decoded header: 10⁹ coins, a 3.2 MB chunk-hash list. */
export const MAX_SNAPSHOT_CHUNKS = 100_000
/** SNAPSHOT_ENTRY_BYTES: outpoint 36 ‖ coin 45. */
export const SNAPSHOT_ENTRY_BYTES = 36 + COIN_BYTES
/** SNAPSHOT_FIXED_BYTES is the header up to the chunk-hash list (the list's length is in it). */
export const SNAPSHOT_FIXED_BYTES = 6 + 1 + 4 + 32 + 4 + 8 + 4 + 32 + 4

/** snapshotHeaderBytes is the whole header's length for `chunkCount` chunks. */
export const snapshotHeaderBytes = (chunkCount: number): number => SNAPSHOT_FIXED_BYTES + 32 * chunkCount + 32

/** SnapshotHeader is a snapshot's header: what the file commits to. */
export interface SnapshotHeader {
  readonly networkMagic: Uint8Array
  readonly baseHash: BlockHash
  readonly baseHeight: number
  readonly coinCount: number
  readonly chunkSize: number
  /** the MuHash3072 hash_serialized of the set (gettxoutsetinfo's) */
  readonly txoutsetHash: Uint8Array
  readonly chunkHashes: ReadonlyArray<Uint8Array>
  /** sha256 of every field above in the encoded layout */
  readonly snapshotId: Uint8Array
}

/** SnapshotEntry is one coin of a snapshot: its outpoint and the coin. */
export interface SnapshotEntry {
  readonly txid: Uint8Array
  readonly index: number
  readonly coin: Coin
}

/**
 * SnapshotError is a snapshot refused (or a dump/load that could not run), with why. `reason`:
 * `bad-format` (the bytes do not parse), `wrong-network`, `not-committed` (no committed or operator
 * value matches), `bad-headers` (the header chain does not check), `bad-chunk` (a chunk's hash, count
 * or order), `bad-txoutset-hash` (the MuHash over the loaded coins differs), `not-at-genesis` (the
 * node already has a chain), `io` (the file could not be read or written).
 */
export class SnapshotError extends Data.TaggedError("SnapshotError")<{
  readonly reason:
    | "bad-format"
    | "wrong-network"
    | "not-committed"
    | "bad-headers"
    | "bad-chunk"
    | "bad-txoutset-hash"
    | "not-at-genesis"
    | "io"
  readonly detail: string
}> {
  override get message(): string {
    return `snapshot ${this.reason}: ${this.detail}`
  }
}

const writeFixed = (w: Writer, h: Omit<SnapshotHeader, "snapshotId">) => {
  w.raw(SNAPSHOT_MAGIC)
  w.u8(SNAPSHOT_VERSION)
  w.raw(h.networkMagic)
  w.raw(h.baseHash)
  w.u32(h.baseHeight)
  w.u64(BigInt(h.coinCount))
  w.u32(h.chunkSize)
  w.raw(h.txoutsetHash)
  w.u32(h.chunkHashes.length)
  for (const c of h.chunkHashes) w.raw(c)
}

/**
 * makeSnapshotHeader completes a header with its snapshot id (sha256 of the other fields, encoded) and
 * returns it with its encoding. Pure.
 */
export const makeSnapshotHeader = (
  fields: Omit<SnapshotHeader, "snapshotId">,
): { readonly header: SnapshotHeader; readonly bytes: Uint8Array } => {
  const w = new Writer(snapshotHeaderBytes(fields.chunkHashes.length))
  writeFixed(w, fields)
  const snapshotId = sha256(w.bytes.subarray(0, w.pos))
  w.raw(snapshotId)
  return { header: { ...fields, snapshotId }, bytes: w.finish() }
}

/** chunkCountOf is how many chunks `coinCount` coins fill at `chunkSize` a chunk. */
export const chunkCountOf = (coinCount: number, chunkSize: number): number => Math.ceil(coinCount / chunkSize)

/**
 * snapshotFixedCount reads the chunk count from the fixed part of a header (the first
 * SNAPSHOT_FIXED_BYTES), so a reader knows how many bytes the whole header takes. Bounded.
 */
export const snapshotFixedCount = decodeWith("snapshot header", SNAPSHOT_FIXED_BYTES, (r): number => {
  const magic = r.bytesN(6, "snapshot.magic")
  if (!bytesEqual(magic, SNAPSHOT_MAGIC)) r.fail("invalid-value", "snapshot.magic")
  if (r.u8("snapshot.version") !== SNAPSHOT_VERSION) r.fail("invalid-value", "snapshot.version")
  r.pos = SNAPSHOT_FIXED_BYTES - 4
  const count = r.u32("snapshot.chunkCount")
  if (count > MAX_SNAPSHOT_CHUNKS) r.fail("length-exceeds-cap", "snapshot.chunkCount")
  return count
})

/**
 * decodeSnapshotHeader parses a whole header and checks it is self-consistent: magic and version,
 * chunk size 1..SNAPSHOT_CHUNK_ENTRIES, chunk count = ceil(coins / chunk size), and the snapshot id
 * equal to the sha256 of the fields before it. Bounded by MAX_SNAPSHOT_CHUNKS.
 */
export const decodeSnapshotHeader = decodeWith(
  "snapshot header",
  snapshotHeaderBytes(MAX_SNAPSHOT_CHUNKS),
  (r): SnapshotHeader => {
    const magic = r.bytesN(6, "snapshot.magic")
    if (!bytesEqual(magic, SNAPSHOT_MAGIC)) r.fail("invalid-value", "snapshot.magic")
    if (r.u8("snapshot.version") !== SNAPSHOT_VERSION) r.fail("invalid-value", "snapshot.version")
    const networkMagic = r.bytesN(4, "snapshot.network")
    const baseHash = r.bytesN(32, "snapshot.baseHash") as BlockHash
    const baseHeight = r.u32("snapshot.baseHeight")
    if (baseHeight > 0x7fffffff) r.fail("invalid-value", "snapshot.baseHeight")
    const coins = r.u64("snapshot.coinCount")
    if (coins > BigInt(MAX_SNAPSHOT_CHUNKS * SNAPSHOT_CHUNK_ENTRIES))
      r.fail("length-exceeds-cap", "snapshot.coinCount")
    const coinCount = Number(coins)
    const chunkSize = r.u32("snapshot.chunkSize")
    if (chunkSize === 0 || chunkSize > SNAPSHOT_CHUNK_ENTRIES) r.fail("invalid-value", "snapshot.chunkSize")
    const txoutsetHash = r.bytesN(32, "snapshot.txoutsetHash")
    const chunkCount = r.u32("snapshot.chunkCount")
    if (chunkCount > MAX_SNAPSHOT_CHUNKS) r.fail("length-exceeds-cap", "snapshot.chunkCount")
    if (chunkCount !== chunkCountOf(coinCount, chunkSize)) r.fail("invalid-value", "snapshot.chunkCount")
    if (chunkCount * 32 + 32 > r.remaining) r.fail("length-exceeds-input", "snapshot.chunkCount")
    const chunkHashes: Array<Uint8Array> = []
    for (let i = 0; i < chunkCount; i++) chunkHashes.push(r.bytesN(32, "snapshot.chunkHash"))
    const idAt = r.pos
    const snapshotId = r.bytesN(32, "snapshot.id")
    if (!bytesEqual(snapshotId, sha256(r.bytes.subarray(0, idAt)))) r.fail("invalid-value", "snapshot.id")
    return { networkMagic, baseHash, baseHeight, coinCount, chunkSize, txoutsetHash, chunkHashes, snapshotId }
  },
)

/** chunkEntriesOf is how many entries chunk `index` holds (every chunk is full but the last). */
export const chunkEntriesOf = (header: SnapshotHeader, index: number): number =>
  Math.min(header.chunkSize, header.coinCount - index * header.chunkSize)

/** chunkBytesOf is chunk `index`'s encoded length. */
export const chunkBytesOf = (header: SnapshotHeader, index: number): number =>
  4 + chunkEntriesOf(header, index) * SNAPSHOT_ENTRY_BYTES

/**
 * snapshotLayout gives where the parts of a snapshot file start: the headers, and chunk `index` (every
 * chunk before it is full, so no chunk index is stored).
 */
export const snapshotLayout = (header: SnapshotHeader) => {
  const headersAt = snapshotHeaderBytes(header.chunkHashes.length)
  const chunksAt = headersAt + (header.baseHeight + 1) * HEADER_BYTES
  return {
    headersAt,
    chunksAt,
    chunkAt: (index: number) => chunksAt + index * (4 + header.chunkSize * SNAPSHOT_ENTRY_BYTES),
    totalBytes: chunksAt + header.chunkHashes.reduce((sum, _, i) => sum + chunkBytesOf(header, i), 0),
  }
}

/** compareOutpoints orders entries by txid bytes, then by index: the file's order. */
export const compareOutpoints = (a: SnapshotEntry, b: SnapshotEntry): number => {
  for (let i = 0; i < 32; i++) {
    const d = a.txid[i]! - b.txid[i]!
    if (d !== 0) return d
  }
  return a.index - b.index
}

/** encodeChunk writes one chunk: count ‖ entries (already in file order). */
export const encodeChunk = (entries: ReadonlyArray<SnapshotEntry>): Uint8Array => {
  const w = new Writer(4 + entries.length * SNAPSHOT_ENTRY_BYTES)
  w.u32(entries.length)
  for (const e of entries) {
    w.raw(e.txid)
    w.u32(e.index)
    writeCoin(w, e.coin)
  }
  return w.finish()
}

const readEntry = (r: Reader): SnapshotEntry => {
  const txid = r.bytesN(32, "snapshot.entry.txid")
  const index = r.u32("snapshot.entry.index")
  return { txid, index, coin: readCoin(r) }
}

/**
 * decodeChunk parses one chunk of at most SNAPSHOT_CHUNK_ENTRIES entries, strictly increasing in file
 * order (so no outpoint appears twice). Bounded; never throws.
 */
export const decodeChunk = decodeWith(
  "snapshot chunk",
  4 + SNAPSHOT_CHUNK_ENTRIES * SNAPSHOT_ENTRY_BYTES,
  (r): ReadonlyArray<SnapshotEntry> => {
    const n = r.u32("snapshot.chunk.count")
    if (n > SNAPSHOT_CHUNK_ENTRIES) r.fail("length-exceeds-cap", "snapshot.chunk.count")
    if (n * SNAPSHOT_ENTRY_BYTES > r.remaining) r.fail("length-exceeds-input", "snapshot.chunk.count")
    const entries: Array<SnapshotEntry> = []
    for (let i = 0; i < n; i++) {
      const e = readEntry(r)
      if (i > 0 && compareOutpoints(entries[i - 1]!, e) >= 0) r.fail("invalid-value", "snapshot.chunk.order")
      entries.push(e)
    }
    return entries
  },
)

/**
 * checkChunk checks chunk `index`'s bytes against the header: its sha256 against the committed list,
 * then its entry count, then its order (strictly after `previous`, the last entry of the chunk
 * before). Returns its entries. Pure.
 */
export const checkChunk = (
  header: SnapshotHeader,
  index: number,
  bytes: Uint8Array,
  previous: SnapshotEntry | undefined,
): Either.Either<ReadonlyArray<SnapshotEntry>, SnapshotError> => {
  const expected = header.chunkHashes[index]
  if (expected === undefined)
    return Either.left(new SnapshotError({ reason: "bad-chunk", detail: `no chunk ${index}` }))
  if (!bytesEqual(sha256(bytes), expected))
    return Either.left(
      new SnapshotError({ reason: "bad-chunk", detail: `chunk ${index} does not match its committed hash` }),
    )
  const decoded: Either.Either<ReadonlyArray<SnapshotEntry>, DecodeError> = decodeChunk(bytes)
  if (Either.isLeft(decoded))
    return Either.left(
      new SnapshotError({ reason: "bad-chunk", detail: `chunk ${index}: ${decoded.left.message}` }),
    )
  const entries = decoded.right
  if (entries.length !== chunkEntriesOf(header, index))
    return Either.left(
      new SnapshotError({
        reason: "bad-chunk",
        detail: `chunk ${index} holds ${entries.length} entries, expected ${chunkEntriesOf(header, index)}`,
      }),
    )
  if (previous !== undefined && entries.length > 0 && compareOutpoints(previous, entries[0]!) >= 0)
    return Either.left(new SnapshotError({ reason: "bad-chunk", detail: `chunk ${index} is out of order` }))
  return Either.right(entries)
}

/** entryElement is the bytes an entry adds to the MuHash (muhash.ts's utxoElement). */
export const entryElement = (e: SnapshotEntry): Uint8Array => {
  const w = new Writer(SNAPSHOT_ENTRY_BYTES)
  w.raw(e.txid)
  w.u32(e.index)
  writeCoin(w, e.coin)
  return w.finish()
}

/** decodeSnapshotHeaders parses the header section: `count` headers of 80 bytes. */
export const decodeSnapshotHeaders = (
  bytes: Uint8Array,
  count: number,
): Either.Either<ReadonlyArray<BlockHeader>, DecodeError> =>
  decodeWith("snapshot headers", count * HEADER_BYTES, (r): ReadonlyArray<BlockHeader> => {
    const out: Array<BlockHeader> = []
    for (let i = 0; i < count; i++) out.push(readHeader(r))
    return out
  })(bytes)

/** HeaderParams is what the header-chain check needs of the network. */
export interface SnapshotChainParams {
  readonly powLimit: bigint
  readonly powLimitBits: number
  readonly retargetInterval: number
  readonly targetSpacingSeconds: number
  readonly noRetargeting: boolean
  readonly halvingInterval: number
  readonly genesisHash: BlockHash
}

/**
 * checkSnapshotHeaders checks a snapshot's header chain with the rules the Chain applies to headers
 * (proof of work within the pow limit, the expected bits, linkage, time after the median time past,
 * not more than two hours after `now`): headers[0] is the network's genesis, each links to the one
 * before, the last hashes to the base hash, and there are base height + 1 of them. Returns each
 * header's hash and cumulative work. Pure (`now` is passed in).
 */
export const checkSnapshotHeaders = (
  params: SnapshotChainParams,
  header: SnapshotHeader,
  headers: ReadonlyArray<BlockHeader>,
  now: number,
): Either.Either<ReadonlyArray<{ readonly hash: BlockHash; readonly chainwork: bigint }>, SnapshotError> => {
  const fail = (detail: string) => Either.left(new SnapshotError({ reason: "bad-headers", detail }))
  if (headers.length !== header.baseHeight + 1)
    return fail(`${headers.length} headers for base height ${header.baseHeight}`)
  const out: Array<{ readonly hash: BlockHash; readonly chainwork: bigint }> = []
  for (let h = 0; h < headers.length; h++) {
    const hdr = headers[h]!
    const hash = headerHash(hdr)
    if (h === 0) {
      if (!bytesEqual(hash, params.genesisHash)) return fail("the first header is not this network's genesis")
      out.push({ hash, chainwork: blockWork(hdr.bits) })
      continue
    }
    const pow = checkBlockHeader(hdr, hash, params)
    if (Either.isLeft(pow)) return fail(`header ${h}: ${pow.left.message}`)
    const parent = headers[h - 1]!
    const times: Array<number> = []
    for (let i = h - 1; i >= 0 && i >= h - 11; i--) times.push(headers[i]!.time)
    const start = headers[Math.max(0, h - params.retargetInterval)]!
    const ctx = {
      prevHash: out[h - 1]!.hash,
      height: h,
      medianTimePast: medianTimePast(times),
      expectedBits: nextWorkRequired(params, {
        height: h,
        prevBits: parent.bits,
        prevTime: parent.time,
        intervalStartTime: start.time,
      }),
      now,
    }
    const contextual = contextualCheckBlockHeader(hdr, ctx)
    if (Either.isLeft(contextual)) return fail(`header ${h}: ${contextual.left.message}`)
    out.push({ hash, chainwork: out[h - 1]!.chainwork + blockWork(hdr.bits) })
  }
  if (!bytesEqual(out[out.length - 1]!.hash, header.baseHash))
    return fail(
      `the last header is ${toHex(out[out.length - 1]!.hash)}, not the base ${toHex(header.baseHash)}`,
    )
  return Either.right(out)
}

/**
 * AssumeUtxo is a snapshot value committed in the network params (Core's AssumeutxoData): the base
 * block, its height, the set's MuHash and the snapshot id (which commits to the chunk-hash list).
 * Hex strings, as reviewers read them in params.ts.
 */
export interface AssumeUtxo {
  readonly height: number
  readonly baseHash: string
  readonly txoutsetHash: string
  readonly snapshotId: string
}

/**
 * snapshotCommitted says whether a header is one the node may load: its (base hash, height, MuHash,
 * snapshot id) equal a committed entry, or its snapshot id equals the one the operator gave. Never a
 * peer's word alone. Pure.
 */
export const snapshotCommitted = (
  header: SnapshotHeader,
  committed: ReadonlyArray<AssumeUtxo>,
  operatorId: string | undefined,
): boolean => {
  const id = toHex(header.snapshotId)
  if (operatorId !== undefined && operatorId.toLowerCase() === id) return true
  return committed.some(
    (c) =>
      c.height === header.baseHeight &&
      c.baseHash.toLowerCase() === toHex(header.baseHash) &&
      c.txoutsetHash.toLowerCase() === toHex(header.txoutsetHash) &&
      c.snapshotId.toLowerCase() === id,
  )
}
