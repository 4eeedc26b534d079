import { Clock, Effect, Random } from "effect"

/**
 * faults.ts holds the simulator's node-level faults (issue 10): the per-node clock skew and the
 * record of a crash-restart. Crashes themselves are run by `Simulator.ts` (a node's scope closed at
 * T1, the node rebuilt over the same memory store and Entropy at T2).
 */

/** CrashRecord is one node's crash and restart as the run saw them (simulated ms from the run's start). */
export interface CrashRecord {
  readonly node: number
  readonly host: string
  readonly crashedAtMs: number
  /** undefined: the node had not stopped in time to restart (a defect is recorded) */
  readonly restartedAtMs: number | undefined
  /** the node's height when it was killed and when it came back from its storage (the same: storage survived) */
  readonly heightAtCrash: number
  readonly heightAtRestart: number | undefined
  /** the wallet's confirmed balance (units) when killed and when back (the same: the keystore survived) */
  readonly balanceAtCrash: number
  readonly balanceAtRestart: number | undefined
}

/**
 * offsetClock is `base` seen `offsetMs` off: currentTimeMillis (what block timestamps and the
 * "time-too-new" check read) is skewed, sleeps stay on `base`'s simulated time.
 */
export const offsetClock = (base: Clock.Clock, offsetMs: number): Clock.Clock => {
  const nanos = BigInt(offsetMs) * 1_000_000n
  return {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => base.unsafeCurrentTimeMillis() + offsetMs,
    currentTimeMillis: Effect.map(base.currentTimeMillis, (ms) => ms + offsetMs),
    unsafeCurrentTimeNanos: () => base.unsafeCurrentTimeNanos() + nanos,
    currentTimeNanos: Effect.map(base.currentTimeNanos, (ns) => ns + nanos),
    sleep: base.sleep,
  }
}

/**
 * drawSkews draws each node's clock offset in [-maxMs, +maxMs] (whole ms) from a PRNG of its own,
 * so a run without skew draws nothing and keeps its trace; all zeros when `maxMs` is 0.
 */
export const drawSkews = (seed: number, count: number, maxMs: number): Effect.Effect<Array<number>> =>
  maxMs <= 0
    ? Effect.succeed(Array.from({ length: count }, () => 0))
    : Effect.gen(function* () {
        const rng = Random.make(`fibercoin-sim-skew:${seed}`)
        const out: Array<number> = []
        for (let i = 0; i < count; i++) out.push(Math.round(((yield* rng.next) * 2 - 1) * maxMs))
        return out
      })
