import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  blockSubsidy,
  blockWork,
  COIN,
  checkProofOfWork,
  compactToTarget,
  hashToBigInt,
  medianTimePast,
  nextWorkRequired,
  type PowParams,
  retarget,
  targetToCompact,
} from "../../src/consensus/pow.js"
import { fromHex } from "../../src/schema/hex.js"

/** Bitcoin's mainnet proof-of-work parameters, for Core's pow_tests.cpp vectors. */
const bitcoinMain: PowParams = {
  powLimit: (1n << 224n) - 1n,
  powLimitBits: 0x1d00ffff,
  targetSpacingSeconds: 600,
  retargetInterval: 2016,
  noRetargeting: false,
}

const hash32 = (hex: string): Uint8Array => {
  const bytes = fromHex(hex.padStart(64, "0"))
  if (bytes === undefined || bytes.length !== 32) throw new Error(`bad test hash ${hex}`)
  return bytes
}

describe("compactToTarget / targetToCompact (Core's arith_uint256_tests.cpp)", () => {
  // [bits, negative, overflow, target hex, GetCompact of the target (non-negative), or undefined to skip]
  const vectors: ReadonlyArray<readonly [number, boolean, boolean, string, number | undefined]> = [
    [0x00000000, false, false, "0", 0],
    [0x00123456, false, false, "0", 0],
    [0x01003456, false, false, "0", 0],
    [0x02000056, false, false, "0", 0],
    [0x03000000, false, false, "0", 0],
    [0x04000000, false, false, "0", 0],
    [0x00923456, false, false, "0", 0],
    [0x01803456, false, false, "0", 0],
    [0x02800056, false, false, "0", 0],
    [0x03800000, false, false, "0", 0],
    [0x04800000, false, false, "0", 0],
    [0x01123456, false, false, "12", 0x01120000],
    [0x01fedcba, true, false, "7e", 0x017e0000],
    [0x02123456, false, false, "1234", 0x02123400],
    [0x03123456, false, false, "123456", 0x03123456],
    [0x04123456, false, false, "12345600", 0x04123456],
    [0x04923456, true, false, "12345600", 0x04123456],
    [0x05009234, false, false, "92340000", 0x05009234],
    [0x20123456, false, false, `123456${"00".repeat(29)}`, 0x20123456],
    [0x21123456, false, true, `3456${"00".repeat(30)}`, undefined],
    [0x01923456, true, false, "12", undefined],
    [0x02923456, true, false, "1234", undefined],
    [0x03923456, true, false, "123456", undefined],
    [0x20923456, true, false, `123456${"00".repeat(29)}`, undefined],
    [0x21923456, true, true, `3456${"00".repeat(30)}`, undefined],
  ]

  it.each(vectors)("SetCompact(%s)", (bits, negative, overflow, hex, compact) => {
    const decoded = compactToTarget(bits)
    expect(decoded.target).toBe(BigInt(`0x${hex}`))
    expect(decoded.negative).toBe(negative)
    expect(decoded.overflow).toBe(overflow)
    if (compact !== undefined) expect(targetToCompact(decoded.target)).toBe(compact)
  })

  it("flags 0xff123456 as overflow, not negative", () => {
    const decoded = compactToTarget(0xff123456)
    expect(decoded.negative).toBe(false)
    expect(decoded.overflow).toBe(true)
  })

  it("never sets the sign bit when encoding: 0x80 encodes as 0x02008000", () => {
    expect(targetToCompact(0x80n)).toBe(0x02008000)
  })

  it("encodes Bitcoin's pow limit as 0x1d00ffff", () => {
    expect(targetToCompact(bitcoinMain.powLimit)).toBe(0x1d00ffff)
    expect(compactToTarget(0x1d00ffff).target).toBe(0xffffn << 208n)
  })

  it("rejects a target outside 0..2^256-1 as a caller bug", () => {
    expect(() => targetToCompact(-1n)).toThrow(RangeError)
    expect(() => targetToCompact(1n << 256n)).toThrow(RangeError)
  })

  it("round-trips: decode(encode(t)) keeps t's top three bytes and re-encodes to the same bits", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 256n) - 1n }), (t) => {
        const bits = targetToCompact(t)
        const back = compactToTarget(bits)
        expect(back.negative).toBe(false)
        expect(back.overflow).toBe(false)
        expect(back.target <= t).toBe(true)
        const size = Math.max(0, Math.ceil(t.toString(2).length / 8) - 3)
        expect(t - back.target < 1n << BigInt(8 * (size + 1))).toBe(true)
        expect(targetToCompact(back.target)).toBe(bits)
      }),
      { seed: 20240601, numRuns: 500 },
    )
  })
})

describe("checkProofOfWork", () => {
  const limit = bitcoinMain.powLimit

  it("reads hashes big-endian: the target's leading zeros are the hash's first bytes", () => {
    expect(hashToBigInt(hash32("0102"))).toBe(0x0102n)
    expect(hashToBigInt(Uint8Array.of(0x01, 0x00))).toBe(0x100n)
    const target = `00000000ffff${"00".repeat(26)}`
    expect(checkProofOfWork(hash32(target), 0x1d00ffff, limit)).toBe(true)
    expect(checkProofOfWork(hash32(`00000000ffff${"00".repeat(25)}01`), 0x1d00ffff, limit)).toBe(false)
    expect(checkProofOfWork(hash32(`00000000${"11".repeat(28)}`), 0x1d00ffff, limit)).toBe(true)
    // The same bytes reversed (Bitcoin's display order) is a huge number here.
    expect(checkProofOfWork(hash32(`${"11".repeat(28)}00000000`), 0x1d00ffff, limit)).toBe(false)
  })

  it("rejects a negative target (Core: CheckProofOfWork_test_negative_target)", () => {
    const negativeBits = targetToCompact(limit) | 0x00800000
    expect(compactToTarget(negativeBits).negative).toBe(true)
    expect(checkProofOfWork(hash32("01"), negativeBits, limit)).toBe(false)
  })

  it("rejects an overflowing target (Core: CheckProofOfWork_test_overflow_target)", () => {
    expect(checkProofOfWork(hash32("01"), ~0x00800000 >>> 0, limit)).toBe(false)
  })

  it("rejects a target easier than the pow limit (Core: CheckProofOfWork_test_too_easy_target)", () => {
    expect(checkProofOfWork(hash32("01"), targetToCompact(limit * 2n), limit)).toBe(false)
  })

  it("rejects a hash above the target (Core: CheckProofOfWork_test_biger_hash_than_target)", () => {
    const bits = targetToCompact(limit)
    expect(checkProofOfWork(hash32((limit * 2n).toString(16)), bits, limit)).toBe(false)
  })

  it("rejects a zero target (Core: CheckProofOfWork_test_zero_target)", () => {
    expect(checkProofOfWork(hash32("00"), targetToCompact(0n), limit)).toBe(false)
  })

  it("rejects a hash that is not 32 bytes", () => {
    expect(checkProofOfWork(new Uint8Array(31), 0x1d00ffff, limit)).toBe(false)
  })

  it("accepts exactly the hashes at or below a valid target", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 0x03, max: 0x1d }),
        fc.integer({ min: 0x008000, max: 0x7fffff }),
        (hash, size, mantissa) => {
          const bits = size * 0x1000000 + mantissa
          const { target } = compactToTarget(bits)
          expect(checkProofOfWork(hash, bits, limit)).toBe(target <= limit && hashToBigInt(hash) <= target)
        },
      ),
      { seed: 7, numRuns: 300 },
    )
  })
})

describe("blockWork (Core's GetBlockProof)", () => {
  it("is 0x100010001 for difficulty 1 (0x1d00ffff)", () => {
    expect(blockWork(0x1d00ffff)).toBe(0x100010001n)
  })

  it("is 2^256 / (target + 1)", () => {
    expect(blockWork(0x207fffff)).toBe((1n << 256n) / ((0x7fffffn << 232n) + 1n))
    expect(blockWork(0x03000001)).toBe((1n << 256n) / 2n)
  })

  it("counts a negative, overflowing or zero target as no work", () => {
    expect(blockWork(0x04923456)).toBe(0n)
    expect(blockWork(0xff123456)).toBe(0n)
    expect(blockWork(0x00000000)).toBe(0n)
    expect(blockWork(0x01003456)).toBe(0n)
  })

  it("grows as the target shrinks", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: (1n << 255n) - 1n }), (t) => {
        const easier = targetToCompact(t * 2n)
        const harder = targetToCompact(t)
        expect(blockWork(harder) >= blockWork(easier)).toBe(true)
      }),
      { seed: 11, numRuns: 200 },
    )
  })
})

describe("retarget (Core's pow_tests.cpp, Bitcoin mainnet parameters)", () => {
  it("get_next_work: no constraint applies", () => {
    expect(retarget(bitcoinMain, 0x1d00ffff, 1262152739 - 1261130161)).toBe(0x1d00d86a)
  })

  it("get_next_work_pow_limit: never easier than the pow limit", () => {
    expect(retarget(bitcoinMain, 0x1d00ffff, 1233061996 - 1231006505)).toBe(0x1d00ffff)
  })

  it("get_next_work_lower_limit_actual: a fast interval counts as a quarter of the timespan", () => {
    expect(retarget(bitcoinMain, 0x1c05a3f4, 1279297671 - 1279008237)).toBe(0x1c0168fd)
  })

  it("get_next_work_upper_limit_actual: a slow interval counts as four timespans", () => {
    expect(retarget(bitcoinMain, 0x1c387f6f, 1269211443 - 1263163443)).toBe(0x1d00e1fd)
  })

  it("clamps any timespan (even negative) into [timespan / 4, timespan * 4]", () => {
    const timespan = 600 * 2016
    expect(retarget(bitcoinMain, 0x1c05a3f4, -5)).toBe(retarget(bitcoinMain, 0x1c05a3f4, timespan / 4))
    expect(retarget(bitcoinMain, 0x1c387f6f, timespan * 100)).toBe(
      retarget(bitcoinMain, 0x1c387f6f, timespan * 4),
    )
    expect(retarget(bitcoinMain, 0x1c387f6f, timespan)).toBe(0x1c387f6f)
  })

  it("returns the last bits with noRetargeting", () => {
    expect(retarget({ ...bitcoinMain, noRetargeting: true }, 0x1c05a3f4, 1)).toBe(0x1c05a3f4)
  })
})

describe("nextWorkRequired", () => {
  it("retargets at a multiple of the interval, from the interval's first block time", () => {
    // Core's get_next_work: the block after #32255 is #32256 = 16 × 2016; #30240 started the interval.
    const next = { height: 32256, prevBits: 0x1d00ffff, prevTime: 1262152739, intervalStartTime: 1261130161 }
    expect(nextWorkRequired(bitcoinMain, next)).toBe(0x1d00d86a)
  })

  it("keeps the parent's bits between retargets", () => {
    const next = { height: 32257, prevBits: 0x1c05a3f4, prevTime: 1262152739, intervalStartTime: 0 }
    expect(nextWorkRequired(bitcoinMain, next)).toBe(0x1c05a3f4)
  })

  it("keeps the parent's bits with noRetargeting, even at a retarget height", () => {
    const params = { ...bitcoinMain, noRetargeting: true }
    const next = { height: 4032, prevBits: 0x1c05a3f4, prevTime: 2, intervalStartTime: 1 }
    expect(nextWorkRequired(params, next)).toBe(0x1c05a3f4)
  })

  it("gives genesis the pow limit", () => {
    const next = { height: 0, prevBits: 0, prevTime: 0, intervalStartTime: 0 }
    expect(nextWorkRequired(bitcoinMain, next)).toBe(0x1d00ffff)
  })
})

describe("medianTimePast", () => {
  it("takes the middle of 11 shuffled times", () => {
    const times = [1009, 1001, 1010, 1004, 1000, 1007, 1003, 1008, 1002, 1006, 1005]
    expect(medianTimePast(times)).toBe(1005)
    expect(times[0]).toBe(1009) // the caller's array is not sorted in place
  })

  it("takes element floor(n / 2) of the sorted times, like Core", () => {
    expect(medianTimePast([])).toBe(0)
    expect(medianTimePast([42])).toBe(42)
    expect(medianTimePast([20, 10])).toBe(20)
    expect(medianTimePast([3, 1, 2, 4])).toBe(3)
  })

  it("does not depend on order", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 11 }),
        (times) => {
          const sorted = [...times].sort((a, b) => a - b)
          expect(medianTimePast(times)).toBe(sorted[Math.floor(sorted.length / 2)])
          expect(medianTimePast([...times].reverse())).toBe(medianTimePast(times))
        },
      ),
      { seed: 3, numRuns: 200 },
    )
  })
})

describe("blockSubsidy", () => {
  it("halves every interval", () => {
    expect(COIN).toBe(100_000_000n)
    expect(blockSubsidy(0, 150)).toBe(50n * COIN)
    expect(blockSubsidy(149, 150)).toBe(50n * COIN)
    expect(blockSubsidy(150, 150)).toBe(25n * COIN)
    expect(blockSubsidy(299, 150)).toBe(25n * COIN)
    expect(blockSubsidy(300, 150)).toBe(1_250_000_000n)
    expect(blockSubsidy(210_000, 210_000)).toBe(25n * COIN)
  })

  it("is zero from the 64th halving on", () => {
    expect(blockSubsidy(64 * 150, 150)).toBe(0n)
    expect(blockSubsidy(64 * 150 - 1, 150)).toBe((50n * COIN) >> 63n)
    expect(blockSubsidy(1_000_000 * 150, 150)).toBe(0n)
  })

  it("sums to Bitcoin's 20,999,999.9769 coins (Core's subsidy_limit_test)", () => {
    let sum = 0n
    for (let height = 0; height < 14_000_000; height += 1000) sum += blockSubsidy(height, 210_000) * 1000n
    expect(sum).toBe(2_099_999_997_690_000n)
  })
})
