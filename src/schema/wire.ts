import { Either, Schema } from "effect"
import {
  Block,
  BlockHeader,
  blockSize,
  HEADER_BYTES,
  MAX_BLOCK_BYTES,
  readBlock,
  readHeader,
  writeHeader,
} from "./block.js"
import { Reader, varintSize, Writer } from "./codec.js"
import { DecodeError } from "./DecodeError.js"
import { type BlockHash, Bytes32, MAX_U64, U32 } from "./primitives.js"
import { MAX_TX_BYTES, readTx, Tx, txSize, writeTx } from "./tx.js"

/** SERVICE_FULL is the `services` bit of a node that stores and serves the whole chain. */
export const SERVICE_FULL = 1
/** SERVICE_MINER is the `services` bit of a node that mines (it is also a full node). */
export const SERVICE_MINER = 2
/** SERVICE_LIGHT is the `services` bit of a headers-only node that serves no blocks. */
export const SERVICE_LIGHT = 4
/** SERVICE_FILTERS is the `services` bit of a node that serves compact block filters (BIP157's NODE_COMPACT_FILTERS). */
export const SERVICE_FILTERS = 8

/** FILTER_TYPE_BASIC is the only filter type served: BIP158's basic filter over our items (issue 9). */
export const FILTER_TYPE_BASIC = 0
/** MAX_GETCFILTERS caps the blocks of one getcfilters (BIP157's MAX_GETCFILTERS_SIZE). */
export const MAX_GETCFILTERS = 1_000
/** MAX_GETCFHEADERS caps the blocks of one getcfheaders, and a cfheaders' filter hashes (BIP157's MAX_GETCFHEADERS_SIZE). */
export const MAX_GETCFHEADERS = 2_000
/** CFCHECKPT_INTERVAL: cfcheckpt carries the filter header of every 1,000th block (heights 1,000, 2,000, …). */
export const CFCHECKPT_INTERVAL = 1_000
/** MAX_CFCHECKPT_HEADERS caps a cfcheckpt (a chain of 50 million blocks): 1.6 MB, under the frame cap. */
export const MAX_CFCHECKPT_HEADERS = 50_000
/**
 * MAX_CFILTER_BYTES caps one filter in a cfilter message. A 2 MB block holds at most ~54k filter items
 * of about 21.5 bits each (≈ 150 kB); 1 MiB leaves room and bounds what a peer makes us buffer.
 */
export const MAX_CFILTER_BYTES = 1 << 20

/** INV_TX is the inventory type of a transaction (Bitcoin's MSG_TX). */
export const INV_TX = 1
/** INV_BLOCK is the inventory type of a block (Bitcoin's MSG_BLOCK). */
export const INV_BLOCK = 2

/** MAX_INV_ENTRIES caps inv, getdata and notfound (Bitcoin's MAX_INV_SZ): a bounded flood per frame. */
export const MAX_INV_ENTRIES = 50_000
/** MAX_HEADERS caps one headers message (Bitcoin's MAX_HEADERS_RESULTS). */
export const MAX_HEADERS = 2_000
/** MAX_LOCATOR_HASHES caps a getheaders locator (Bitcoin's MAX_LOCATOR_SZ): bounds the lookup work a peer can ask for. */
export const MAX_LOCATOR_HASHES = 101
/** MAX_ADDR_ENTRIES caps one addr message (Bitcoin's MAX_ADDR_TO_SEND): limits address-table poisoning per frame. */
export const MAX_ADDR_ENTRIES = 1_000
/** MAX_PROOF_TXIDS caps the txids of one getproof (as getdata's items are capped): bounds the proof a peer may ask us to build. */
export const MAX_PROOF_TXIDS = 1_000
/**
 * MAX_PROOF_MESSAGE_BYTES caps a proof message. A proof of MAX_PROOF_TXIDS transactions in the largest
 * block (≤ 200,000 transactions, 18 levels) walks at most 18 inner nodes per match, so it holds at most
 * 18,001 hashes (≈ 576 kB) and 36,001 flag bits: 1 MB leaves room.
 */
export const MAX_PROOF_MESSAGE_BYTES = 1_000_000
/** MAX_USER_AGENT_BYTES caps version.userAgent (Bitcoin's MAX_SUBVERSION_LENGTH). */
export const MAX_USER_AGENT_BYTES = 256
/** MAX_REJECT_COMMAND_BYTES caps reject.command: a command name is at most 12 bytes. */
export const MAX_REJECT_COMMAND_BYTES = 12
/** MAX_REJECT_REASON_BYTES caps reject.reason (Bitcoin's MAX_REJECT_MESSAGE_LENGTH). */
export const MAX_REJECT_REASON_BYTES = 111

const INV_ITEM_BYTES = 4 + 32
const NET_ADDRESS_BYTES = 16 + 2
const ADDR_ENTRY_BYTES = 4 + 4 + NET_ADDRESS_BYTES
/** a udpaddr entry: time, services, the node's x-only key, its rendezvous server's address */
const UDP_ADDR_ENTRY_BYTES = 4 + 4 + 32 + NET_ADDRESS_BYTES

/** U16 is an unsigned 16-bit field (ports; big-endian on the wire, as in Bitcoin's net addresses). */
export const U16 = Schema.Number.pipe(Schema.int(), Schema.between(0, 0xffff))
/** U64 is an unsigned 64-bit field as a bigint (nonces). */
export const U64 = Schema.BigIntFromSelf.pipe(
  Schema.greaterThanOrEqualToBigInt(0n),
  Schema.lessThanOrEqualToBigInt(MAX_U64),
)

/** Host16 is an IPv6 address in 16 bytes; an IPv4 address is IPv4-mapped (`::ffff:a.b.c.d`). */
export const Host16 = Schema.Uint8ArrayFromSelf.pipe(
  Schema.filter((b) => b.length === 16, { message: () => "expected exactly 16 bytes" }),
)

const isPrintableAscii = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e) return false
  }
  return true
}

/** asciiString is a printable-ASCII string of at most `max` bytes (one byte per character on the wire). */
const asciiString = (max: number) =>
  Schema.String.pipe(
    Schema.filter((s) => s.length <= max && isPrintableAscii(s), {
      message: () => `printable ASCII of at most ${max} bytes`,
    }),
  )

/** NetAddress is a host and port, as version announces the address it sees the other side at. */
export const NetAddress = Schema.Struct({ host: Host16, port: U16 })
export type NetAddress = typeof NetAddress.Type

/** InvType is the kind of object an inventory entry names. */
export const InvType = Schema.Literal(INV_TX, INV_BLOCK)
export type InvType = typeof InvType.Type

/** InvItem names one transaction or block by its hash. */
export const InvItem = Schema.Struct({ type: InvType, hash: Bytes32 })
export type InvItem = typeof InvItem.Type

/** AddrEntry is one gossiped address: when it was last seen, its services, host and port. */
export const AddrEntry = Schema.Struct({ time: U32, services: U32, host: Host16, port: U16 })
export type AddrEntry = typeof AddrEntry.Type

const InvItems = Schema.Array(InvItem).pipe(Schema.maxItems(MAX_INV_ENTRIES))

/**
 * VersionMessage opens a connection. `nonce` is random per connection so a node that dials itself
 * sees its own nonce and hangs up; `theirAddress` echoes the peer's address as seen from here (public-IP
 * discovery); `services` is a bitfield of SERVICE_FULL / SERVICE_MINER / SERVICE_LIGHT.
 */
export class VersionMessage extends Schema.TaggedClass<VersionMessage>()("version", {
  protocolVersion: U32,
  services: U32,
  bestHeight: U32,
  userAgent: asciiString(MAX_USER_AGENT_BYTES),
  nonce: U64,
  listenPort: U16,
  theirAddress: NetAddress,
}) {}

/** VerackMessage acknowledges a version; the handshake is done when both sides have sent one. */
export class VerackMessage extends Schema.TaggedClass<VerackMessage>()("verack", {}) {}

/** PingMessage asks the peer to echo `nonce` in a pong (liveness and latency). */
export class PingMessage extends Schema.TaggedClass<PingMessage>()("ping", { nonce: U64 }) {}

/** PongMessage answers a ping with its nonce. */
export class PongMessage extends Schema.TaggedClass<PongMessage>()("pong", { nonce: U64 }) {}

/** InvMessage announces transactions and blocks by hash (at most MAX_INV_ENTRIES). */
export class InvMessage extends Schema.TaggedClass<InvMessage>()("inv", { items: InvItems }) {}

/** GetDataMessage asks for the announced objects (at most MAX_INV_ENTRIES). */
export class GetDataMessage extends Schema.TaggedClass<GetDataMessage>()("getdata", { items: InvItems }) {}

/** NotFoundMessage answers a getdata for objects the peer does not have. */
export class NotFoundMessage extends Schema.TaggedClass<NotFoundMessage>()("notfound", { items: InvItems }) {}

/** TxMessage carries one transaction (at most MAX_TX_BYTES). */
export class TxMessage extends Schema.TaggedClass<TxMessage>()("tx", { tx: Tx }) {}

/** BlockMessage carries one block (at most MAX_BLOCK_BYTES). */
export class BlockMessage extends Schema.TaggedClass<BlockMessage>()("block", { block: Block }) {}

/**
 * GetHeadersMessage asks for the headers after the first locator hash the peer knows, up to `stop`
 * (all zeros: as many as fit). The locator is capped so one request cannot cost unbounded lookups.
 */
export class GetHeadersMessage extends Schema.TaggedClass<GetHeadersMessage>()("getheaders", {
  locator: Schema.Array(Bytes32).pipe(Schema.maxItems(MAX_LOCATOR_HASHES)),
  stop: Bytes32,
}) {}

/** HeadersMessage answers getheaders with at most MAX_HEADERS consecutive 80-byte headers. */
export class HeadersMessage extends Schema.TaggedClass<HeadersMessage>()("headers", {
  headers: Schema.Array(BlockHeader).pipe(Schema.maxItems(MAX_HEADERS)),
}) {}

/** GetAddrMessage asks the peer for addresses it knows. */
export class GetAddrMessage extends Schema.TaggedClass<GetAddrMessage>()("getaddr", {}) {}

/**
 * UdpAddrEntry is one gossiped address of kind "udp" (issue 8): a node behind a NAT, named by its
 * x-only node key, reachable through the rendezvous server (host, port) it is registered at.
 */
export const UdpAddrEntry = Schema.Struct({
  time: U32,
  services: U32,
  nodeKey: Bytes32,
  host: Host16,
  port: U16,
})
export type UdpAddrEntry = typeof UdpAddrEntry.Type

/**
 * UdpAddrMessage gossips at most MAX_ADDR_ENTRIES udp addresses (its own command, so peers that
 * only know `addr` keep decoding it unchanged, as BIP155 added addrv2 beside addr).
 */
export class UdpAddrMessage extends Schema.TaggedClass<UdpAddrMessage>()("udpaddr", {
  entries: Schema.Array(UdpAddrEntry).pipe(Schema.maxItems(MAX_ADDR_ENTRIES)),
}) {}

/** AddrMessage gossips at most MAX_ADDR_ENTRIES addresses. */
export class AddrMessage extends Schema.TaggedClass<AddrMessage>()("addr", {
  entries: Schema.Array(AddrEntry).pipe(Schema.maxItems(MAX_ADDR_ENTRIES)),
}) {}

/**
 * RejectMessage tells the peer why its message was refused (BIP61's shape without the code byte):
 * the command, a Core-compatible reason such as `bad-txns-vin-empty`, and the object's hash if any.
 */
export class RejectMessage extends Schema.TaggedClass<RejectMessage>()("reject", {
  command: asciiString(MAX_REJECT_COMMAND_BYTES),
  reason: asciiString(MAX_REJECT_REASON_BYTES),
  hash: Schema.optional(Bytes32),
}) {}

/**
 * MAX_SNAPSHOT_INFO_BYTES caps a snapinfo: a UTXO snapshot header (src/consensus/snapshot.ts) with
 * up to its MAX_SNAPSHOT_CHUNKS (100,000) chunk hashes, 99 + 32 × 100,000 + 32 bytes.
 */
export const MAX_SNAPSHOT_INFO_BYTES = 99 + 32 * 100_000 + 32
/** MAX_SNAPSHOT_CHUNK_BYTES caps a snapchunk's entries: count u32 ‖ 10,000 entries of 81 bytes. */
export const MAX_SNAPSHOT_CHUNK_BYTES = 4 + 10_000 * 81

const boundedBytes = (cap: number) =>
  Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length <= cap, {
      message: () => `at most ${cap} bytes`,
    }),
  )

/** GetSnapshotInfoMessage asks a peer for the header of the UTXO snapshot `snapshotId` (issue 9). */
export class GetSnapshotInfoMessage extends Schema.TaggedClass<GetSnapshotInfoMessage>()("getsnapinfo", {
  snapshotId: Bytes32,
}) {}

/**
 * SnapshotInfoMessage answers getsnapinfo with the snapshot's encoded header (its id is the sha256
 * of the rest, so the asker checks it against the id it trusts). A peer without it stays silent.
 */
export class SnapshotInfoMessage extends Schema.TaggedClass<SnapshotInfoMessage>()("snapinfo", {
  header: boundedBytes(MAX_SNAPSHOT_INFO_BYTES),
}) {}

/** GetSnapshotMessage asks for chunk `chunkIndex` of the UTXO snapshot `snapshotId` (issue 9). */
export class GetSnapshotMessage extends Schema.TaggedClass<GetSnapshotMessage>()("getsnapshot", {
  snapshotId: Bytes32,
  chunkIndex: U32,
}) {}

/**
 * SnapshotChunkMessage answers getsnapshot with the chunk's bytes (count ‖ entries), which the asker
 * checks against the chunk hash the snapshot header commits to. A peer without it stays silent.
 */
export class SnapshotChunkMessage extends Schema.TaggedClass<SnapshotChunkMessage>()("snapchunk", {
  snapshotId: Bytes32,
  chunkIndex: U32,
  entries: boundedBytes(MAX_SNAPSHOT_CHUNK_BYTES),
}) {}

/**
 * GetProofMessage asks for a merkle proof that `txids` (at most MAX_PROOF_TXIDS) are in the block
 * `blockHash` (issue 9): a client that accepts telling the peer which transactions interest it.
 */
export class GetProofMessage extends Schema.TaggedClass<GetProofMessage>()("getproof", {
  blockHash: Bytes32,
  txids: Schema.Array(Bytes32).pipe(Schema.maxItems(MAX_PROOF_TXIDS)),
}) {}

/**
 * ProofMessage answers getproof with a txoutproof (src/consensus/merkleProof.ts: header ‖ partial merkle
 * tree) of those of the txids the block holds; the payload is the proof itself. A peer that does not
 * have the block stays silent.
 */
export class ProofMessage extends Schema.TaggedClass<ProofMessage>()("proof", {
  bytes: Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length <= MAX_PROOF_MESSAGE_BYTES, {
      message: () => `at most ${MAX_PROOF_MESSAGE_BYTES} bytes`,
    }),
  ),
}) {}

/** SendHeadersMessage asks the peer to announce new blocks with headers instead of inv (BIP130). */
export class SendHeadersMessage extends Schema.TaggedClass<SendHeadersMessage>()("sendheaders", {}) {}

/** FilterType is a compact filter type: one byte (only FILTER_TYPE_BASIC is served). */
export const FilterType = Schema.Number.pipe(Schema.int(), Schema.between(0, 0xff))

/**
 * GetCFiltersMessage asks for the filters of the active chain's blocks from `startHeight` up to
 * `stopHash`, at most MAX_GETCFILTERS of them (BIP157): one cfilter answers each block, in order.
 */
export class GetCFiltersMessage extends Schema.TaggedClass<GetCFiltersMessage>()("getcfilters", {
  filterType: FilterType,
  startHeight: U32,
  stopHash: Bytes32,
}) {}

/** CFilterMessage carries one block's filter (BIP157), at most MAX_CFILTER_BYTES. */
export class CFilterMessage extends Schema.TaggedClass<CFilterMessage>()("cfilter", {
  filterType: FilterType,
  blockHash: Bytes32,
  filter: Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length <= MAX_CFILTER_BYTES, {
      message: () => `at most ${MAX_CFILTER_BYTES} bytes`,
    }),
  ),
}) {}

/**
 * GetCFHeadersMessage asks for the filter hashes of the active chain's blocks from `startHeight` up to
 * `stopHash`, at most MAX_GETCFHEADERS of them (BIP157).
 */
export class GetCFHeadersMessage extends Schema.TaggedClass<GetCFHeadersMessage>()("getcfheaders", {
  filterType: FilterType,
  startHeight: U32,
  stopHash: Bytes32,
}) {}

/**
 * CFHeadersMessage answers getcfheaders (BIP157): the filter header of the block before the range and
 * the range's filter hashes in order, from which the asker rebuilds every filter header.
 */
export class CFHeadersMessage extends Schema.TaggedClass<CFHeadersMessage>()("cfheaders", {
  filterType: FilterType,
  stopHash: Bytes32,
  previousFilterHeader: Bytes32,
  filterHashes: Schema.Array(Bytes32).pipe(Schema.maxItems(MAX_GETCFHEADERS)),
}) {}

/** GetCFCheckptMessage asks for the filter headers of every CFCHECKPT_INTERVAL-th block up to `stopHash` (BIP157). */
export class GetCFCheckptMessage extends Schema.TaggedClass<GetCFCheckptMessage>()("getcfcheckpt", {
  filterType: FilterType,
  stopHash: Bytes32,
}) {}

/** CFCheckptMessage answers getcfcheckpt: filter headers at heights 1,000, 2,000, … up to the stop block. */
export class CFCheckptMessage extends Schema.TaggedClass<CFCheckptMessage>()("cfcheckpt", {
  filterType: FilterType,
  stopHash: Bytes32,
  filterHeaders: Schema.Array(Bytes32).pipe(Schema.maxItems(MAX_CFCHECKPT_HEADERS)),
}) {}

/** WireMessage is the union of every P2P message; its `_tag` is the frame's command. */
export const WireMessage = Schema.Union(
  VersionMessage,
  VerackMessage,
  PingMessage,
  PongMessage,
  InvMessage,
  GetDataMessage,
  NotFoundMessage,
  TxMessage,
  BlockMessage,
  GetHeadersMessage,
  HeadersMessage,
  GetAddrMessage,
  AddrMessage,
  UdpAddrMessage,
  RejectMessage,
  SendHeadersMessage,
  GetCFiltersMessage,
  CFilterMessage,
  GetCFHeadersMessage,
  CFHeadersMessage,
  GetCFCheckptMessage,
  CFCheckptMessage,
  GetSnapshotInfoMessage,
  SnapshotInfoMessage,
  GetSnapshotMessage,
  SnapshotChunkMessage,
  GetProofMessage,
  ProofMessage,
)
export type WireMessage = typeof WireMessage.Type

/** Command is a wire command name: the `_tag` of a WireMessage. */
export type Command = WireMessage["_tag"]

/** MessageOf is the message type of one command. */
export type MessageOf<C extends Command> = Extract<WireMessage, { readonly _tag: C }>

// ---------------------------------------------------------------------------------------------
// Binary codecs

/** Codec methods are declared as methods (bivariant) so one table can serve the whole union. */
interface Codec<M> {
  readonly cap: number
  read(r: Reader): M
  size(m: M): number
  write(w: Writer, m: M): void
}

const readU16 = (r: Reader, what: string): number => (r.u8(what) << 8) | r.u8(what)
const writeU16 = (w: Writer, v: number): void => {
  w.u8(v >>> 8)
  w.u8(v & 0xff)
}

const readAscii = (r: Reader, what: string, cap: number): string => {
  const start = r.pos
  const bytes = r.varBytes(what, cap)
  let s = ""
  for (const b of bytes) {
    if (b < 0x20 || b > 0x7e) {
      r.pos = start
      r.fail("invalid-value", what)
    }
    s += String.fromCharCode(b)
  }
  return s
}
const asciiSize = (s: string): number => varintSize(s.length) + s.length
const writeAscii = (w: Writer, s: string): void => {
  w.varint(s.length)
  for (let i = 0; i < s.length; i++) w.u8(s.charCodeAt(i))
}

const readInvItems = (r: Reader, what: string): Array<InvItem> => {
  const n = r.count(what, MAX_INV_ENTRIES, INV_ITEM_BYTES)
  const items: Array<InvItem> = []
  for (let i = 0; i < n; i++) {
    const start = r.pos
    const type = r.u32("inv.type")
    if (type !== INV_TX && type !== INV_BLOCK) {
      r.pos = start
      r.fail("invalid-value", "inv.type")
    }
    items.push({ type, hash: r.bytesN(32, "inv.hash") })
  }
  return items
}

const invCodec = <M extends { readonly items: ReadonlyArray<InvItem> }>(
  what: string,
  make: (items: Array<InvItem>) => M,
): Codec<M> => ({
  cap: varintSize(MAX_INV_ENTRIES) + MAX_INV_ENTRIES * INV_ITEM_BYTES,
  read: (r) => make(readInvItems(r, what)),
  size: (m) => varintSize(m.items.length) + m.items.length * INV_ITEM_BYTES,
  write: (w, m) => {
    w.varint(m.items.length)
    for (const item of m.items) {
      w.u32(item.type)
      w.raw(item.hash)
    }
  },
})

const emptyCodec = <M>(make: () => M): Codec<M> => ({
  cap: 0,
  read: () => make(),
  size: () => 0,
  write: () => {},
})

const nonceCodec = <M extends { readonly nonce: bigint }>(
  what: string,
  make: (nonce: bigint) => M,
): Codec<M> => ({
  cap: 8,
  read: (r) => make(r.u64(what)),
  size: () => 8,
  write: (w, m) => w.u64(m.nonce),
})

/** Validation is skipped when a decoder builds a message: the codec has already checked every field. */
const trusted = true

const readHashes = (r: Reader, what: string, cap: number): Array<Uint8Array> => {
  const n = r.count(what, cap, 32)
  const hashes: Array<Uint8Array> = []
  for (let i = 0; i < n; i++) hashes.push(r.bytesN(32, what))
  return hashes
}

const writeHashes = (w: Writer, hashes: ReadonlyArray<Uint8Array>): void => {
  w.varint(hashes.length)
  for (const h of hashes) w.raw(h)
}

/** filterRangeCodec: getcfilters and getcfheaders are filterType u8 ‖ startHeight u32 ‖ stopHash 32. */
const filterRangeCodec = <
  M extends { readonly filterType: number; readonly startHeight: number; readonly stopHash: Uint8Array },
>(
  what: string,
  make: (filterType: number, startHeight: number, stopHash: Uint8Array) => M,
): Codec<M> => ({
  cap: 1 + 4 + 32,
  read: (r) =>
    make(r.u8(`${what}.filterType`), r.u32(`${what}.startHeight`), r.bytesN(32, `${what}.stopHash`)),
  size: () => 1 + 4 + 32,
  write: (w, m) => {
    w.u8(m.filterType)
    w.u32(m.startHeight)
    w.raw(m.stopHash)
  },
})

const codecs: { readonly [C in Command]: Codec<MessageOf<C>> } = {
  version: {
    cap: 4 + 4 + 4 + varintSize(MAX_USER_AGENT_BYTES) + MAX_USER_AGENT_BYTES + 8 + 2 + NET_ADDRESS_BYTES,
    read: (r) =>
      new VersionMessage(
        {
          protocolVersion: r.u32("version.protocolVersion"),
          services: r.u32("version.services"),
          bestHeight: r.u32("version.bestHeight"),
          userAgent: readAscii(r, "version.userAgent", MAX_USER_AGENT_BYTES),
          nonce: r.u64("version.nonce"),
          listenPort: readU16(r, "version.listenPort"),
          theirAddress: {
            host: r.bytesN(16, "version.theirAddress.host"),
            port: readU16(r, "version.theirAddress.port"),
          },
        },
        trusted,
      ),
    size: (m) => 12 + asciiSize(m.userAgent) + 8 + 2 + NET_ADDRESS_BYTES,
    write: (w, m) => {
      w.u32(m.protocolVersion)
      w.u32(m.services)
      w.u32(m.bestHeight)
      writeAscii(w, m.userAgent)
      w.u64(m.nonce)
      writeU16(w, m.listenPort)
      w.raw(m.theirAddress.host)
      writeU16(w, m.theirAddress.port)
    },
  },
  verack: emptyCodec(() => new VerackMessage(undefined, trusted)),
  ping: nonceCodec("ping.nonce", (nonce) => new PingMessage({ nonce }, trusted)),
  pong: nonceCodec("pong.nonce", (nonce) => new PongMessage({ nonce }, trusted)),
  inv: invCodec("inv.items", (items) => new InvMessage({ items }, trusted)),
  getdata: invCodec("getdata.items", (items) => new GetDataMessage({ items }, trusted)),
  notfound: invCodec("notfound.items", (items) => new NotFoundMessage({ items }, trusted)),
  tx: {
    cap: MAX_TX_BYTES,
    read: (r) => new TxMessage({ tx: readTx(r) }, trusted),
    size: (m) => txSize(m.tx),
    write: (w, m) => writeTx(w, m.tx),
  },
  block: {
    cap: MAX_BLOCK_BYTES,
    read: (r) => new BlockMessage({ block: readBlock(r) }, trusted),
    size: (m) => blockSize(m.block),
    write: (w, m) => {
      writeHeader(w, m.block.header)
      w.varint(m.block.txs.length)
      for (const tx of m.block.txs) writeTx(w, tx)
    },
  },
  getheaders: {
    cap: varintSize(MAX_LOCATOR_HASHES) + MAX_LOCATOR_HASHES * 32 + 32,
    read: (r) => {
      const n = r.count("getheaders.locator", MAX_LOCATOR_HASHES, 32)
      const locator: Array<BlockHash> = []
      for (let i = 0; i < n; i++) locator.push(r.bytesN(32, "getheaders.locator") as BlockHash)
      return new GetHeadersMessage({ locator, stop: r.bytesN(32, "getheaders.stop") }, trusted)
    },
    size: (m) => varintSize(m.locator.length) + m.locator.length * 32 + 32,
    write: (w, m) => {
      w.varint(m.locator.length)
      for (const h of m.locator) w.raw(h)
      w.raw(m.stop)
    },
  },
  headers: {
    cap: varintSize(MAX_HEADERS) + MAX_HEADERS * HEADER_BYTES,
    read: (r) => {
      const n = r.count("headers.headers", MAX_HEADERS, HEADER_BYTES)
      const headers: Array<BlockHeader> = []
      for (let i = 0; i < n; i++) headers.push(readHeader(r))
      return new HeadersMessage({ headers }, trusted)
    },
    size: (m) => varintSize(m.headers.length) + m.headers.length * HEADER_BYTES,
    write: (w, m) => {
      w.varint(m.headers.length)
      for (const h of m.headers) writeHeader(w, h)
    },
  },
  getaddr: emptyCodec(() => new GetAddrMessage(undefined, trusted)),
  addr: {
    cap: varintSize(MAX_ADDR_ENTRIES) + MAX_ADDR_ENTRIES * ADDR_ENTRY_BYTES,
    read: (r) => {
      const n = r.count("addr.entries", MAX_ADDR_ENTRIES, ADDR_ENTRY_BYTES)
      const entries: Array<AddrEntry> = []
      for (let i = 0; i < n; i++) {
        entries.push({
          time: r.u32("addr.time"),
          services: r.u32("addr.services"),
          host: r.bytesN(16, "addr.host"),
          port: readU16(r, "addr.port"),
        })
      }
      return new AddrMessage({ entries }, trusted)
    },
    size: (m) => varintSize(m.entries.length) + m.entries.length * ADDR_ENTRY_BYTES,
    write: (w, m) => {
      w.varint(m.entries.length)
      for (const e of m.entries) {
        w.u32(e.time)
        w.u32(e.services)
        w.raw(e.host)
        writeU16(w, e.port)
      }
    },
  },
  udpaddr: {
    cap: varintSize(MAX_ADDR_ENTRIES) + MAX_ADDR_ENTRIES * UDP_ADDR_ENTRY_BYTES,
    read: (r) => {
      const n = r.count("udpaddr.entries", MAX_ADDR_ENTRIES, UDP_ADDR_ENTRY_BYTES)
      const entries: Array<UdpAddrEntry> = []
      for (let i = 0; i < n; i++) {
        entries.push({
          time: r.u32("udpaddr.time"),
          services: r.u32("udpaddr.services"),
          nodeKey: r.bytesN(32, "udpaddr.nodeKey"),
          host: r.bytesN(16, "udpaddr.host"),
          port: readU16(r, "udpaddr.port"),
        })
      }
      return new UdpAddrMessage({ entries }, trusted)
    },
    size: (m) => varintSize(m.entries.length) + m.entries.length * UDP_ADDR_ENTRY_BYTES,
    write: (w, m) => {
      w.varint(m.entries.length)
      for (const e of m.entries) {
        w.u32(e.time)
        w.u32(e.services)
        w.raw(e.nodeKey)
        w.raw(e.host)
        writeU16(w, e.port)
      }
    },
  },
  reject: {
    cap: 1 + MAX_REJECT_COMMAND_BYTES + 1 + MAX_REJECT_REASON_BYTES + 32,
    read: (r) => {
      const command = readAscii(r, "reject.command", MAX_REJECT_COMMAND_BYTES)
      const reason = readAscii(r, "reject.reason", MAX_REJECT_REASON_BYTES)
      // The hash is present exactly when bytes remain; 1..31 leftover bytes are a truncated hash.
      return r.remaining === 0
        ? new RejectMessage({ command, reason }, trusted)
        : new RejectMessage({ command, reason, hash: r.bytesN(32, "reject.hash") }, trusted)
    },
    size: (m) => asciiSize(m.command) + asciiSize(m.reason) + (m.hash === undefined ? 0 : 32),
    write: (w, m) => {
      writeAscii(w, m.command)
      writeAscii(w, m.reason)
      if (m.hash !== undefined) w.raw(m.hash)
    },
  },
  sendheaders: emptyCodec(() => new SendHeadersMessage(undefined, trusted)),
  getcfilters: filterRangeCodec(
    "getcfilters",
    (filterType, startHeight, stopHash) =>
      new GetCFiltersMessage({ filterType, startHeight, stopHash }, trusted),
  ),
  cfilter: {
    cap: 1 + 32 + varintSize(MAX_CFILTER_BYTES) + MAX_CFILTER_BYTES,
    read: (r) =>
      new CFilterMessage(
        {
          filterType: r.u8("cfilter.filterType"),
          blockHash: r.bytesN(32, "cfilter.blockHash"),
          filter: r.varBytes("cfilter.filter", MAX_CFILTER_BYTES),
        },
        trusted,
      ),
    size: (m) => 1 + 32 + varintSize(m.filter.length) + m.filter.length,
    write: (w, m) => {
      w.u8(m.filterType)
      w.raw(m.blockHash)
      w.varBytes(m.filter)
    },
  },
  getcfheaders: filterRangeCodec(
    "getcfheaders",
    (filterType, startHeight, stopHash) =>
      new GetCFHeadersMessage({ filterType, startHeight, stopHash }, trusted),
  ),
  cfheaders: {
    cap: 1 + 32 + 32 + varintSize(MAX_GETCFHEADERS) + MAX_GETCFHEADERS * 32,
    read: (r) =>
      new CFHeadersMessage(
        {
          filterType: r.u8("cfheaders.filterType"),
          stopHash: r.bytesN(32, "cfheaders.stopHash"),
          previousFilterHeader: r.bytesN(32, "cfheaders.previousFilterHeader"),
          filterHashes: readHashes(r, "cfheaders.filterHashes", MAX_GETCFHEADERS),
        },
        trusted,
      ),
    size: (m) => 1 + 32 + 32 + varintSize(m.filterHashes.length) + m.filterHashes.length * 32,
    write: (w, m) => {
      w.u8(m.filterType)
      w.raw(m.stopHash)
      w.raw(m.previousFilterHeader)
      writeHashes(w, m.filterHashes)
    },
  },
  getcfcheckpt: {
    cap: 1 + 32,
    read: (r) =>
      new GetCFCheckptMessage(
        { filterType: r.u8("getcfcheckpt.filterType"), stopHash: r.bytesN(32, "getcfcheckpt.stopHash") },
        trusted,
      ),
    size: () => 1 + 32,
    write: (w, m) => {
      w.u8(m.filterType)
      w.raw(m.stopHash)
    },
  },
  cfcheckpt: {
    cap: 1 + 32 + varintSize(MAX_CFCHECKPT_HEADERS) + MAX_CFCHECKPT_HEADERS * 32,
    read: (r) =>
      new CFCheckptMessage(
        {
          filterType: r.u8("cfcheckpt.filterType"),
          stopHash: r.bytesN(32, "cfcheckpt.stopHash"),
          filterHeaders: readHashes(r, "cfcheckpt.filterHeaders", MAX_CFCHECKPT_HEADERS),
        },
        trusted,
      ),
    size: (m) => 1 + 32 + varintSize(m.filterHeaders.length) + m.filterHeaders.length * 32,
    write: (w, m) => {
      w.u8(m.filterType)
      w.raw(m.stopHash)
      writeHashes(w, m.filterHeaders)
    },
  },
  getsnapinfo: {
    cap: 32,
    read: (r) => new GetSnapshotInfoMessage({ snapshotId: r.bytesN(32, "getsnapinfo.id") }, trusted),
    size: () => 32,
    write: (w, m) => w.raw(m.snapshotId),
  },
  snapinfo: {
    cap: MAX_SNAPSHOT_INFO_BYTES,
    read: (r) => new SnapshotInfoMessage({ header: r.bytesN(r.remaining, "snapinfo.header") }, trusted),
    size: (m) => m.header.length,
    write: (w, m) => w.raw(m.header),
  },
  getsnapshot: {
    cap: 36,
    read: (r) =>
      new GetSnapshotMessage(
        { snapshotId: r.bytesN(32, "getsnapshot.id"), chunkIndex: r.u32("getsnapshot.chunkIndex") },
        trusted,
      ),
    size: () => 36,
    write: (w, m) => {
      w.raw(m.snapshotId)
      w.u32(m.chunkIndex)
    },
  },
  snapchunk: {
    cap: 36 + MAX_SNAPSHOT_CHUNK_BYTES,
    read: (r) =>
      new SnapshotChunkMessage(
        {
          snapshotId: r.bytesN(32, "snapchunk.id"),
          chunkIndex: r.u32("snapchunk.chunkIndex"),
          entries: r.bytesN(r.remaining, "snapchunk.entries"),
        },
        trusted,
      ),
    size: (m) => 36 + m.entries.length,
    write: (w, m) => {
      w.raw(m.snapshotId)
      w.u32(m.chunkIndex)
      w.raw(m.entries)
    },
  },
  getproof: {
    cap: 32 + varintSize(MAX_PROOF_TXIDS) + MAX_PROOF_TXIDS * 32,
    read: (r) => {
      const blockHash = r.bytesN(32, "getproof.blockHash")
      const n = r.count("getproof.txids", MAX_PROOF_TXIDS, 32)
      const txids: Array<Uint8Array> = []
      for (let i = 0; i < n; i++) txids.push(r.bytesN(32, "getproof.txid"))
      return new GetProofMessage({ blockHash, txids }, trusted)
    },
    size: (m) => 32 + varintSize(m.txids.length) + m.txids.length * 32,
    write: (w, m) => {
      w.raw(m.blockHash)
      w.varint(m.txids.length)
      for (const txid of m.txids) w.raw(txid)
    },
  },
  proof: {
    cap: MAX_PROOF_MESSAGE_BYTES,
    read: (r) => new ProofMessage({ bytes: r.bytesN(r.remaining, "proof.bytes") }, trusted),
    size: (m) => m.bytes.length,
    write: (w, m) => w.raw(m.bytes),
  },
}

/** COMMANDS lists every known wire command. */
export const COMMANDS: ReadonlyArray<Command> = Object.keys(codecs) as Array<Command>

/** isCommand tells whether a string names a known wire command. */
export const isCommand = (s: string): s is Command => Object.hasOwn(codecs, s)

/**
 * maxPayloadBytes is the largest payload a command may declare (btcd's MaxPayloadLength), computed
 * from its entry caps; a frame header declaring more is refused before a byte of payload is buffered.
 */
export const maxPayloadBytes = (command: Command): number => codecs[command].cap

/** payloadSize is the exact encoded payload size of a message. */
export const payloadSize = (msg: WireMessage): number => {
  const codec: Codec<WireMessage> = codecs[msg._tag]
  return codec.size(msg)
}

/**
 * writePayload writes a message's payload at the writer's position. The caller keeps to the caps (the
 * message constructors check them unless validation is disabled); the encoder itself does not refuse.
 */
export const writePayload = (w: Writer, msg: WireMessage): void => {
  const codec: Codec<WireMessage> = codecs[msg._tag]
  codec.write(w, msg)
}

/** encodePayload returns a message's canonical payload bytes (no frame header). */
export const encodePayload = (msg: WireMessage): Uint8Array => {
  const w = new Writer(payloadSize(msg))
  writePayload(w, msg)
  return w.finish()
}

/**
 * decodePayload decodes one command's payload: an unknown command is `invalid-value` at
 * `frame.command`, a payload over the command's cap is `length-exceeds-cap` before any read, and the
 * payload must be consumed exactly, so a decoded message re-encodes to the same bytes. Never throws.
 */
export const decodePayload = (
  command: string,
  payload: Uint8Array,
): Either.Either<WireMessage, DecodeError> => {
  if (!isCommand(command)) {
    return Either.left(new DecodeError({ reason: "invalid-value", what: "frame.command", offset: 0 }))
  }
  const codec: Codec<WireMessage> = codecs[command]
  if (payload.length > codec.cap) {
    return Either.left(new DecodeError({ reason: "length-exceeds-cap", what: command, offset: 0 }))
  }
  const r = new Reader(payload)
  try {
    const msg = codec.read(r)
    r.end(command)
    return Either.right(msg)
  } catch (e) {
    if (e instanceof DecodeError) return Either.left(e)
    throw e
  }
}
