import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { FRAME_HEADER_BYTES, frameChecksum } from "../../src/schema/frame.js"
import { COMMANDS } from "../../src/schema/wire.js"
import { corpus, MUTATIONS, type Mutation, Rng, session, sessionSeed } from "./frames.js"
import { makeLogWatch, runFuzz, watching } from "./fuzz.js"

/** The short run `npm test` does of `npm run fuzz` (test/fuzz/run.ts runs a million frames). */

const c = corpus()
const sessionOf = (seed: number, n: number) =>
  session(new Rng(sessionSeed(seed, n)), c, { maxFrames: 30, handshakeRate: 0.9, node: false })

describe("fuzz frame generator", () => {
  it("a seed and a session number name the frames exactly", () => {
    const bytes = (seed: number, n: number) => sessionOf(seed, n).frames.map((f) => Buffer.from(f.bytes))
    expect(bytes(7, 3)).toEqual(bytes(7, 3))
    expect(bytes(7, 3)).not.toEqual(bytes(8, 3))
    expect(bytes(7, 3)).not.toEqual(bytes(7, 4))
  })

  it("makes every mutation of every command, and mutated payloads carry a valid checksum", () => {
    const seen = new Set<Mutation>()
    const commands = new Set<string>()
    let payloadMutations = 0
    for (let n = 0; n < 1_000; n++) {
      for (const frame of sessionOf(1, n).frames) {
        seen.add(frame.mutation)
        if (!frame.aligned) continue
        commands.add(String.fromCharCode(...frame.bytes.subarray(4, 16)).replace(/\0+$/, ""))
        if (!frame.mutation.startsWith("payload-")) continue
        // past the checksum: the decoder, not the checksum, has to refuse these
        payloadMutations++
        const sum = frameChecksum(frame.bytes.subarray(FRAME_HEADER_BYTES))
        expect(Buffer.from(frame.bytes.subarray(20, 24))).toEqual(Buffer.from(sum))
      }
    }
    expect([...seen].sort()).toEqual(Object.keys(MUTATIONS).sort())
    expect([...commands].sort()).toEqual([...COMMANDS].sort())
    expect(payloadMutations).toBeGreaterThan(1_000)
  })
})

describe("fuzz log watch", () => {
  it.effect("counts an Error line and a fiber that dies with nobody awaiting it", () =>
    Effect.gen(function* () {
      const watch = makeLogWatch()
      yield* watching(watch)(
        Effect.gen(function* () {
          yield* Effect.logWarning("a warning is not an error")
          yield* Effect.logError("actor X crashed; restarting")
          // as a Peer's connection fiber is forked into the PeerManager's scope
          const scope = yield* Scope.make()
          yield* Effect.forkIn(Effect.die(new Error("a defect in dispatch")), scope)
          yield* Effect.yieldNow()
          yield* Scope.close(scope, Exit.void)
        }),
      )
      expect(watch.warnings).toBe(1)
      expect(watch.errors).toHaveLength(2)
      expect(watch.errors[0]).toContain("actor X crashed")
      expect(watch.errors[1]).toContain("a defect in dispatch")
    }),
  )
})

describe("npm run fuzz, short", () => {
  it.effect("reports a defect in a node's peer dispatch as an error", () =>
    Effect.gen(function* () {
      let seen = 0
      const report = yield* runFuzz({
        seed: 3,
        fastFrames: 0,
        nodeFrames: 1_500,
        // the 200th message an attacker sends: a throw inside the Peer's read loop, as a bug there would
        probe: (e) => {
          if (e.direction === "in" && e.remote.host !== "10.250.0.1" && ++seen === 200)
            throw new Error("injected fault")
        },
      })
      expect(seen).toBeGreaterThan(200)
      // the peer's fiber died unobserved (logged once per fiber it took down); nothing else went wrong
      expect(report.errors.length).toBeGreaterThan(0)
      for (const e of report.errors) {
        expect(e.what).toContain("Fiber terminated with an unhandled error")
        expect(e.what).toContain("injected fault")
      }
    }),
  )

  it.effect(
    "20,000 seeded frames through the framer, the decoders and two nodes' peer dispatch: zero errors",
    () =>
      Effect.gen(function* () {
        const report = yield* runFuzz({ seed: 20_261_125, fastFrames: 12_000, nodeFrames: 8_000 })
        const { fast, node } = report
        expect(
          report.errors.map((e) => `${e.what}${e.session === undefined ? "" : ` (session ${e.session})`}`),
        ).toEqual([])
        expect(fast.frames + node.frames).toBe(20_000)
        // the framer and decoders both accepted and refused
        expect(fast.decoded).toBeGreaterThan(1_000)
        expect(fast.refused).toBeGreaterThan(1_000)
        // frames reached the nodes' peer dispatch, mostly after a handshake, of every kind an attacker sends
        expect(node.dispatched).toBeGreaterThan(1_500)
        expect(node.afterHandshake).toBeGreaterThan(node.dispatched / 2)
        for (const command of [
          "inv",
          "getdata",
          "notfound",
          "tx",
          "block",
          "getheaders",
          "headers",
          "addr",
          "ping",
        ] as const)
          expect(node.byCommand[command] ?? 0, command).toBeGreaterThan(0)
        // the nodes hung up on attackers, and the strict one banned some
        expect(node.disconnects).toBeGreaterThan(10)
        expect(node.bans).toBeGreaterThan(0)
        // both still answer (an honest peer's ping is checked inside the run); the lenient node took
        // fixture blocks that arrived between the junk
        expect(node.tips).toHaveLength(2)
        expect(node.tips[1]).toBeGreaterThan(0)
      }),
  )
})
