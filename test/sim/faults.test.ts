import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { defaultSimOptions, parseCrash, resolveOptions, type SimOptions } from "../../src/sim/options.js"
import { formatText } from "../../src/sim/report.js"
import { runSim, type SimReport } from "../../src/sim/Simulator.js"

const options = (o: Partial<SimOptions>): SimOptions => ({ ...defaultSimOptions, ...o })

/** failed lists the invariants that did not hold, with why (empty when the run passed). */
const failed = (r: SimReport) => r.invariants.filter((i) => !i.ok).map((i) => `${i.name}: ${i.detail}`)

describe("sim faults: --crash and --clock-skew", () => {
  it("parses crash schedules and skews, refusing bad ones by name", () => {
    expect(parseCrash("2m-3m:0-2")).toEqual(
      Either.right({ startMs: 120_000, endMs: 180_000, nodes: [0, 1, 2] }),
    )
    expect(Either.isLeft(parseCrash("3m-2m:0"))).toBe(true)
    const ok = resolveOptions({ crash: ["60s-90s:1,3"], clockSkew: "±30s" }, {})
    expect(Either.map(ok, (o) => [o.crashes, o.clockSkewMs])).toEqual(
      Either.right([[{ startMs: 60_000, endMs: 90_000, nodes: [1, 3] }], 30_000]),
    )
    const missing = resolveOptions({ nodes: 4, crash: ["60s-90s:7"] }, {})
    expect(Either.isLeft(missing) && missing.left.message).toMatch(/crash: node 7 does not exist/)
    const late = resolveOptions({ duration: "2m", crash: ["60s-3m:1"] }, {})
    expect(Either.isLeft(late) && late.left.message).toMatch(/after the run's/)
  })

  const crashRun = (seed: number) =>
    runSim(
      options({
        nodes: 6,
        seed,
        miners: 2, // nodes 0 and 3
        blockIntervalMs: 20_000,
        durationMs: 3 * 60_000,
        txRate: 0.2, // payers 0-5 each hold a premined coin: the crashed ones must still have it
        crashes: [{ startMs: 70_000, endMs: 120_000, nodes: [1, 3, 5] }],
      }),
    )

  it.effect(
    "half of 6 nodes crash mid-run and restart from their storage: every invariant holds, the same seed gives the same trace",
    () =>
      Effect.gen(function* () {
        const a = yield* crashRun(5)
        expect(failed(a)).toEqual([])
        expect(a.crashes?.map((c) => [c.node, c.crashedAtMs, c.restartedAtMs])).toEqual([
          [1, 70_000, 120_000],
          [3, 70_000, 120_000],
          [5, 70_000, 120_000],
        ])
        for (const c of a.crashes ?? []) {
          // blocks mined before the crash came back from the node's own store, then it caught up
          expect(c.heightAtCrash).toBeGreaterThan(0)
          expect(c.heightAtRestart).toBe(c.heightAtCrash)
          // and the wallet's keys came back with it: the same confirmed balance
          expect(c.balanceAtRestart).toBe(c.balanceAtCrash)
        }
        expect(a.finalHeight).toBeGreaterThan(a.crashes![0]!.heightAtCrash)
        expect(a.crashes!.filter((c) => c.balanceAtCrash > 0)).toHaveLength(3)
        expect(a.payments.accepted).toBeGreaterThan(10)
        expect(formatText(a)).toContain("crash: node 3 down at 70.0 s")
        const b = yield* crashRun(5)
        expect(b.traceHash).toBe(a.traceHash)
        expect(b.finalTip).toBe(a.finalTip)
      }),
    30_000,
  )

  it.effect(
    "with clocks skewed by up to ±60 s (well inside the 2 h future limit) the network still converges",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(
          options({
            nodes: 6,
            seed: 7,
            miners: 3,
            blockIntervalMs: 20_000,
            durationMs: 3 * 60_000,
            clockSkewMs: 60_000,
          }),
        )
        expect(failed(r)).toEqual([])
        expect(r.clockSkewMs).toHaveLength(6)
        expect(r.clockSkewMs!.every((s) => Math.abs(s) <= 60_000)).toBe(true)
        expect(new Set(r.clockSkewMs).size).toBeGreaterThan(1)
        expect(r.blocksMined).toBeGreaterThan(3)
      }),
    30_000,
  )

  it.effect(
    "a skew beyond the 2 h future limit splits the network: nodes refuse blocks as too new, reported as a failed invariant, not a crash",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(
          options({
            nodes: 4,
            seed: 7,
            miners: 2,
            blockIntervalMs: 20_000,
            durationMs: 2 * 60_000,
            clockSkewMs: 3 * 3_600_000,
          }),
        )
        const skews = r.clockSkewMs!
        // this seed draws clocks more than 2 h apart
        expect(Math.max(...skews) - Math.min(...skews)).toBeGreaterThan(2 * 3_600_000)
        expect(r.ok).toBe(false)
        const byName = new Map(r.invariants.map((i) => [i.name, i.ok]))
        expect(byName.get("all nodes converge on one most-work tip")).toBe(false)
        expect(byName.get("no uncaught error in any fiber")).toBe(true)
      }),
    30_000,
  )
})
