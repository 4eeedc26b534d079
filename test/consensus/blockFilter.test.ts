import { Either } from "effect"
import { describe, expect, it } from "vitest"
import {
  BASIC_FILTER,
  blockItems,
  buildFilter,
  decodeGcsValues,
  encodeGcs,
  FILTER_M,
  filterHash,
  filterHeader,
  keyItem,
  matchAny,
  outpointItem,
  ZERO_FILTER_HEADER,
} from "../../src/consensus/blockFilter.js"
import { sha256 } from "../../src/consensus/hash.js"
import { regtest } from "../../src/consensus/params.js"
import type { Block } from "../../src/schema/block.js"
import { fromHex, toHex } from "../../src/schema/hex.js"
import type { Amount, PublicKey, TxId } from "../../src/schema/primitives.js"
import type { Tx } from "../../src/schema/tx.js"

const hex = (s: string): Uint8Array => {
  const b = fromHex(s)
  if (b === undefined) throw new Error(`bad hex ${s}`)
  return b
}

/** rev turns Core's displayed uint256 (block hashes, filter headers) into its internal byte order. */
const rev = (s: string): Uint8Array => hex(s).reverse()

/** itemAt makes distinct, reproducible items of `len` bytes (a fixed seed: no flaky statistics). */
const itemAt = (seed: string, i: number, len = 32): Uint8Array =>
  sha256(new TextEncoder().encode(`${seed}:${i}`)).subarray(0, len)

const items = (seed: string, n: number, len = 32) => Array.from({ length: n }, (_, i) => itemAt(seed, i, len))

const right = <A, E>(e: Either.Either<A, E>): A => {
  if (Either.isLeft(e)) throw new Error(`expected Right, got ${String(e.left)}`)
  return e.right
}

// ---------------------------------------------------------------------------------------------
// BIP158's published vectors (bitcoin/src/test/data/blockfilters.json, some rows). Their items are
// scripts, not ours: the GCS coder is tested with their items; our item rule has its own tests.

/** outputScripts reads a Bitcoin block (segwit or not) far enough to list its output scripts. */
const outputScripts = (block: Uint8Array): Array<Uint8Array> => {
  let pos = 80
  const varint = (): number => {
    const b = block[pos++]!
    if (b < 0xfd) return b
    const n = b === 0xfd ? 2 : b === 0xfe ? 4 : 8
    let v = 0
    for (let i = 0; i < n; i++) v += block[pos++]! * 2 ** (8 * i)
    return v
  }
  const bytes = (n: number) => {
    const b = block.subarray(pos, pos + n)
    pos += n
    return b
  }
  const scripts: Array<Uint8Array> = []
  const txCount = varint()
  for (let t = 0; t < txCount; t++) {
    pos += 4
    const segwit = block[pos] === 0 && block[pos + 1] === 1
    if (segwit) pos += 2
    const ins = varint()
    for (let i = 0; i < ins; i++) {
      pos += 36
      bytes(varint())
      pos += 4
    }
    const outs = varint()
    for (let i = 0; i < outs; i++) {
      pos += 8
      scripts.push(bytes(varint()))
    }
    if (segwit) for (let i = 0; i < ins; i++) for (let k = varint(); k > 0; k--) bytes(varint())
    pos += 4
  }
  return scripts
}

/** basicItems is BIP158's item rule: output scripts but empty and OP_RETURN ones, and every non-empty spent script, as a set. */
const basicItems = (block: Uint8Array, prevScripts: ReadonlyArray<string>): Array<Uint8Array> => {
  const set = new Map<string, Uint8Array>()
  for (const s of outputScripts(block)) if (s.length > 0 && s[0] !== 0x6a) set.set(toHex(s), s)
  for (const s of prevScripts) if (s.length > 0) set.set(s, hex(s))
  return [...set.values()]
}

// [height, block hash, block, prev output scripts, previous basic header, basic filter, basic header]
type Vector = readonly [number, string, string, ReadonlyArray<string>, string, string, string]
const vectors: ReadonlyArray<Vector> = [
  [
    0,
    "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff001d1aa4ae180101000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000",
    [],
    "0000000000000000000000000000000000000000000000000000000000000000",
    "019dfca8",
    "21584579b7eb08997773e5aeff3a7f932700042d0ed2a6129012b7d7ae81b750",
  ],
  [
    2,
    "000000006c02c8ea6e4ff69651f7fcde348fb9d557a06e6957b65552002a7820",
    "0100000006128e87be8b1b4dea47a7247d5528d2702c96826c7a648497e773b800000000e241352e3bec0a95a6217e10c3abb54adfa05abb12c126695595580fb92e222032e7494dffff001d00d235340101000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0e0432e7494d010e062f503253482fffffffff0100f2052a010000002321038a7f6ef1c8ca0c588aa53fa860128077c9e6c11e6830f4d7ee4e763a56b7718fac00000000",
    [],
    "d7bdac13a59d745b1add0d2ce852f1a0442e8945fc1bf3848d3cbffd88c24fe1",
    "0174a170",
    "186afd11ef2b5e7e3504f2e8cbf8df28a1fd251fe53d60dff8b1467d1b386cf0",
  ],
  [
    926485,
    "000000000000015d6077a411a8f5cc95caf775ccf11c54e27df75ce58d187313",
    "0000002060bbab0edbf3ef8a49608ee326f8fd75c473b7e3982095e2d100000000000000c30134f8c9b6d2470488d7a67a888f6fa12f8692e0c3411fbfb92f0f68f67eedae03ca57ef13021acc22dc4105010000000001010000000000000000000000000000000000000000000000000000000000000000ffffffff2f0315230e0004ae03ca57043e3d1e1d0c8796bf579aef0c0000000000122f4e696e6a61506f6f6c2f5345475749542fffffffff038427a112000000001976a914876fbb82ec05caa6af7a3b5e5a983aae6c6cc6d688ac0000000000000000266a24aa21a9ed5c748e121c0fe146d973a4ac26fa4a68b0549d46ee22d25f50a5e46fe1b377ee00000000000000002952534b424c4f434b3acd16772ad61a3c5f00287480b720f6035d5e54c9efc71be94bb5e3727f10909001200000000000000000000000000000000000000000000000000000000000000000000000000100000000010145310e878941a1b2bc2d33797ee4d89d95eaaf2e13488063a2aa9a74490f510a0100000023220020b6744de4f6ec63cc92f7c220cdefeeb1b1bed2b66c8e5706d80ec247d37e65a1ffffffff01002d3101000000001976a9143ebc40e411ed3c76f86711507ab952300890397288ac0400473044022001dd489a5d4e2fbd8a3ade27177f6b49296ba7695c40dbbe650ea83f106415fd02200b23a0602d8ff1bdf79dee118205fc7e9b40672bf31563e5741feb53fb86388501483045022100f88f040e90cc5dc6c6189d04718376ac19ed996bf9e4a3c29c3718d90ffd27180220761711f16c9e3a44f71aab55cbc0634907a1fa8bb635d971a9a01d368727bea10169522103b3623117e988b76aaabe3d63f56a4fc88b228a71e64c4cc551d1204822fe85cb2103dd823066e096f72ed617a41d3ca56717db335b1ea47a1b4c5c9dbdd0963acba621033d7c89bd9da29fa8d44db7906a9778b53121f72191184a9fee785c39180e4be153ae00000000010000000120925534261de4dcebb1ed5ab1b62bfe7a3ef968fb111dc2c910adfebc6e3bdf010000006b483045022100f50198f5ae66211a4f485190abe4dc7accdabe3bc214ebc9ea7069b97097d46e0220316a70a03014887086e335fc1b48358d46cd6bdc9af3b57c109c94af76fc915101210316cff587a01a2736d5e12e53551b18d73780b83c3bfb4fcf209c869b11b6415effffffff0220a10700000000001976a91450333046115eaa0ac9e0216565f945070e44573988ac2e7cd01a000000001976a914c01a7ca16b47be50cbdbc60724f701d52d75156688ac00000000010000000203a25f58630d7a1ea52550365fd2156683f56daf6ca73a4b4bbd097e66516322010000006a47304402204efc3d70e4ca3049c2a425025edf22d5ca355f9ec899dbfbbeeb2268533a0f2b02204780d3739653035af4814ea52e1396d021953f948c29754edd0ee537364603dc012103f7a897e4dbecab2264b21917f90664ea8256189ea725d28740cf7ba5d85b5763ffffffff03a25f58630d7a1ea52550365fd2156683f56daf6ca73a4b4bbd097e66516322000000006a47304402202d96defdc5b4af71d6ba28c9a6042c2d5ee7bc6de565d4db84ef517445626e03022022da80320e9e489c8f41b74833dfb6a54a4eb5087cdb46eb663eef0b25caa526012103f7a897e4dbecab2264b21917f90664ea8256189ea725d28740cf7ba5d85b5763ffffffff0200e1f5050000000017a914b7e6f7ff8658b2d1fb107e3d7be7af4742e6b1b3876f88fc00000000001976a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac0000000001000000043ffd60d3818431c495b89be84afac205d5d1ed663009291c560758bbd0a66df5010000006b483045022100f344607de9df42049688dcae8ff1db34c0c7cd25ec05516e30d2bc8f12ac9b2f022060b648f6a21745ea6d9782e17bcc4277b5808326488a1f40d41e125879723d3a012103f7a897e4dbecab2264b21917f90664ea8256189ea725d28740cf7ba5d85b5763ffffffffa5379401cce30f84731ef1ba65ce27edf2cc7ce57704507ebe8714aa16a96b92010000006a473044022020c37a63bf4d7f564c2192528709b6a38ab8271bd96898c6c2e335e5208661580220435c6f1ad4d9305d2c0a818b2feb5e45d443f2f162c0f61953a14d097fd07064012103f7a897e4dbecab2264b21917f90664ea8256189ea725d28740cf7ba5d85b5763ffffffff70e731e193235ff12c3184510895731a099112ffca4b00246c60003c40f843ce000000006a473044022053760f74c29a879e30a17b5f03a5bb057a5751a39f86fa6ecdedc36a1b7db04c022041d41c9b95f00d2d10a0373322a9025dba66c942196bc9d8adeb0e12d3024728012103f7a897e4dbecab2264b21917f90664ea8256189ea725d28740cf7ba5d85b5763ffffffff66b7a71b3e50379c8e85fc18fe3f1a408fc985f257036c34702ba205cef09f6f000000006a4730440220499bf9e2db3db6e930228d0661395f65431acae466634d098612fd80b08459ee022040e069fc9e3c60009f521cef54c38aadbd1251aee37940e6018aadb10f194d6a012103f7a897e4dbecab2264b21917f90664ea8256189ea725d28740cf7ba5d85b5763ffffffff0200e1f5050000000017a9148fc37ad460fdfbd2b44fe446f6e3071a4f64faa6878f447f0b000000001976a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac00000000",
    [
      "a914feb8a29635c56d9cd913122f90678756bf23887687",
      "76a914c01a7ca16b47be50cbdbc60724f701d52d75156688ac",
      "76a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac",
      "76a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac",
      "76a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac",
      "76a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac",
      "76a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac",
      "76a914913bcc2be49cb534c20474c4dee1e9c4c317e7eb88ac",
    ],
    "da49977ba1ee0d620a2c4f8f646b03cd0d230f5c6c994722e3ba884889f0be1a",
    "09027acea61b6cc3fb33f5d52f7d088a6b2f75d234e89ca800",
    "4cd9dd007a325199102f1fc0b7d77ca25ee3c84d46018c4353ecfcb56c0d3e7a",
  ],
  [
    987876,
    "0000000000000c00901f2049055e2a437c819d79a3d54fd63e6af796cd7b8a79",
    "000000202694f74969fdb542090e95a56bc8aa2d646e27033850e32f1c5f000000000000f7e53676b3f12d5beb524ed617f2d25f5a93b5f4f52c1ba2678260d72712f8dd0a6dfe5740257e1a4b1768960101000000010000000000000000000000000000000000000000000000000000000000000000ffffffff1603e4120ff9c30a1c216900002f424d4920546573742fffffff0001205fa012000000001e76a914c486de584a735ec2f22da7cd9681614681f92173d83d0aa68688ac00000000",
    [],
    "e9d729b72d533c29abe5276d5cf6c152f3723f10efe000b1e0c9ca5265a8beb6",
    "010c0b40",
    "e6137ae5a8424c40da1e5023c16975cc97b09300b4c050e6b1c713add3836c40",
  ],
  [
    1263442,
    "000000006f27ddfe1dd680044a34548f41bed47eba9e6f0b310da21423bc5f33",
    "000000201c8d1a529c39a396db2db234d5ec152fa651a2872966daccbde028b400000000083f14492679151dbfaa1a825ef4c18518e780c1f91044180280a7d33f4a98ff5f45765aaddc001d38333b9a02010000000001010000000000000000000000000000000000000000000000000000000000000000ffffffff230352471300fe5f45765afe94690a000963676d696e6572343208000000000000000000ffffffff024423a804000000001976a914f2c25ac3d59f3d674b1d1d0a25c27339aaac0ba688ac0000000000000000266a24aa21a9edcb26cb3052426b9ebb4d19c819ef87c19677bbf3a7c46ef0855bd1b2abe83491012000000000000000000000000000000000000000000000000000000000000000000000000002000000000101d20978463906ba4ff5e7192494b88dd5eb0de85d900ab253af909106faa22cc5010000000004000000014777ff000000000016001446c29eabe8208a33aa1023c741fa79aa92e881ff0347304402207d7ca96134f2bcfdd6b536536fdd39ad17793632016936f777ebb32c22943fda02206014d2fb8a6aa58279797f861042ba604ebd2f8f61e5bddbd9d3be5a245047b201004b632103eeaeba7ce5dc2470221e9517fb498e8d6bd4e73b85b8be655196972eb9ccd5566754b2752103a40b74d43df244799d041f32ce1ad515a6cd99501701540e38750d883ae21d3a68ac00000000",
    ["002027a5000c7917f785d8fc6e5a55adfca8717ecb973ebb7743849ff956d896a7ed"],
    "a4a4d6c6034da8aa06f01fe71f1fffbd79e032006b07f6c7a2c60a66aa310c01",
    "0385acb4f0fe889ef0",
    "3588f34fbbc11640f9ed40b2a66a4e096215d50389691309c1dac74d4268aa81",
  ],
]

describe("Golomb-coded sets: BIP158's published vectors", () => {
  it.each(vectors)(
    "block %i: filter and filter header",
    (_h, hash, block, prev, prevHeader, filter, header) => {
      const key = rev(hash)
      const basic = basicItems(hex(block), prev)
      const built = encodeGcs(basic, key)
      expect(toHex(built)).toBe(filter)
      expect(toHex(filterHeader(filterHash(built), rev(prevHeader)).reverse())).toBe(header)
      // every item matches its own filter
      for (const item of basic) expect(matchAny(built, key, [item])).toBe(true)
    },
  )
})

describe("Golomb-coded sets", () => {
  const blockHash = sha256(new TextEncoder().encode("a block"))

  it("an empty set is the one byte 0x00 and matches nothing", () => {
    const f = encodeGcs([], blockHash)
    expect(toHex(f)).toBe("00")
    expect(right(decodeGcsValues(f))).toEqual([])
    expect(matchAny(f, blockHash, items("q", 10))).toBe(false)
  })

  it("round trip: N sorted values in [0, N·M), every own item matches", () => {
    for (const n of [1, 2, 7, 100, 1000]) {
      const set = items(`set${n}`, n)
      const f = encodeGcs(set, blockHash)
      const values = right(decodeGcsValues(f))
      expect(values.length).toBe(n)
      for (let i = 1; i < values.length; i++) expect(values[i]!).toBeGreaterThanOrEqual(values[i - 1]!)
      expect(values[values.length - 1]!).toBeLessThan(n * FILTER_M)
      for (const item of set) expect(matchAny(f, blockHash, [item])).toBe(true)
      // a query mixing foreign items with one own item still matches
      expect(matchAny(f, blockHash, [...items("foreign", 20), set[n >> 1]!])).toBe(true)
      // about P + 1.5 bits an item
      expect(f.length * 8).toBeLessThan(n * 22 + 32)
    }
  })

  it("the key matters: the same items under another block hash code differently", () => {
    const set = items("k", 50)
    const other = sha256(new TextEncoder().encode("another block"))
    expect(toHex(encodeGcs(set, blockHash))).not.toBe(toHex(encodeGcs(set, other)))
  })

  it("false positives at about 1/M per queried item (fixed seed)", () => {
    // a small M makes the rate measurable: 20,000 single-item queries against M = 64 expect 312
    const small = { p: 6, m: 64 }
    const f = encodeGcs(items("fp", 100), blockHash, small)
    let hits = 0
    const queries = 20_000
    for (let i = 0; i < queries; i++) if (matchAny(f, blockHash, [itemAt("q", i)], small)) hits++
    expect(hits).toBeGreaterThan(queries / 64 / 1.5)
    expect(hits).toBeLessThan((queries / 64) * 1.5)
    // BIP158's M: 100 batches of 2,000 foreign items (200,000 queries) expect about 0.25 matches in all
    const basic = encodeGcs(items("fp", 1000), blockHash)
    let batches = 0
    for (let b = 0; b < 100; b++) {
      const batch = Array.from({ length: 2000 }, (_, i) => itemAt(`b${b}`, i))
      if (matchAny(basic, blockHash, batch)) batches++
    }
    expect(batches).toBeLessThanOrEqual(4)
  })

  it("malformed filters are refused, and never hide a block (matchAny says 'maybe')", () => {
    const f = encodeGcs(items("m", 20), blockHash)
    const refused = (bytes: Uint8Array) => {
      expect(Either.isLeft(decodeGcsValues(bytes))).toBe(true)
      expect(matchAny(bytes, blockHash, items("other", 1))).toBe(true)
    }
    refused(new Uint8Array(0)) // no N
    refused(f.subarray(0, f.length - 3)) // truncated
    refused(Uint8Array.from([...f, 0])) // a trailing byte
    refused(Uint8Array.from([...f.subarray(0, f.length - 1), f[f.length - 1]! | 1])) // padding bit set (or an extra value)
    // a claimed N far beyond the bits: refused before reading (nothing allocated by N)
    refused(Uint8Array.from([0xfe, 0xff, 0xff, 0xff, 0x7f, 0x01, 0x02]))
    refused(Uint8Array.from([0x05, 0xff])) // 5 elements in 8 bits
    refused(Uint8Array.from([0x01, 0xff, 0xff, 0xff])) // a unary quotient running off the end
    refused(Uint8Array.from([0xfd, 0x01, 0x00])) // non-canonical CompactSize
  })
})

describe("the basic filter of a fibercoin block", () => {
  const key = (label: string) => sha256(new TextEncoder().encode(label)) as PublicKey
  const txid = (label: string) => sha256(new TextEncoder().encode(`tx ${label}`)) as TxId
  const tx = (inputs: ReadonlyArray<readonly [TxId, number]>, outputs: ReadonlyArray<PublicKey>): Tx => ({
    version: 1,
    inputs: inputs.map(([t, index]) => ({ prevout: { txid: t, index }, witness: new Uint8Array(64) })),
    outputs: outputs.map((pubkey) => ({ value: 1000n as Amount, pubkey })),
    lockTime: 0,
  })
  const coinbase: Tx = {
    version: 1,
    inputs: [{ prevout: { txid: new Uint8Array(32) as TxId, index: 0xffffffff }, witness: hex("01020304") }],
    outputs: [{ value: 5000n as Amount, pubkey: key("miner") }],
    lockTime: 0,
  }
  const block: Block = {
    header: regtest.genesis.header,
    txs: [
      coinbase,
      tx(
        [
          [txid("a"), 0],
          [txid("a"), 1],
        ],
        [key("alice"), key("bob"), key("alice")],
      ),
      tx([[txid("b"), 7]], [key("carol"), key("miner")]),
    ],
  }
  const hash = sha256(new TextEncoder().encode("block hash"))

  it("items: every output key and every spent outpoint (txid ‖ index LE) but the coinbase's, once each", () => {
    const got = blockItems(block).map(toHex).sort()
    const want = [
      keyItem(key("miner")),
      keyItem(key("alice")),
      keyItem(key("bob")),
      keyItem(key("carol")),
      outpointItem(txid("a"), 0),
      outpointItem(txid("a"), 1),
      outpointItem(txid("b"), 7),
    ]
      .map(toHex)
      .sort()
    expect(got).toEqual(want)
    expect(toHex(outpointItem(txid("b"), 7)).slice(64)).toBe("07000000")
  })

  it("a wallet's own key or spent outpoint matches; others (almost surely) do not", () => {
    const f = buildFilter(block, hash)
    expect(right(decodeGcsValues(f)).length).toBe(7)
    expect(matchAny(f, hash, [keyItem(key("bob"))])).toBe(true)
    expect(matchAny(f, hash, [outpointItem(txid("a"), 1)])).toBe(true)
    expect(matchAny(f, hash, [keyItem(key("dave")), outpointItem(txid("a"), 2)])).toBe(false)
    // the coinbase's null prevout is not an item
    expect(matchAny(f, hash, [outpointItem(new Uint8Array(32), 0xffffffff)])).toBe(false)
  })

  it("the genesis block's filter header chains from 32 zero bytes", () => {
    const f = buildFilter(regtest.genesis, regtest.genesisHash)
    const h0 = filterHeader(filterHash(f), ZERO_FILTER_HEADER)
    expect(toHex(h0)).toBe(
      toHex(sha256(sha256(Uint8Array.from([...sha256(sha256(f)), ...new Uint8Array(32)])))),
    )
    expect(BASIC_FILTER).toEqual({ p: 19, m: 784931 })
  })
})
