import { Either } from "effect"
import { assembleBlock, makeCoinbase } from "../../src/consensus/assemble.js"
import { decodeBlockWithTxids } from "../../src/consensus/checkBlock.js"
import { txidOf } from "../../src/consensus/hash.js"
import { buildProof } from "../../src/consensus/merkleProof.js"
import { regtest } from "../../src/consensus/params.js"
import { loadDefaultBackend } from "../../src/layers/Signatures.js"
import { type Block, type BlockHeader, encodeBlock } from "../../src/schema/block.js"
import { FRAME_HEADER_BYTES, frameChecksum, MAX_FRAME_PAYLOAD } from "../../src/schema/frame.js"
import type { Amount, BlockHash, Height, PublicKey, TxId } from "../../src/schema/primitives.js"
import { encodeTx, type Tx } from "../../src/schema/tx.js"
import {
  AddrMessage,
  CFCheckptMessage,
  CFHeadersMessage,
  CFilterMessage,
  COMMANDS,
  type Command,
  encodePayload,
  GetAddrMessage,
  GetCFCheckptMessage,
  GetCFHeadersMessage,
  GetCFiltersMessage,
  GetDataMessage,
  GetHeadersMessage,
  GetProofMessage,
  GetSnapshotInfoMessage,
  GetSnapshotMessage,
  HeadersMessage,
  INV_BLOCK,
  INV_TX,
  type InvItem,
  InvMessage,
  isCommand,
  MAX_ADDR_ENTRIES,
  MAX_CFCHECKPT_HEADERS,
  MAX_CFILTER_BYTES,
  MAX_GETCFHEADERS,
  MAX_HEADERS,
  MAX_INV_ENTRIES,
  MAX_LOCATOR_HASHES,
  MAX_PROOF_TXIDS,
  maxPayloadBytes,
  NotFoundMessage,
  PingMessage,
  PongMessage,
  ProofMessage,
  RejectMessage,
  SendHeadersMessage,
  SnapshotChunkMessage,
  SnapshotInfoMessage,
  UdpAddrMessage,
  VerackMessage,
  VersionMessage,
  type WireMessage,
} from "../../src/schema/wire.js"
import { concat } from "../support/bytes.js"
import { pay, type Spendable, TestChain, testKey } from "../support/chain.js"

/**
 * frames.ts generates the fuzzer's input: seeded, so a seed and a session number name one sequence of
 * frames exactly. Three sources, mixed per session: valid frames of every wire command (built from a
 * real regtest chain, so blocks, headers and transactions can pass the consensus checks and reach the
 * deep end of the node), the same frames mutated (bit flips, inserted and deleted bytes, truncation,
 * changed length or command, payloads replaced by random bytes under a recomputed valid checksum so
 * they get past the checksum to the decoders), and fully random bytes.
 */

// ---------------------------------------------------------------------------------------------------
// The PRNG

/** Rng is xoshiro128** seeded through splitmix32: fast, and one seed gives one sequence on every platform. */
export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: number) {
    let s = seed >>> 0
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0
      let z = s
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
      return (z ^ (z >>> 16)) >>> 0
    }
    this.a = next()
    this.b = next()
    this.c = next()
    this.d = next() | 1
  }

  /** u32 is the next 32 random bits. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0
    const t = this.b << 9
    this.c ^= this.a
    this.d ^= this.b
    this.b ^= this.c
    this.a ^= this.d
    this.c ^= t
    this.d = rotl(this.d, 11)
    return result
  }

  /** float is uniform in [0, 1). */
  float(): number {
    return this.u32() / 0x1_0000_0000
  }

  /** int is uniform in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n)
  }

  /** between is uniform in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1)
  }

  /** chance is true with probability p. */
  chance(p: number): boolean {
    return this.float() < p
  }

  /** size is in [0, max], log-uniform: small sizes are as likely as large ones per order of magnitude. */
  size(max: number): number {
    return Math.min(max, Math.floor((max + 1) ** this.float()) - 1)
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32())
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n)
    let i = 0
    for (; i + 4 <= n; i += 4) {
      const v = this.u32()
      out[i] = v
      out[i + 1] = v >>> 8
      out[i + 2] = v >>> 16
      out[i + 3] = v >>> 24
    }
    for (; i < n; i++) out[i] = this.u32()
    return out
  }

  pick<A>(xs: ReadonlyArray<A>): A {
    return xs[this.int(xs.length)]!
  }

  /** weighted picks a key of `weights` with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as Array<[K, number]>
    let total = 0
    for (const [, w] of entries) total += w
    let x = this.float() * total
    for (const [k, w] of entries) {
      x -= w
      if (x < 0) return k
    }
    return entries[entries.length - 1]![0]
  }
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k))

/** sessionSeed mixes the run's seed and a session number into the seed of that session's Rng. */
export const sessionSeed = (seed: number, session: number): number => {
  let h = Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) ^ Math.imul(session + 1, 0x165667b1)
  h = Math.imul(h ^ (h >>> 15), 0x85ebca77)
  return (h ^ (h >>> 13)) >>> 0
}

// ---------------------------------------------------------------------------------------------------
// The corpus: a real regtest chain

/** Corpus is what valid frames are built from: a regtest chain's blocks, headers, hashes and signed transactions. */
export interface Corpus {
  readonly magic: Uint8Array
  /** blocks 1..n of the fixture chain, encoded (genesis is every node's already) */
  readonly blocks: ReadonlyArray<Uint8Array>
  /** headers of blocks 1..n */
  readonly headers: ReadonlyArray<BlockHeader>
  /** hashes of blocks 0..n */
  readonly hashes: ReadonlyArray<BlockHash>
  /** signed transactions spending the chain's mature coinbases (valid once a node has the chain) */
  readonly txs: ReadonlyArray<Uint8Array>
  readonly txValues: ReadonlyArray<Tx>
  readonly txids: ReadonlyArray<TxId>
  /** outpoints of the chain's coinbases, for random transactions that spend something real */
  readonly outpoints: ReadonlyArray<Spendable["outpoint"]>
  /** the time of the chain's tip, seconds */
  readonly tipTime: number
}

let corpusMemo: Corpus | undefined

/**
 * corpus builds (once per process) a regtest chain of 111 blocks, the last one carrying transactions,
 * plus more signed transactions valid on top of it, and a chain of two unconfirmed ones.
 */
export const corpus = (): Corpus => {
  if (corpusMemo !== undefined) return corpusMemo
  const backend = loadDefaultBackend().backend
  const miner = testKey(backend, 1)
  const bob = testKey(backend, 2)
  const chain = new TestChain(regtest, backend, miner)
  chain.registerKey(bob)
  chain.mine(110)
  const mature = chain.matureCoins().filter((s) => s.coin.coinbase)
  const spend = (s: Spendable, fee: bigint) => chain.spend([s], [pay(bob, s.coin.value - fee)])
  const confirmed = [spend(mature[0]!, 1_000n), spend(mature[1]!, 2_000n)]
  const fees = 3_000n
  const subsidy = 50n * 100_000_000n
  chain.connect(chain.candidate(confirmed, { coinbase: chain.coinbase(subsidy + fees) }))
  const loose: Array<Tx> = []
  for (let i = 2; i < Math.min(mature.length, 10); i++) loose.push(spend(mature[i]!, BigInt(1_000 * i)))
  // a child spending the first loose transaction's output (unconfirmed chain)
  const parent = loose[0]!
  const parentOut: Spendable = {
    outpoint: { txid: txidOf(encodeTx(parent)), index: 0 },
    coin: { value: parent.outputs[0]!.value, pubkey: bob.pubkey, height: 0 as Height, coinbase: false },
    key: bob,
  }
  loose.push(chain.spend([parentOut], [pay(miner, parentOut.coin.value - 500n)]))
  const txValues = [...confirmed, ...loose]
  const txs = txValues.map(encodeTx)
  corpusMemo = {
    magic: regtest.magic,
    blocks: chain.blocks.slice(1).map(encodeBlock),
    headers: chain.blocks.slice(1).map((b) => b.header),
    hashes: chain.hashes,
    txs,
    txValues,
    txids: txs.map(txidOf),
    outpoints: chain.blocks.slice(1).map((b) => ({ txid: txidOf(encodeTx(b.txs[0]!)), index: 0 })),
    tipTime: chain.times[chain.times.length - 1]!,
  }
  return corpusMemo
}

// ---------------------------------------------------------------------------------------------------
// Valid messages

const ASCII = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).join("")

const ascii = (rng: Rng, max: number): string => {
  const n = rng.size(max)
  let s = ""
  for (let i = 0; i < n; i++) s += ASCII[rng.int(ASCII.length)]
  return s
}

/** host16 is a random wire address: mostly IPv4-mapped, sometimes any 16 bytes. */
const host16 = (rng: Rng): Uint8Array => {
  if (rng.chance(0.2)) return rng.bytes(16)
  const h = new Uint8Array(16)
  h[10] = 0xff
  h[11] = 0xff
  h.set(rng.bytes(4), 12)
  return h
}

const hash32 = (rng: Rng, c: Corpus): Uint8Array =>
  rng.chance(0.5)
    ? rng.pick(c.hashes)
    : rng.chance(0.3)
      ? rng.pick(c.txids)
      : rng.chance(0.1)
        ? new Uint8Array(32)
        : rng.bytes(32)

/** count is an entry count: mostly a handful, sometimes up to `max`. */
const count = (rng: Rng, max: number, typical = 16): number =>
  rng.chance(0.9) ? rng.int(Math.min(max, typical) + 1) : rng.size(max)

const invItems = (rng: Rng, c: Corpus): Array<InvItem> =>
  Array.from({ length: count(rng, Math.min(MAX_INV_ENTRIES, 3_000)) }, () => {
    const type = rng.chance(0.5) ? INV_TX : INV_BLOCK
    const hash =
      type === INV_TX && rng.chance(0.5)
        ? rng.pick(c.txids)
        : type === INV_BLOCK && rng.chance(0.5)
          ? rng.pick(c.hashes)
          : hash32(rng, c)
    return { type, hash }
  })

const randomTx = (rng: Rng, c: Corpus): Tx => ({
  version: rng.chance(0.8) ? 1 : rng.u32(),
  inputs: Array.from({ length: rng.int(4) }, () => ({
    prevout: rng.chance(0.5)
      ? rng.pick(c.outpoints)
      : { txid: hash32(rng, c) as TxId, index: rng.chance(0.8) ? rng.int(4) : rng.u32() },
    witness: rng.bytes(rng.chance(0.8) ? 64 : rng.int(101)),
  })),
  outputs: Array.from({ length: rng.int(4) }, () => ({
    value: (rng.chance(0.8) ? BigInt(rng.u32()) : rng.u64()) as Amount,
    pubkey: rng.bytes(32) as PublicKey,
  })),
  lockTime: rng.chance(0.8) ? 0 : rng.u32(),
})

const randomHeader = (rng: Rng, c: Corpus): BlockHeader => ({
  version: rng.chance(0.8) ? 1 : rng.u32(),
  prev: (rng.chance(0.7) ? rng.pick(c.hashes) : rng.bytes(32)) as BlockHash,
  merkleRoot: rng.bytes(32),
  time: rng.chance(0.7) ? c.tipTime + rng.between(-7_200, 7_200) : rng.u32(),
  bits: rng.chance(0.8) ? regtest.powLimitBits : rng.u32(),
  nonce: rng.u32(),
})

/** blockPayload is a fixture block, or a new block on a known parent (merkle root right or not), or junk that parses. */
const blockPayload = (rng: Rng, c: Corpus): Uint8Array => {
  // log-uniform over the chain: early blocks (whose parents a node has) come often
  if (rng.chance(0.5)) return c.blocks[rng.size(c.blocks.length - 1)]!
  const parent = rng.int(c.hashes.length)
  const coinbase = makeCoinbase(parent + 1, [
    { value: (50n * 100_000_000n) as Amount, pubkey: rng.bytes(32) as PublicKey },
  ])
  const txs: Array<Tx> = rng.chance(0.9) ? [coinbase] : []
  for (let i = rng.int(3); i > 0; i--) txs.push(rng.chance(0.5) ? randomTx(rng, c) : rng.pick(c.txValues))
  const block: Block = assembleBlock(
    {
      prev: c.hashes[parent]!,
      time: c.tipTime - (c.hashes.length - parent) * 60 + rng.between(-600, 7_300),
      bits: rng.chance(0.9) ? regtest.powLimitBits : rng.u32(),
    },
    txs,
  )
  const header = rng.chance(0.8) ? block.header : randomHeader(rng, c)
  return encodeBlock({ header: { ...header, nonce: rng.u32() }, txs: block.txs })
}

/** validPayload is a valid payload of `command` (valid by the codec; by the rules, sometimes). */
export const validPayload = (rng: Rng, c: Corpus, command: Command): Uint8Array => {
  const trusted = true
  let msg: WireMessage
  switch (command) {
    case "version":
      msg = new VersionMessage(
        {
          protocolVersion: rng.chance(0.8) ? 1 : rng.u32(),
          services: rng.chance(0.8) ? rng.int(8) : rng.u32(),
          bestHeight: rng.chance(0.8) ? rng.int(200) : rng.u32(),
          userAgent: ascii(rng, 256),
          nonce: rng.u64(),
          listenPort: rng.chance(0.5) ? 0 : rng.int(0x10000),
          theirAddress: { host: host16(rng), port: rng.int(0x10000) },
        },
        trusted,
      )
      break
    case "verack":
      msg = new VerackMessage(undefined, trusted)
      break
    case "ping":
      msg = new PingMessage({ nonce: rng.u64() }, trusted)
      break
    case "pong":
      msg = new PongMessage({ nonce: rng.u64() }, trusted)
      break
    case "inv":
      msg = new InvMessage({ items: invItems(rng, c) }, trusted)
      break
    case "getdata":
      msg = new GetDataMessage({ items: invItems(rng, c) }, trusted)
      break
    case "notfound":
      msg = new NotFoundMessage({ items: invItems(rng, c) }, trusted)
      break
    case "tx":
      return rng.chance(0.4) ? rng.pick(c.txs) : encodeTx(randomTx(rng, c))
    case "block":
      return blockPayload(rng, c)
    case "getheaders":
      msg = new GetHeadersMessage(
        {
          locator: Array.from({ length: count(rng, MAX_LOCATOR_HASHES, 12) }, () =>
            rng.chance(0.8) ? rng.pick(c.hashes) : (rng.bytes(32) as BlockHash),
          ),
          stop: (rng.chance(0.7) ? new Uint8Array(32) : hash32(rng, c)) as BlockHash,
        },
        trusted,
      )
      break
    case "headers": {
      let headers: Array<BlockHeader>
      if (rng.chance(0.6)) {
        const from = rng.size(c.headers.length - 1)
        headers = c.headers.slice(from, from + 1 + count(rng, MAX_HEADERS, 40))
      } else {
        headers = Array.from({ length: count(rng, MAX_HEADERS) }, () => randomHeader(rng, c))
      }
      msg = new HeadersMessage({ headers }, trusted)
      break
    }
    case "getaddr":
      msg = new GetAddrMessage(undefined, trusted)
      break
    case "addr":
      msg = new AddrMessage(
        {
          entries: Array.from({ length: count(rng, MAX_ADDR_ENTRIES, 10) }, () => ({
            time: rng.chance(0.8) ? c.tipTime + rng.between(-86_400 * 30, 3_600) : rng.u32(),
            services: rng.chance(0.8) ? rng.int(8) : rng.u32(),
            host: host16(rng),
            port: rng.chance(0.5) ? regtest.p2pPort : rng.int(0x10000),
          })),
        },
        trusted,
      )
      break
    case "udpaddr":
      msg = new UdpAddrMessage(
        {
          entries: Array.from({ length: count(rng, MAX_ADDR_ENTRIES, 10) }, () => ({
            time: rng.chance(0.8) ? c.tipTime + rng.between(-86_400 * 30, 3_600) : rng.u32(),
            services: rng.chance(0.8) ? rng.int(8) : rng.u32(),
            nodeKey: hash32(rng, c),
            host: host16(rng),
            port: rng.chance(0.5) ? regtest.udpPort : rng.int(0x10000),
          })),
        },
        trusted,
      )
      break
    case "getcfilters":
    case "getcfheaders": {
      // mostly type 0 and a stop block of the corpus; sometimes a start above it, another type, any hash
      const fields = {
        filterType: rng.chance(0.9) ? 0 : rng.int(256),
        startHeight: rng.chance(0.8) ? rng.int(c.hashes.length) : rng.u32(),
        stopHash: hash32(rng, c),
      }
      msg =
        command === "getcfilters"
          ? new GetCFiltersMessage(fields, trusted)
          : new GetCFHeadersMessage(fields, trusted)
      break
    }
    case "cfilter":
      msg = new CFilterMessage(
        {
          filterType: rng.chance(0.9) ? 0 : rng.int(256),
          blockHash: hash32(rng, c),
          filter: rng.bytes(rng.chance(0.95) ? rng.int(64) : rng.size(MAX_CFILTER_BYTES)),
        },
        trusted,
      )
      break
    case "cfheaders":
      msg = new CFHeadersMessage(
        {
          filterType: rng.chance(0.9) ? 0 : rng.int(256),
          stopHash: hash32(rng, c),
          previousFilterHeader: hash32(rng, c),
          filterHashes: Array.from({ length: count(rng, MAX_GETCFHEADERS) }, () => hash32(rng, c)),
        },
        trusted,
      )
      break
    case "getcfcheckpt":
      msg = new GetCFCheckptMessage(
        { filterType: rng.chance(0.9) ? 0 : rng.int(256), stopHash: hash32(rng, c) },
        trusted,
      )
      break
    case "cfcheckpt":
      msg = new CFCheckptMessage(
        {
          filterType: rng.chance(0.9) ? 0 : rng.int(256),
          stopHash: hash32(rng, c),
          filterHeaders: Array.from({ length: count(rng, MAX_CFCHECKPT_HEADERS, 4) }, () => hash32(rng, c)),
        },
        trusted,
      )
      break
    case "reject":
      msg = new RejectMessage(
        rng.chance(0.5)
          ? { command: ascii(rng, 12), reason: ascii(rng, 111), hash: hash32(rng, c) }
          : { command: ascii(rng, 12), reason: ascii(rng, 111) },
        trusted,
      )
      break
    case "sendheaders":
      msg = new SendHeadersMessage(undefined, trusted)
      break
    case "getsnapinfo":
      msg = new GetSnapshotInfoMessage({ snapshotId: hash32(rng, c) }, trusted)
      break
    case "snapinfo":
      msg = new SnapshotInfoMessage({ header: rng.bytes(rng.size(4_096)) }, trusted)
      break
    case "getsnapshot":
      msg = new GetSnapshotMessage({ snapshotId: hash32(rng, c), chunkIndex: rng.u32() }, trusted)
      break
    case "snapchunk":
      msg = new SnapshotChunkMessage(
        { snapshotId: hash32(rng, c), chunkIndex: rng.int(16), entries: rng.bytes(rng.size(4_096)) },
        trusted,
      )
      break
    case "getproof":
      msg = new GetProofMessage(
        {
          blockHash: hash32(rng, c),
          txids: Array.from({ length: count(rng, MAX_PROOF_TXIDS, 8) }, () => hash32(rng, c)),
        },
        trusted,
      )
      break
    case "proof": {
      // a real proof of some of a corpus block's transactions, or any bytes (a proof is opaque to the codec)
      if (rng.chance(0.3)) return rng.bytes(rng.size(2_048))
      const { block, txids } = decodeBlockWithTxids(rng.pick(c.blocks)).pipe(Either.getOrThrow)
      msg = new ProofMessage(
        {
          bytes: buildProof(
            block.header,
            txids,
            txids.map(() => rng.chance(0.5)),
          ),
        },
        trusted,
      )
      break
    }
  }
  return encodePayload(msg)
}

// ---------------------------------------------------------------------------------------------------
// Frames and their mutations

/** MUTATIONS weighs how the fuzzer makes each frame; the names appear in the summary's breakdown. */
export const MUTATIONS = {
  /** a valid frame of a valid payload */
  valid: 22,
  /** 1..8 bits of the payload flipped; length and checksum made to match */
  "payload-flip": 14,
  /** 1..16 bytes inserted into the payload; length and checksum made to match */
  "payload-insert": 7,
  /** 1..16 bytes deleted from the payload; length and checksum made to match */
  "payload-delete": 7,
  /** the payload cut short; length and checksum made to match */
  "payload-truncate": 6,
  /** bytes appended to the payload; length and checksum made to match */
  "payload-extend": 4,
  /** the payload replaced by random bytes under a valid checksum */
  "payload-random": 10,
  /** the head of one valid payload and the tail of another of the same command */
  "payload-splice": 4,
  /** the payload's leading count replaced by a large one (inv, addr, headers: the allocation guard) */
  "count-inflate": 4,
  /** a valid payload under another command's name */
  "command-swap": 6,
  /** a valid frame with a wrong checksum */
  "bad-checksum": 3,
  /** the header's length field changed, the payload not (the stream loses its framing) */
  "length-change": 2,
  /** 1..3 bits of the 24-byte header flipped */
  "header-flip": 2,
  /** the frame cut short (the next frame's bytes complete it) */
  "frame-truncate": 1,
  /** random bytes */
  "random-bytes": 1,
  /** our magic, a random command field, random length and payload */
  "random-command": 1,
} as const

/** Mutation names one way of making a frame. */
export type Mutation = keyof typeof MUTATIONS

/** FRAMING_MUTATIONS break the frame header or the stream rather than the payload. */
const FRAMING_MUTATIONS: ReadonlyArray<Mutation> = [
  "length-change",
  "header-flip",
  "frame-truncate",
  "random-bytes",
  "random-command",
]

/** FuzzFrame is one generated frame. */
export interface FuzzFrame {
  readonly bytes: Uint8Array
  readonly mutation: Mutation
  /** the frame's header names a known command and its true length within the cap: the framer keeps its place after it */
  readonly aligned: boolean
}

const COMMAND_BYTES = 12

/** commandField is a 12-byte command field: ASCII, NUL-padded. */
const commandField = (name: string): Uint8Array => {
  const out = new Uint8Array(COMMAND_BYTES)
  for (let i = 0; i < Math.min(name.length, COMMAND_BYTES); i++) out[i] = name.charCodeAt(i)
  return out
}

/** frameOf frames `payload` under `command`, with the true length and checksum unless told otherwise. */
export const frameOf = (
  magic: Uint8Array,
  command: string | Uint8Array,
  payload: Uint8Array,
  options: { readonly length?: number; readonly checksum?: Uint8Array } = {},
): Uint8Array => {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length)
  out.set(magic.subarray(0, 4), 0)
  out.set(typeof command === "string" ? commandField(command) : command.subarray(0, COMMAND_BYTES), 4)
  new DataView(out.buffer).setUint32(16, options.length ?? payload.length, true)
  out.set(options.checksum ?? frameChecksum(payload), 20)
  out.set(payload, FRAME_HEADER_BYTES)
  return out
}

/** commandOf reads a frame header's command as the Framer does; undefined when it names none. */
const commandOf = (header: Uint8Array): Command | undefined => {
  let end = 0
  while (end < COMMAND_BYTES && header[4 + end] !== 0) end++
  let name = ""
  for (let i = 0; i < COMMAND_BYTES; i++) {
    const b = header[4 + i]!
    if (i < end ? b < 0x21 || b > 0x7e : b !== 0) return undefined
    if (i < end) name += String.fromCharCode(b)
  }
  return isCommand(name) ? name : undefined
}

/** isAligned: `bytes` is exactly one frame the framer accepts the header of (its checksum may be wrong). */
export const isAligned = (magic: Uint8Array, bytes: Uint8Array): boolean => {
  if (bytes.length < FRAME_HEADER_BYTES) return false
  for (let i = 0; i < 4; i++) if (bytes[i] !== magic[i]) return false
  const command = commandOf(bytes)
  if (command === undefined) return false
  const length = new DataView(bytes.buffer, bytes.byteOffset, FRAME_HEADER_BYTES).getUint32(16, true)
  return (
    length === bytes.length - FRAME_HEADER_BYTES &&
    length <= maxPayloadBytes(command) &&
    length <= MAX_FRAME_PAYLOAD
  )
}

/** writeVarint encodes a CompactSize, including the 9-byte form the codec never writes. */
const varintBytes = (v: number): Uint8Array => {
  if (v < 0xfd) return Uint8Array.of(v)
  if (v <= 0xffff) return Uint8Array.of(0xfd, v & 0xff, v >>> 8)
  if (v <= 0xffffffff) return Uint8Array.of(0xfe, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24)
  const out = new Uint8Array(9)
  out[0] = 0xff
  new DataView(out.buffer).setBigUint64(1, BigInt(v), true)
  return out
}

const varintLength = (first: number | undefined): number =>
  first === undefined ? 0 : first < 0xfd ? 1 : first === 0xfd ? 3 : first === 0xfe ? 5 : 9

/** runOf is `n` bytes of one kind a decoder may trip on: random, zeros, 0xff. */
const runOf = (rng: Rng, n: number): Uint8Array =>
  rng.chance(0.7) ? rng.bytes(n) : new Uint8Array(n).fill(rng.chance(0.5) ? 0 : 0xff)

/**
 * mutated makes one frame of `command` by mutation `m` of a valid payload. Lengths and checksums are
 * recomputed wherever the mutation is of the payload, so the frame gets past the checksum to the decoder.
 */
export const mutated = (rng: Rng, c: Corpus, command: Command, m: Mutation): FuzzFrame => {
  const magic = c.magic
  const payload = validPayload(rng, c, command)
  const cap = Math.min(maxPayloadBytes(command), MAX_FRAME_PAYLOAD)
  let bytes: Uint8Array
  switch (m) {
    case "valid":
      bytes = frameOf(magic, command, payload)
      break
    case "payload-flip": {
      const p = payload.slice()
      if (p.length === 0) {
        bytes = frameOf(magic, command, rng.bytes(rng.between(1, 9)))
        break
      }
      for (let n = rng.between(1, 8); n > 0; n--) {
        // flips near the start hit counts and lengths, which guard allocations
        const at = rng.chance(0.3) ? rng.int(Math.min(p.length, 16)) : rng.int(p.length)
        p[at]! ^= 1 << rng.int(8)
      }
      bytes = frameOf(magic, command, p)
      break
    }
    case "payload-insert": {
      const at = rng.int(payload.length + 1)
      bytes = frameOf(
        magic,
        command,
        concat(payload.subarray(0, at), runOf(rng, rng.between(1, 16)), payload.subarray(at)),
      )
      break
    }
    case "payload-delete": {
      const at = rng.int(payload.length + 1)
      bytes = frameOf(
        magic,
        command,
        concat(payload.subarray(0, at), payload.subarray(at + rng.between(1, 16))),
      )
      break
    }
    case "payload-truncate":
      bytes = frameOf(magic, command, payload.slice(0, rng.int(payload.length + 1)))
      break
    case "payload-extend":
      bytes = frameOf(magic, command, concat(payload, runOf(rng, rng.between(1, 64))))
      break
    case "payload-random":
      bytes = frameOf(magic, command, runOf(rng, rng.size(Math.min(cap, rng.chance(0.9) ? 2_000 : 100_000))))
      break
    case "payload-splice": {
      const other = validPayload(rng, c, command)
      bytes = frameOf(
        magic,
        command,
        concat(payload.subarray(0, rng.int(payload.length + 1)), other.subarray(rng.int(other.length + 1))),
      )
      break
    }
    case "count-inflate": {
      const big = rng.pick([
        0xfc,
        0xfd,
        0xff,
        0xffff,
        0x1_0000,
        0xffff_ffff,
        2 ** 40,
        cap,
        cap + 1,
        rng.u32(),
      ])
      const skip = rng.chance(0.7) ? varintLength(payload[0]) : 0
      bytes = frameOf(magic, command, concat(varintBytes(big), payload.subarray(skip)))
      break
    }
    case "command-swap":
      bytes = frameOf(magic, rng.pick(COMMANDS.filter((x) => x !== command)), payload)
      break
    case "bad-checksum": {
      const sum = frameChecksum(payload).slice()
      sum[rng.int(4)]! ^= 1 << rng.int(8)
      bytes = frameOf(magic, command, payload, { checksum: sum })
      break
    }
    case "length-change": {
      const length = rng.chance(0.5)
        ? Math.max(0, payload.length + rng.pick([-1, 1]) * rng.between(1, 100))
        : rng.chance(0.5)
          ? rng.u32()
          : cap + 1
      bytes = frameOf(magic, command, payload, { length })
      break
    }
    case "header-flip": {
      bytes = frameOf(magic, command, payload)
      for (let n = rng.between(1, 3); n > 0; n--) bytes[rng.int(FRAME_HEADER_BYTES)]! ^= 1 << rng.int(8)
      break
    }
    case "frame-truncate": {
      const whole = frameOf(magic, command, payload)
      bytes = whole.slice(0, rng.int(whole.length))
      break
    }
    case "random-bytes":
      bytes = rng.bytes(rng.size(4_096) + 1)
      break
    case "random-command": {
      const field = rng.chance(0.5) ? commandField(ascii(rng, 12)) : rng.bytes(COMMAND_BYTES)
      const body = rng.bytes(rng.size(512))
      bytes = frameOf(magic, field, body, rng.chance(0.8) ? {} : { length: rng.u32() })
      break
    }
  }
  return { bytes, mutation: m, aligned: isAligned(magic, bytes) }
}

/** COMMAND_WEIGHTS: what an attacker sends after the handshake (a second version or verack ends the connection). */
const COMMAND_WEIGHTS: Readonly<Record<Command, number>> = {
  version: 0.5,
  verack: 0.5,
  ping: 8,
  pong: 5,
  inv: 10,
  getdata: 6,
  notfound: 5,
  tx: 10,
  block: 8,
  getheaders: 6,
  headers: 8,
  getaddr: 3,
  addr: 6,
  getcfilters: 4,
  cfilter: 2,
  getcfheaders: 4,
  cfheaders: 2,
  getcfcheckpt: 3,
  cfcheckpt: 2,
  udpaddr: 4,
  reject: 4,
  sendheaders: 3,
  getproof: 4,
  proof: 2,
  getsnapinfo: 2,
  snapinfo: 2,
  getsnapshot: 3,
  snapchunk: 3,
}

/** handshakeFrames are a well-behaved version and verack: the attacker looks honest until its next frame. */
export const handshakeFrames = (rng: Rng, c: Corpus): ReadonlyArray<FuzzFrame> => {
  const version = new VersionMessage(
    {
      protocolVersion: 1,
      services: 1,
      bestHeight: rng.int(120),
      userAgent: "/fuzz:0.1/",
      nonce: rng.u64(),
      listenPort: rng.chance(0.5) ? 0 : regtest.p2pPort,
      theirAddress: { host: host16(rng), port: regtest.p2pPort },
    },
    true,
  )
  return [
    { bytes: frameOf(c.magic, "version", encodePayload(version)), mutation: "valid", aligned: true },
    { bytes: frameOf(c.magic, "verack", new Uint8Array(0)), mutation: "valid", aligned: true },
  ]
}

/** SessionOptions shape one connection's worth of frames. */
export interface SessionOptions {
  /** at most this many frames after the handshake */
  readonly maxFrames: number
  /** the probability that the session starts with a valid handshake */
  readonly handshakeRate: number
  /**
   * the receiver is a node, which drops a peer for a bad block or headers message: those come from
   * the fixture chain until the session's last frame (a bare Framer reads on, so it gets them mutated)
   */
  readonly node: boolean
}

/** Session is one attacker connection's frames, in order. */
export interface Session {
  readonly handshake: boolean
  readonly frames: ReadonlyArray<FuzzFrame>
}

/**
 * isFatal: after this frame the node may hang up: the framing is lost, a second version or verack
 * came after the handshake, or it is a block or headers message, which (unless it is the fixture
 * chain's) Sync answers by dropping the peer when it does not decode or breaks a rule, as Core does.
 */
const isFatal = (frame: FuzzFrame, command: Command, handshake: boolean, node: boolean): boolean =>
  !frame.aligned ||
  (handshake && (command === "version" || command === "verack")) ||
  (node && (command === "block" || command === "headers"))

/** chainFrame is a valid frame of the fixture chain: one of its blocks, or a run of its headers. */
const chainFrame = (rng: Rng, c: Corpus, command: "block" | "headers"): FuzzFrame => {
  const from = rng.size(c.blocks.length - 1)
  const payload =
    command === "block"
      ? c.blocks[from]!
      : encodePayload(
          new HeadersMessage(
            { headers: c.headers.slice(from, from + 1 + count(rng, MAX_HEADERS, 40)) },
            true,
          ),
        )
  return { bytes: frameOf(c.magic, command, payload), mutation: "valid", aligned: true }
}

/**
 * session generates one connection's frames: usually a valid handshake, then fuzzed frames of any
 * command that keep the framing (the node scores them, and may ban, but reads on; for a node, blocks
 * and headers are the fixture chain's), then, in half the sessions, one frame that breaks the framing
 * or the protocol, or a fuzzed block or headers message: the node hangs up there, so such a frame
 * anywhere earlier would waste the rest of the session.
 */
export const session = (rng: Rng, c: Corpus, options: SessionOptions): Session => {
  const handshake = rng.chance(options.handshakeRate)
  const frames: Array<FuzzFrame> = handshake ? [...handshakeFrames(rng, c)] : []
  const end = frames.length + (handshake ? rng.between(1, options.maxFrames) : rng.between(1, 4))
  const draw = () => {
    const command = handshake ? rng.weighted(COMMAND_WEIGHTS) : rng.pick(COMMANDS)
    const frame = mutated(rng, c, command, rng.weighted(MUTATIONS))
    return { command, frame, fatal: isFatal(frame, command, handshake, options.node) }
  }
  while (frames.length < end) {
    const { command, frame, fatal } = draw()
    if (!fatal) frames.push(frame)
    // blocks and headers: the chain's own until the last frame
    else if (options.node && handshake && (command === "block" || command === "headers"))
      frames.push(chainFrame(rng, c, command))
  }
  if (rng.chance(0.25)) {
    // end on a frame that breaks the framing itself
    const command = rng.pick(COMMANDS)
    frames.push(mutated(rng, c, command, rng.pick(FRAMING_MUTATIONS)))
  } else if (rng.chance(1 / 3)) {
    // or on any frame the node hangs up on (a few draws find one)
    for (let tries = 0; tries < 50; tries++) {
      const { frame, fatal } = draw()
      if (!fatal) continue
      frames.push(frame)
      break
    }
  }
  return { handshake, frames }
}

/**
 * chunks cuts a byte stream where a TCP receiver might see it cut: whole, at random points (at most
 * `maxChunks` pieces), or dribbled a few bytes at a time at the start.
 */
export const chunks = (rng: Rng, stream: Uint8Array, maxChunks: number): Array<Uint8Array> => {
  if (stream.length <= 1 || rng.chance(0.2)) return [stream]
  const cuts = new Set<number>()
  if (rng.chance(0.1)) {
    // dribble: the first bytes one to three at a time (splits inside the header)
    for (
      let at = rng.between(1, 3);
      at < Math.min(stream.length, 3 * maxChunks, 120);
      at += rng.between(1, 3)
    )
      cuts.add(at)
  }
  for (let k = rng.size(Math.min(maxChunks, stream.length - 1)); k > 0; k--)
    cuts.add(rng.between(1, stream.length - 1))
  const points = [...cuts]
    .filter((x) => x < stream.length)
    .sort((a, b) => a - b)
    .slice(0, maxChunks - 1)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const at of points) {
    out.push(stream.subarray(from, at))
    from = at
  }
  out.push(stream.subarray(from))
  return out
}

/** concatFrames is a session's frames as one byte stream. */
export const concatFrames = (frames: ReadonlyArray<FuzzFrame>): Uint8Array =>
  concat(...frames.map((f) => f.bytes))

/** hex is a short hex dump for reports. */
export const hex = (bytes: Uint8Array, max = 256): string =>
  Buffer.from(bytes.subarray(0, max)).toString("hex") + (bytes.length > max ? `…(${bytes.length} bytes)` : "")
