import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { decodeScenario, resolveOptions, type Scenario, type SimOptions } from "../../src/sim/options.js"
import { formatText, replayCommand } from "../../src/sim/report.js"
import { runSim, type SimReport } from "../../src/sim/Simulator.js"

/**
 * The named scenario suite (issue 10): each file in scenarios/ runs through `runSim` as the CLI would
 * run it (`npm run sim -- --scenario scenarios/NAME.json`) and must hold every invariant. Crash-restart
 * and byzantine scenarios come with `--crash` and `--byzantine` (other engineers): add their files
 * here. The planted-bug check proves the invariants can fail: with `no-reorg` partition-heal must fail
 * convergence, and its replay fails the same way.
 */

const dir = path.join(import.meta.dirname, "../../scenarios")

const scenarioOf = (name: string): Scenario =>
  Either.getOrThrow(decodeScenario(readFileSync(path.join(dir, name), "utf8"), name))

const optionsOf = (name: string, overrides: Scenario = {}): SimOptions =>
  Either.getOrThrow(resolveOptions(scenarioOf(name), overrides))

/** failed lists the invariants that did not hold, with why (empty when the run passed). */
const failed = (r: SimReport) => r.invariants.filter((i) => !i.ok).map((i) => `${i.name}: ${i.detail}`)

describe("named scenarios (scenarios/*.json), each holding every invariant", () => {
  it("the suite is the three named files, each decoded by the scenario Schema", () => {
    expect(readdirSync(dir).sort()).toEqual([
      "loss-reorder.json",
      "nat-rendezvous.json",
      "partition-heal.json",
    ])
    expect(optionsOf("partition-heal.json").partitions).toHaveLength(1)
    expect(optionsOf("loss-reorder.json").reorder).toBeGreaterThan(0)
    expect(optionsOf("nat-rendezvous.json").topology).toBe("nat")
  })

  it.effect(
    "partition-heal: miners on both sides of a partition build competing branches; after the heal one tip wins everywhere",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(optionsOf("partition-heal.json"))
        expect(failed(r)).toEqual([])
        expect(r.invariants.map((i) => i.name)).toContain(
          "one tip everywhere within the bound after each heal",
        )
        // both sides mined during the split, so the losing side's blocks are not on the final chain
        expect(r.blocksMined).toBeGreaterThan(r.finalHeight)
      }),
    30_000,
  )

  it.effect(
    "loss-reorder: lost, reordered and duplicated messages on every link; the nodes still converge",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(optionsOf("loss-reorder.json"))
        expect(failed(r)).toEqual([])
        expect(r.blocksMined).toBeGreaterThan(0)
      }),
    30_000,
  )

  it.effect(
    "nat-rendezvous: NAT'd nodes find each other via the rendezvous node and carry wallet payments",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(optionsOf("nat-rendezvous.json"))
        expect(failed(r)).toEqual([])
        expect(r.payments.accepted).toBeGreaterThan(0)
        const confirmed = r.invariants.find((i) => i.name.startsWith("no transaction confirmed"))
        expect(confirmed?.detail).toMatch(/^[1-9]\d* confirmed transaction/)
      }),
    30_000,
  )
})

describe("the planted-bug check: a node that never reorgs fails the invariants, replayably", () => {
  it.effect(
    "partition-heal with --planted-bug no-reorg fails convergence, prints the seed and a replay command, and the replay fails the same way with the same trace hash",
    () =>
      Effect.gen(function* () {
        const options = optionsOf("partition-heal.json", { plantedBug: "no-reorg" })
        const r = yield* runSim(options)
        expect(r.ok).toBe(false)
        const failedNames = r.invariants.filter((i) => !i.ok).map((i) => i.name)
        expect(failedNames).toContain("all nodes converge on one most-work tip")
        const text = formatText(r)
        expect(text).toContain(`FAILED with seed ${options.seed}; replay: ${replayCommand(r)}`)
        expect(replayCommand(r)).toContain(`--seed ${options.seed}`)
        expect(replayCommand(r)).toContain("--planted-bug no-reorg")
        // the replay: the same options again (what the command's flags resolve to)
        const again = yield* runSim(options)
        expect(again.traceHash).toBe(r.traceHash)
        expect(failed(again)).toEqual(failed(r))
      }),
    30_000,
  )
})
