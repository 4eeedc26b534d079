import { describe, expect, it } from "@effect/vitest"
import { Data, Effect, Either, Fiber } from "effect"
import {
  decodeScenario,
  defaultSimOptions,
  parsePartition,
  resolveOptions,
  type SimOptions,
} from "../../src/sim/options.js"
import { formatText, replayCommand } from "../../src/sim/report.js"
import { captureDefects, runSim, type SimReport } from "../../src/sim/Simulator.js"

const options = (o: Partial<SimOptions>): SimOptions => ({ ...defaultSimOptions, ...o })

/** failed lists the invariants that did not hold, with why (empty when the run passed). */
const failed = (r: SimReport) => r.invariants.filter((i) => !i.ok).map((i) => `${i.name}: ${i.detail}`)

describe("the sim command: N real nodes on a simulated network, seeded", () => {
  it.effect(
    "a short run (6 nodes, 5 simulated minutes, 2 miners, payments between wallets) holds every invariant",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(
          options({ nodes: 6, durationMs: 5 * 60_000, miners: 2, txRate: 0.2, seed: 3 }),
        )
        expect(failed(r)).toEqual([])
        expect(r.ok).toBe(true)
        expect(r.invariants.map((i) => i.name)).toEqual([
          "all nodes converge on one most-work tip",
          "every mempool is consistent with its node's tip",
          "no transaction confirmed on the final chain is missing from any node's chain",
          "no uncaught error in any fiber",
        ])
        // the premine funds the wallets; then blocks at about one a minute per miner carry payments
        expect(r.blocksMined).toBeGreaterThanOrEqual(3)
        expect(r.finalHeight).toBeGreaterThan(100)
        expect(r.payments.accepted).toBeGreaterThan(20)
        expect(r.invariants[2]!.detail).toMatch(/^[1-9]\d* confirmed transaction/)
        // every block mined in the run reached the 5 other nodes, over 50 ms links
        expect(r.propagation.samples).toBe(5 * r.blocksMined)
        // one or two hops of 50 ms each way (headers, getdata, block): at least 150 ms, under a second
        expect(r.propagation.p50).toBeGreaterThanOrEqual(150)
        expect(r.propagation.max).toBeLessThan(1_000)
        expect(r.traffic).toHaveLength(6)
        for (const t of r.traffic) expect(t.messagesSent).toBeGreaterThan(0)
        expect(r.traceHash).toMatch(/^[0-9a-f]{64}$/)
        expect(formatText(r)).toContain("ok   all nodes converge on one most-work tip")
      }),
    30_000,
  )

  it.effect(
    "the same seed twice gives the same trace hash (NAT'd nodes via rendezvous, wallet payments); another seed another",
    () =>
      Effect.gen(function* () {
        const run = (seed: number) =>
          runSim(options({ nodes: 6, topology: "nat", durationMs: 2 * 60_000, miners: 2, txRate: 0.2, seed }))
        const [a, b, c] = [yield* run(11), yield* run(11), yield* run(12)]
        for (const r of [a, b, c]) expect(failed(r)).toEqual([])
        expect(a.traceMessages).toBeGreaterThan(100)
        expect(b.traceHash).toBe(a.traceHash)
        expect(b.traceMessages).toBe(a.traceMessages)
        expect(b.finalTip).toBe(a.finalTip)
        expect(c.traceHash).not.toBe(a.traceHash)
      }),
    30_000,
  )

  it.effect(
    "a partition with a miner on each side forks the chain; after the heal every node is on one tip within the bound",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(
          options({
            nodes: 8,
            miners: 2, // nodes 0 and 4: one on each side
            blockIntervalMs: 20_000,
            durationMs: 4 * 60_000,
            partitions: [
              {
                startMs: 30_000,
                endMs: 150_000,
                groups: [
                  [0, 1, 2, 3],
                  [4, 5, 6, 7],
                ],
              },
            ],
            convergeWithinMs: 60_000,
            seed: 5,
          }),
        )
        expect(failed(r)).toEqual([])
        expect(r.invariants.map((i) => i.name)).toContain(
          "one tip everywhere within the bound after each heal",
        )
        expect(r.convergenceAfterHealMs).toHaveLength(1)
        expect(r.convergenceAfterHealMs[0]).toBeLessThanOrEqual(60_000)
        // both sides mined during the split: the losing side's blocks are off the final chain
        expect(r.finalHeight).toBeLessThan(r.blocksMined)
      }),
    30_000,
  )

  it.effect(
    "a run that cannot converge in time fails its invariant and names the seed and the replay command",
    () =>
      Effect.gen(function* () {
        const r = yield* runSim(
          options({
            nodes: 4,
            miners: 2,
            blockIntervalMs: 5_000,
            durationMs: 60_000,
            // split until the end and allow no time to converge afterwards
            partitions: [
              {
                startMs: 1_000,
                endMs: 60_000,
                groups: [
                  [0, 1],
                  [2, 3],
                ],
              },
            ],
            convergeWithinMs: 0,
            seed: 2,
          }),
        )
        expect(r.ok).toBe(false)
        expect(failed(r)).toContain(
          "one tip everywhere within the bound after each heal: healed at 60000 ms, not one tip within 0 ms",
        )
        expect(failed(r).join("\n")).toMatch(
          /^all nodes converge on one most-work tip: not one tip within 0 ms/m,
        )
        const text = formatText(r)
        expect(text).toContain("FAILED with seed 2; replay: npm run sim -- --nodes 4 --seed 2")
        expect(replayCommand(r)).toContain("--partition 1000ms-60000ms:0,1/2,3")
        // the replay command's flags read back as the same options
        const flags = replayCommand(r).split(" -- ")[1]!
        const partition = /--partition (\S+)/.exec(flags)![1]!
        expect(parsePartition(partition)).toEqual(Either.right(r.options.partitions[0]))
      }),
  )
})

class Reset extends Data.TaggedError("Reset")<{ readonly detail: string }> {}

describe("the no-uncaught-error invariant's evidence", () => {
  it.effect(
    "a fiber dying with a defect and an actor's crash log count; a fiber ending with an expected failure does not",
    () =>
      Effect.gen(function* () {
        const defects: Array<string> = []
        yield* Effect.gen(function* () {
          const died = yield* Effect.fork(Effect.dieMessage("invariant broken"))
          const failed = yield* Effect.fork(Effect.fail(new Reset({ detail: "connection reset" })))
          yield* Fiber.await(died)
          yield* Fiber.await(failed)
          yield* Effect.logWarning("peer 3: slow")
          yield* Effect.logError("actor chain crashed; restarting")
        }).pipe(captureDefects(defects, false))
        expect(defects).toHaveLength(2)
        expect(defects[0]).toMatch(/^WARN: Fiber terminated with an unhandled error — .*invariant broken/)
        expect(defects[1]).toBe("ERROR: actor chain crashed; restarting")
      }),
  )
})

describe("sim options and scenario files", () => {
  it("a scenario file's options lie under the flags, durations as seconds or text", () => {
    const file = decodeScenario(
      JSON.stringify({ nodes: 20, duration: "30m", "block-interval": 30, partition: ["1m-2m:0-9/10-19"] }),
      "s.json",
    )
    const resolved = Either.flatMap(file, (s) => resolveOptions(s, { nodes: 12, partition: ["1m-2m:0-5"] }))
    expect(resolved).toEqual(
      Either.right({
        ...defaultSimOptions,
        nodes: 12,
        durationMs: 30 * 60_000,
        blockIntervalMs: 30_000,
        partitions: [{ startMs: 60_000, endMs: 120_000, groups: [[0, 1, 2, 3, 4, 5]] }],
      }),
    )
  })

  it("a bad scenario file gives one clear error naming the file and each bad key", () => {
    const message = (text: string) =>
      Either.match(
        Either.flatMap(decodeScenario(text, "bad.json"), (s) => resolveOptions(s, {})),
        { onLeft: (e) => e.message, onRight: () => "accepted" },
      )
    // the list of known keys grows with the options (crash, clock-skew, …): its start and both errors are fixed
    expect(message('{"nodes": 4, "topolgy": "star", "loss": 2}')).toMatch(
      /^scenario bad\.json: topolgy: is unexpected, expected: "nodes" \| "seed" \| "duration" \| "topology" \|[^;]* "convergeWithin"[^;]*; loss: Expected a number between 0 and 1, actual 2$/,
    )
    expect(message('{"nodes":')).toMatch(/^scenario bad\.json: not JSON: /)
    expect(message("[1, 2]")).toBe("scenario bad.json: expected a JSON object of options")
    expect(message('{"topology": "mesh"}')).toMatch(
      /^scenario bad\.json: topology: Expected "random", actual "mesh"; topology: Expected "line"/,
    )
    expect(message('{"duration": "soon"}')).toBe(
      'duration: expected a duration like "90s", "10m", "1h" or a number of seconds, got "soon"',
    )
    expect(message('{"nodes": 10, "partition": ["1m-2m:0-4/5-12"]}')).toBe(
      "partition: node 10 does not exist (nodes are 0-9)",
    )
    expect(message('{"partition": ["2m-1m:0-4"]}')).toMatch(/the heal time is not after the split time/)
    expect(message('{"nodes": 2, "miners": 3}')).toBe("miners: 3 is more than the 2 nodes")
    expect(message('{"nodes": 2, "topology": "nat"}')).toMatch(/^topology nat: needs at least 3 nodes/)
  })
})
