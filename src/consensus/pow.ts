/**
 * Proof of work: compact targets, the PoW check, chain work, difficulty retargeting, median time past and
 * the block subsidy. Every function is pure and total over its documented domain, so any fiber may call
 * it; the semantics are Bitcoin Core's (pow.cpp, arith_uint256.cpp, validation.cpp) except where noted.
 */

/** COIN is the number of units in one coin. */
export const COIN = 100_000_000n

const U256_MASK = (1n << 256n) - 1n
const TWO_256 = 1n << 256n

/**
 * hashToBigInt reads a hash as a BIG-ENDIAN unsigned integer (byte 0 most significant). This differs from
 * Bitcoin on purpose: a hash that meets a target shows its leading zeros in the hex we print, because
 * fibercoin prints hashes in byte order.
 */
export const hashToBigInt = (hash: Uint8Array): bigint => {
  let n = 0n
  for (const byte of hash) n = (n << 8n) | BigInt(byte)
  return n
}

/** CompactTarget is a decoded `bits` field: the target plus Core's negative and overflow flags. */
export interface CompactTarget {
  readonly target: bigint
  readonly negative: boolean
  readonly overflow: boolean
}

/**
 * compactToTarget decodes a header's `bits` exactly as Core's `arith_uint256::SetCompact`: an 8-bit byte
 * length, a sign bit (0x00800000) and a 23-bit mantissa. The target is truncated to 256 bits as Core's
 * fixed-width integer would be; `overflow` says the mantissa did not fit.
 */
export const compactToTarget = (bits: number): CompactTarget => {
  const size = bits >>> 24
  let word = bits & 0x007fffff
  let target: bigint
  if (size <= 3) {
    word >>>= 8 * (3 - size)
    target = BigInt(word)
  } else {
    target = (BigInt(word) << BigInt(8 * (size - 3))) & U256_MASK
  }
  const negative = word !== 0 && (bits & 0x00800000) !== 0
  const overflow = word !== 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32))
  return { target, negative, overflow }
}

/** bitLength is the number of significant bits of a non-negative integer. */
const bitLength = (n: bigint): number => (n === 0n ? 0 : n.toString(2).length)

/**
 * targetToCompact encodes a target in `bits` form exactly as Core's `arith_uint256::GetCompact` (never
 * setting the sign bit). The mantissa keeps the top three significant bytes, so precision is lost below
 * them. Throws a RangeError for a target outside 0..2^256-1, a caller bug.
 */
export const targetToCompact = (target: bigint): number => {
  if (target < 0n || target > U256_MASK) throw new RangeError(`target out of range: ${target}`)
  let size = Math.floor((bitLength(target) + 7) / 8)
  let compact =
    size <= 3 ? Number(target << BigInt(8 * (3 - size))) : Number(target >> BigInt(8 * (size - 3)))
  // The 0x00800000 bit is the sign: if the mantissa would set it, shift it down and grow the size.
  if ((compact & 0x00800000) !== 0) {
    compact >>>= 8
    size += 1
  }
  return size * 0x1000000 + compact
}

/**
 * checkProofOfWork is Core's `CheckProofOfWork`: the `bits` must decode to a positive, non-overflowing
 * target no easier than `powLimit`, and the hash (read big-endian, see hashToBigInt) must not exceed it.
 * A hash that is not 32 bytes fails.
 */
export const checkProofOfWork = (hash: Uint8Array, bits: number, powLimit: bigint): boolean => {
  const { target, negative, overflow } = compactToTarget(bits)
  if (negative || target === 0n || overflow || target > powLimit) return false
  if (hash.length !== 32) return false
  return hashToBigInt(hash) <= target
}

/**
 * blockWork is Core's `GetBlockProof`: the expected number of hashes to meet the target,
 * 2^256 / (target + 1). An unusable `bits` (negative, overflowing or zero) counts as no work.
 */
export const blockWork = (bits: number): bigint => {
  const { target, negative, overflow } = compactToTarget(bits)
  if (negative || overflow || target === 0n) return 0n
  return TWO_256 / (target + 1n)
}

/**
 * medianTimePast is Core's `GetMedianTimePast` over the times the caller passes (the last 11 blocks, or
 * fewer near genesis, in any order): sort a copy and take the element at floor(n / 2). A block's time must
 * exceed it (BIP113 uses it for lock times too). Empty input gives 0.
 */
export const medianTimePast = (times: ReadonlyArray<number>): number => {
  if (times.length === 0) return 0
  const sorted = [...times].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

/**
 * PowParams is the proof-of-work part of a network's consensus parameters. `powLimit` is the easiest
 * allowed target and `powLimitBits` its compact form; the retarget timespan is
 * `targetSpacingSeconds * retargetInterval`. Choose `powLimit` below 2^256 / (4 * timespan), as Core's
 * chainparams sanity test demands, so the retarget product never exceeds 256 bits.
 */
export interface PowParams {
  readonly powLimit: bigint
  readonly powLimitBits: number
  readonly targetSpacingSeconds: number
  readonly retargetInterval: number
  readonly noRetargeting: boolean
}

/**
 * retarget is Core's `CalculateNextWorkRequired`: scale the last target by the time the interval actually
 * took, clamped to a factor of four either way (integer division as Core), and never easier than
 * `powLimit`. Unlike Core's 256-bit arithmetic the product is exact, which agrees with Core whenever
 * PowParams' `powLimit` bound holds. With `noRetargeting` the last bits are returned unchanged.
 */
export const retarget = (params: PowParams, lastBits: number, actualTimespanSeconds: number): number => {
  if (params.noRetargeting) return lastBits
  const targetTimespan = params.targetSpacingSeconds * params.retargetInterval
  const minTimespan = Math.floor(targetTimespan / 4)
  const maxTimespan = targetTimespan * 4
  const actual = Math.min(Math.max(actualTimespanSeconds, minTimespan), maxTimespan)
  const { target } = compactToTarget(lastBits)
  let next = (target * BigInt(actual)) / BigInt(targetTimespan)
  if (next > params.powLimit) next = params.powLimit
  return targetToCompact(next)
}

/**
 * nextWorkRequired is Core's `GetNextWorkRequired` without testnet's min-difficulty rule. `height` is the
 * height of the block being built; `prevBits`/`prevTime` are its parent's; `intervalStartTime` is the time
 * of the block at `height - retargetInterval` (Core's nHeightFirst). Genesis (height 0) gets
 * `powLimitBits`; only heights that are a multiple of the interval retarget.
 */
export const nextWorkRequired = (
  params: PowParams,
  next: {
    readonly height: number
    readonly prevBits: number
    readonly prevTime: number
    readonly intervalStartTime: number
  },
): number => {
  if (next.height <= 0) return params.powLimitBits
  if (params.noRetargeting || next.height % params.retargetInterval !== 0) return next.prevBits
  return retarget(params, next.prevBits, next.prevTime - next.intervalStartTime)
}

/**
 * blockSubsidy is Core's `GetBlockSubsidy`: 50 coins halved every `halvingInterval` blocks, zero from the
 * 64th halving on (a shift by 64 or more is undefined in C++, so Core stops there explicitly).
 */
export const blockSubsidy = (height: number, halvingInterval: number): bigint => {
  const halvings = Math.floor(height / halvingInterval)
  if (halvings >= 64) return 0n
  return (50n * COIN) >> BigInt(halvings)
}
