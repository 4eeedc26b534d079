import { bech32, bech32m } from "@scure/base"
import { Either, Schema } from "effect"
import type { PublicKey } from "../schema/primitives.js"

/**
 * Addresses are bech32m strings (BIP350): the network's prefix, "1", then the version word 1 and the
 * 32-byte BIP340 x-only key in 5-bit words, then a six-character checksum. Pure; any fiber may call these.
 */

/** ADDRESS_VERSION is the only version word defined: 1, a 32-byte x-only key (like BIP341's witness v1). */
const ADDRESS_VERSION = 1

/** KEY_WORDS is the number of 5-bit words that carry a 32-byte key (256 bits, 4 bits of zero padding). */
const KEY_WORDS = 52

/** BECH32_MAX_LENGTH is BIP173's length limit, which scure also enforces. */
const BECH32_MAX_LENGTH = 90

const BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

/** networkNames names each known prefix, for operator-facing messages. */
const networkNames: ReadonlyMap<string, string> = new Map([
  ["fcrt", "regtest"],
  ["tfc", "testnet"],
  ["fc", "mainnet"],
])

/**
 * AddressError is a string that is not an address for this node's network. `message` is meant for an
 * operator: it quotes the address and says what is wrong (the network it belongs to, a bad checksum, …).
 */
export class AddressError extends Schema.TaggedError<AddressError>()("AddressError", {
  reason: Schema.Literal("bad-encoding", "bad-checksum", "wrong-network", "bad-version", "bad-length"),
  message: Schema.String,
}) {}

/**
 * encodeAddress renders a 32-byte x-only key as a bech32m address with the network's prefix (`hrp`:
 * "fcrt", "tfc" or "fc"). Throws a RangeError for a key that is not 32 bytes, a caller bug.
 */
export const encodeAddress = (hrp: string, pubkey: Uint8Array): string => {
  if (pubkey.length !== 32) throw new RangeError(`an address key is 32 bytes, got ${pubkey.length}`)
  return bech32m.encode(hrp, [ADDRESS_VERSION, ...bech32m.toWords(pubkey)])
}

const isPrintableAscii = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 33 || c > 126) return false
  }
  return true
}

/** shown renders untrusted input for a message: short, printable, quoted only when it needs escaping. */
const shown = (address: string): string => {
  const cut = address.length > BECH32_MAX_LENGTH ? `${address.slice(0, BECH32_MAX_LENGTH)}…` : address
  return isPrintableAscii(cut) ? cut : JSON.stringify(cut)
}

const networkOf = (hrp: string): string => networkNames.get(hrp) ?? `the network with prefix ${hrp}1`

/**
 * decodeAddress parses an address for the network whose prefix is `hrp` and returns its key. It never
 * throws. The input is checked structurally first (printable ASCII, at most 90 characters, one case —
 * BIP173 accepts all upper case, rejects mixed case — a "1" separator, bech32 characters), so a failure of
 * the bech32m decode that follows can only be the checksum; a valid bech32 (BIP173) checksum on the same
 * data is rejected too, with its own message, since BIP350 exists to retire it for new versions. Then the
 * prefix must be this network's, the version word 1 and the payload exactly 32 bytes with zero padding.
 */
export const decodeAddress = (hrp: string, address: string): Either.Either<PublicKey, AddressError> => {
  const fail = (reason: AddressError["reason"], problem: string) =>
    Either.left(new AddressError({ reason, message: `address ${shown(address)} ${problem}` }))
  const expected = hrp.toLowerCase()

  if (typeof address !== "string" || address.length === 0) return fail("bad-encoding", "is empty")
  if (address.length > BECH32_MAX_LENGTH) {
    return fail("bad-encoding", `is ${address.length} characters long, the limit is ${BECH32_MAX_LENGTH}`)
  }
  if (!isPrintableAscii(address)) return fail("bad-encoding", "contains a space or a non-ASCII character")
  const lower = address.toLowerCase()
  if (address !== lower && address !== address.toUpperCase()) {
    return fail("bad-encoding", "mixes upper and lower case")
  }
  const separator = lower.lastIndexOf("1")
  if (separator < 1) return fail("bad-encoding", `has no prefix (expected ${expected}1…)`)
  const prefix = lower.slice(0, separator)
  const data = lower.slice(separator + 1)
  if (data.length < 6) return fail("bad-encoding", "is too short to carry a checksum")
  for (const c of data) {
    if (!BECH32_CHARSET.includes(c)) {
      return fail("bad-encoding", `contains "${c}" after the prefix, which bech32 does not use`)
    }
  }

  const decoded = bech32m.decodeUnsafe(lower)
  if (decoded === undefined) {
    return bech32.decodeUnsafe(lower) === undefined
      ? fail("bad-checksum", "has a bad checksum (a mistyped or missing character?)")
      : fail("bad-checksum", "has a bech32 checksum, but addresses use bech32m (BIP350)")
  }

  if (prefix !== expected) {
    const node = `this node is on ${networkOf(expected)} (expected prefix ${expected}1)`
    return networkNames.has(prefix)
      ? fail("wrong-network", `is for ${networkOf(prefix)}, ${node}`)
      : fail("wrong-network", `has unknown prefix ${prefix}1, ${node}`)
  }

  const [version, ...keyWords] = decoded.words
  if (version === undefined) return fail("bad-length", "carries no data")
  if (version !== ADDRESS_VERSION) {
    return fail("bad-version", `has version ${version}, this node knows only version ${ADDRESS_VERSION}`)
  }
  if (keyWords.length !== KEY_WORDS) {
    const bytes = Math.floor((keyWords.length * 5) / 8)
    return fail("bad-length", `carries a ${bytes}-byte key, expected 32 bytes`)
  }
  const key = bech32m.fromWordsUnsafe(keyWords)
  if (key === undefined || key.length !== 32) return fail("bad-encoding", "has non-zero padding bits")
  return Either.right(key as PublicKey)
}
