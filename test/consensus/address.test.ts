import { bech32, bech32m } from "@scure/base"
import { Either } from "effect"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { type AddressError, decodeAddress, encodeAddress } from "../../src/consensus/address.js"
import { fromHex, toHex } from "../../src/schema/hex.js"

const HRPS = ["fcrt", "tfc", "fc"] as const
const NAMES = { fcrt: "regtest", tfc: "testnet", fc: "mainnet" } as const
const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 })
const generatorX = fromHex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")!

/** errorOf decodes and returns the failure, failing the test if the address was accepted. */
const errorOf = (hrp: string, address: string): AddressError => {
  const result = decodeAddress(hrp, address)
  if (Either.isRight(result)) throw new Error(`expected ${address} to be rejected`)
  return result.left
}

const keyOf = (hrp: string, address: string): string => {
  const result = decodeAddress(hrp, address)
  if (Either.isLeft(result)) throw new Error(`expected ${address} to decode: ${result.left.message}`)
  return toHex(result.right)
}

describe("encodeAddress / decodeAddress", () => {
  it("encodes a key like a BIP350 witness v1 address (BIP350 vector under the bc prefix)", () => {
    expect(encodeAddress("bc", generatorX)).toBe(
      "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
    )
    expect(keyOf("bc", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0")).toBe(
      toHex(generatorX),
    )
  })

  it("round-trips any key on every network", () => {
    fc.assert(
      fc.property(key32, fc.constantFrom(...HRPS), (key, hrp) => {
        const address = encodeAddress(hrp, key)
        expect(address.startsWith(`${hrp}1p`)).toBe(true)
        expect(keyOf(hrp, address)).toBe(toHex(key))
      }),
      { seed: 350, numRuns: 300 },
    )
  })

  it("accepts an all-uppercase address (BIP173)", () => {
    const address = encodeAddress("fcrt", generatorX)
    expect(keyOf("fcrt", address.toUpperCase())).toBe(toHex(generatorX))
  })

  it("rejects mixed case", () => {
    const address = encodeAddress("fcrt", generatorX)
    const mixed = `${address.slice(0, 10)}${address.slice(10).toUpperCase()}`
    const error = errorOf("fcrt", mixed)
    expect(error.reason).toBe("bad-encoding")
    expect(error.message).toContain("mixes upper and lower case")
  })

  it("refuses to encode a key that is not 32 bytes", () => {
    expect(() => encodeAddress("fc", new Uint8Array(31))).toThrow(RangeError)
  })
})

describe("decodeAddress failures", () => {
  it("names both networks when an address is for another network", () => {
    for (const from of HRPS) {
      for (const to of HRPS) {
        if (from === to) continue
        const address = encodeAddress(from, generatorX)
        const error = errorOf(to, address)
        expect(error.reason).toBe("wrong-network")
        expect(error.message).toBe(
          `address ${address} is for ${NAMES[from]}, this node is on ${NAMES[to]} (expected prefix ${to}1)`,
        )
      }
    }
  })

  it("names an unknown prefix", () => {
    const address = encodeAddress("xyz", generatorX)
    const error = errorOf("fcrt", address)
    expect(error.reason).toBe("wrong-network")
    expect(error.message).toBe(
      `address ${address} has unknown prefix xyz1, this node is on regtest (expected prefix fcrt1)`,
    )
  })

  it("reports any single mistyped character as a bad checksum", () => {
    fc.assert(
      fc.property(
        key32,
        fc.constantFrom(...HRPS),
        fc.nat(),
        fc.integer({ min: 1, max: 31 }),
        (key, hrp, at, shift) => {
          const address = encodeAddress(hrp, key)
          const dataStart = hrp.length + 1
          const i = dataStart + (at % (address.length - dataStart))
          const swapped = CHARSET[(CHARSET.indexOf(address[i]!) + shift) % 32]!
          const typo = `${address.slice(0, i)}${swapped}${address.slice(i + 1)}`
          const error = errorOf(hrp, typo)
          expect(error.reason).toBe("bad-checksum")
          expect(error.message).toContain(`address ${typo} has a bad checksum`)
        },
      ),
      { seed: 173, numRuns: 300 },
    )
  })

  it("rejects a bech32 (BIP173) checksum over the same data", () => {
    const address = bech32.encode("fcrt", [1, ...bech32.toWords(generatorX)])
    const error = errorOf("fcrt", address)
    expect(error.reason).toBe("bad-checksum")
    expect(error.message).toBe(`address ${address} has a bech32 checksum, but addresses use bech32m (BIP350)`)
  })

  it("rejects any version word but 1", () => {
    for (const version of [0, 2, 16, 31]) {
      const address = bech32m.encode("tfc", [version, ...bech32m.toWords(generatorX)])
      const error = errorOf("tfc", address)
      expect(error.reason).toBe("bad-version")
      expect(error.message).toContain(`has version ${version}`)
    }
  })

  it("rejects a payload that is not 32 bytes", () => {
    for (const length of [0, 20, 31, 33, 40]) {
      const address = bech32m.encode("fc", [1, ...bech32m.toWords(new Uint8Array(length).fill(7))])
      const error = errorOf("fc", address)
      expect(error.reason).toBe("bad-length")
      expect(error.message).toContain(`${length}-byte key`)
    }
  })

  it("rejects non-zero padding bits after the key", () => {
    const words = [1, ...bech32m.toWords(generatorX)]
    words[words.length - 1] = words[words.length - 1]! | 1
    expect(errorOf("fc", bech32m.encode("fc", words)).reason).toBe("bad-encoding")
  })

  it("rejects malformed strings as bad-encoding", () => {
    const address = encodeAddress("fc", generatorX)
    const cases = [
      "",
      "fc",
      "1p0xlxvlhem",
      "fc1abc",
      `${address}q`.repeat(2),
      address.replace("p", "b"),
      `fc1${"q".repeat(58)}o`,
      ` ${address}`,
      `${address.slice(0, 10)}é${address.slice(11)}`,
    ]
    for (const bad of cases) expect(errorOf("fc", bad).reason).toBe("bad-encoding")
  })

  it("never throws, and accepts a string only if it decodes to the encoded key", () => {
    const address = encodeAddress("fcrt", generatorX)
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 100 }),
          fc.string({ unit: "binary", maxLength: 100 }),
          fc
            .tuple(fc.nat({ max: address.length }), fc.nat({ max: 3 }), fc.string({ maxLength: 3 }))
            .map(([at, cut, insert]) => `${address.slice(0, at)}${insert}${address.slice(at + cut)}`),
        ),
        (input) => {
          const result = decodeAddress("fcrt", input)
          if (Either.isRight(result)) expect(toHex(result.right)).toBe(toHex(generatorX))
        },
      ),
      { seed: 2459, numRuns: 1000 },
    )
  })
})
