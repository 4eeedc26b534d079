import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { sha256 } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import {
  checkChunk,
  checkSnapshotHeaders,
  decodeChunk,
  decodeSnapshotHeader,
  encodeChunk,
  makeSnapshotHeader,
  type SnapshotEntry,
  snapshotCommitted,
} from "../../src/consensus/snapshot.js"
import { toHex } from "../../src/schema/hex.js"
import type { Amount, BlockHash, Height, PublicKey } from "../../src/schema/primitives.js"

const entry = (t: number, index: number): SnapshotEntry => ({
  txid: new Uint8Array(32).fill(t),
  index,
  coin: {
    value: BigInt(1000 + t) as Amount,
    pubkey: new Uint8Array(32).fill(7) as PublicKey,
    height: 5 as Height,
    coinbase: false,
  },
})

const chunks = [encodeChunk([entry(1, 0), entry(1, 2), entry(2, 0)]), encodeChunk([entry(3, 1), entry(4, 0)])]
const { header, bytes } = makeSnapshotHeader({
  networkMagic: regtest.magic,
  baseHash: regtest.genesisHash,
  baseHeight: 0,
  coinCount: 5,
  chunkSize: 3,
  txoutsetHash: new Uint8Array(32).fill(9),
  chunkHashes: chunks.map(sha256),
})

describe("snapshot format", () => {
  it("a header decodes to itself and its id is the sha256 of the fields before it", () => {
    const decoded = Either.getOrThrow(decodeSnapshotHeader(bytes))
    expect(toHex(makeSnapshotHeader(decoded).bytes)).toBe(toHex(bytes))
    expect([decoded.coinCount, decoded.chunkSize, decoded.baseHeight, decoded.chunkHashes.length]).toEqual([
      5, 3, 0, 2,
    ])
    expect(toHex(decoded.snapshotId)).toBe(toHex(header.snapshotId))
    expect(toHex(header.snapshotId)).toBe(toHex(sha256(bytes.subarray(0, bytes.length - 32))))
  })

  it("any changed header byte is refused (the id no longer matches, or the field is invalid)", () => {
    for (let i = 0; i < bytes.length; i++) {
      const changed = new Uint8Array(bytes)
      changed[i] = changed[i]! ^ 0x80
      expect(Either.isLeft(decodeSnapshotHeader(changed)), `byte ${i}`).toBe(true)
    }
  })

  it("a chunk count that does not fit the coin count is refused", () => {
    const bad = makeSnapshotHeader({ ...header, coinCount: 7 }).bytes
    expect(decodeSnapshotHeader(bad)).toMatchObject({ left: { what: "snapshot.chunkCount" } })
  })

  it("chunks check against their hash, their count and the file order", () => {
    expect(Either.map(checkChunk(header, 0, chunks[0]!, undefined), (e) => e.length)).toEqual(Either.right(3))
    expect(Either.isRight(checkChunk(header, 1, chunks[1]!, entry(2, 0)))).toBe(true)
    expect(checkChunk(header, 1, chunks[0]!, undefined)).toMatchObject({ left: { reason: "bad-chunk" } })
    expect(checkChunk(header, 1, chunks[1]!, entry(3, 1))).toMatchObject({
      left: { detail: "chunk 1 is out of order" },
    })
    expect(checkChunk(header, 2, chunks[1]!, undefined)).toMatchObject({ left: { detail: "no chunk 2" } })
  })

  it("a chunk with a repeated or unsorted outpoint does not decode", () => {
    expect(Either.isLeft(decodeChunk(encodeChunk([entry(1, 0), entry(1, 0)])))).toBe(true)
    expect(Either.isLeft(decodeChunk(encodeChunk([entry(2, 0), entry(1, 5)])))).toBe(true)
    expect(Either.isLeft(decodeChunk(chunks[0]!.subarray(0, 50)))).toBe(true)
  })

  it("only a committed value or the operator's snapshot id makes a snapshot loadable", () => {
    const id = toHex(header.snapshotId)
    const committed = {
      height: 0,
      baseHash: toHex(header.baseHash),
      txoutsetHash: toHex(header.txoutsetHash),
      snapshotId: id,
    }
    expect(snapshotCommitted(header, [], undefined)).toBe(false)
    expect(snapshotCommitted(header, [], id.toUpperCase())).toBe(true)
    expect(snapshotCommitted(header, [committed], undefined)).toBe(true)
    expect(snapshotCommitted(header, [{ ...committed, txoutsetHash: "00".repeat(32) }], undefined)).toBe(
      false,
    )
    expect(snapshotCommitted(header, [{ ...committed, height: 1 }], "ab".repeat(32))).toBe(false)
  })

  it("the header chain must start at this network's genesis and end at the base", () => {
    const now = regtest.genesis.header.time + 100
    expect(Either.isRight(checkSnapshotHeaders(regtest, header, [regtest.genesis.header], now))).toBe(true)
    const other = { ...regtest.genesis.header, nonce: regtest.genesis.header.nonce + 1 }
    expect(checkSnapshotHeaders(regtest, header, [other], now)).toMatchObject({
      left: { reason: "bad-headers" },
    })
    expect(
      checkSnapshotHeaders(
        regtest,
        { ...header, baseHash: new Uint8Array(32) as BlockHash },
        [regtest.genesis.header],
        now,
      ),
    ).toMatchObject({ left: { reason: "bad-headers" } })
    expect(checkSnapshotHeaders(regtest, header, [], now)).toMatchObject({ left: { reason: "bad-headers" } })
  })
})
