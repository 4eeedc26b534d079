import * as crypto from "node:crypto"
import { parseArgs } from "node:util"
import { Effect } from "effect"
import { corpus, hex } from "./frames.js"
import { type FuzzReport, NODE_SESSIONS, planOf, runFuzz } from "./fuzz.js"

/**
 * run.ts is `npm run fuzz`: a million (by default) random and mutated frames through framing,
 * decoding and two in-process nodes' peer dispatch. Prints the seed first, progress every ten seconds,
 * and a summary; exits 1 when anything went uncaught (each error listed with its seed and session, from
 * which the frames regenerate), 2 for a bad flag.
 */

const usage = `usage: npm run fuzz -- [--seed N] [--frames N] [--node-frames N] [--attackers N]
       npm run fuzz -- --seed N --show-session N

  --seed N         seed of the frame generator (default: random; printed either way)
  --frames N       frames in all (default 1000000)
  --node-frames N  of those, frames sent to the in-process nodes (default 30%); the rest go
                   through the Framer and the decoders directly
  --attackers N    concurrent attacker connections to the nodes (default 8)
  --show-session N print session N of the run with --seed (an error names its session): each
                   frame's mutation and bytes, and where the stream was cut`

const fail = (message: string): never => {
  console.error(`fuzz: ${message}\n${usage}`)
  process.exit(2)
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        seed: { type: "string" },
        frames: { type: "string" },
        "node-frames": { type: "string" },
        attackers: { type: "string" },
        "show-session": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    })
  } catch (e) {
    return fail(e instanceof Error ? e.message : String(e))
  }
})()

if (values.help === true) {
  console.log(usage)
  process.exit(0)
}

/** count reads a non-negative integer flag (underscores allowed: 1_000_000). */
const count = (name: string, text: string | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER) => {
  if (text === undefined) return fallback
  const n = Number(text.replaceAll("_", ""))
  if (!Number.isSafeInteger(n) || n < 0 || n > max)
    fail(`--${name}: expected an integer 0..${max}, got ${text}`)
  return n
}

const seed = count("seed", values.seed, crypto.randomInt(0, 2 ** 31), 2 ** 32 - 1)
const frames = count("frames", values.frames, 1_000_000)
const nodeFrames = count("node-frames", values["node-frames"], Math.round(frames * 0.3), frames)
const attackers = count("attackers", values.attackers, 8, 128)
if (attackers === 0 && nodeFrames > 0) fail("--attackers: at least 1 when frames go to the nodes")

if (values["show-session"] !== undefined) {
  if (values.seed === undefined) fail("--show-session: give the run's --seed too")
  const number = count("show-session", values["show-session"], 0)
  const { plan, chunks, strict } = planOf(corpus(), seed, number)
  const to = number < NODE_SESSIONS ? "the framer" : strict ? "the strict node" : "the lenient node"
  console.log(`seed ${seed} session ${number} (${to}): ${plan.frames.length} frames`)
  for (const [i, f] of plan.frames.entries())
    console.log(`  ${i} ${f.mutation}${f.aligned ? "" : " (breaks the framing)"}: ${hex(f.bytes, 512)}`)
  console.log(`  written in ${chunks.length} pieces of ${chunks.map((p) => p.length).join(", ")} bytes`)
  process.exit(0)
}

const n = (x: number): string => Math.round(x).toLocaleString("en-US")
const rate = (frames: number, seconds: number): string => n(seconds > 0 ? frames / seconds : 0)

console.log(
  `fuzz: seed ${seed}, ${n(frames)} frames (${n(frames - nodeFrames)} through the framer and decoders, ${n(nodeFrames)} to the nodes)`,
)

// a hang nothing else notices (the nodes' shutdown, say) ends the run after five quiet minutes
let lastProgress = Date.now()
const watchdog = setInterval(() => {
  if (Date.now() - lastProgress < 5 * 60_000) return
  console.error(`fuzz: no progress for 5 minutes: hang (seed ${seed})`)
  process.exit(1)
}, 10_000)
watchdog.unref()

const started = performance.now()
const report: FuzzReport = await Effect.runPromise(
  runFuzz({
    seed,
    fastFrames: frames - nodeFrames,
    nodeFrames,
    attackers,
    progress: (line) => {
      lastProgress = Date.now()
      console.log(`  ${line}`)
    },
  }),
)
clearInterval(watchdog)
const seconds = (performance.now() - started) / 1000

const { fast, node } = report
console.log(
  `fast path: ${n(fast.frames)} frames in ${fast.seconds.toFixed(1)} s (${rate(fast.frames, fast.seconds)} frames/s), ${n(fast.sessions)} sessions: ${n(fast.decoded)} decoded, ${n(fast.refused)} refused`,
)
console.log(
  `node path: ${n(node.frames)} frames in ${node.seconds.toFixed(1)} s (${rate(node.frames, node.seconds)} frames/s, ${rate(node.dispatched, node.seconds)} dispatched/s), ${n(node.sessions)} sessions, ${n(node.simulatedSeconds)} s simulated`,
)
console.log(
  `  ${n(node.dispatched)} through dispatch (${n(node.afterHandshake)} after the handshake), ${n(node.disconnects)} disconnects, ${n(node.bans)} bans, ${n(node.refused)} refused at connect, ${n(node.warnings)} warnings; tips ${node.tips.join(" / ")} (strict / lenient)`,
)
console.log(
  `  dispatched by command: ${Object.entries(node.byCommand)
    .sort(([, a], [, b]) => b - a)
    .map(([c, k]) => `${c} ${n(k)}`)
    .join(", ")}`,
)
console.log(
  `  top disconnect reasons: ${Object.entries(node.disconnectReasons)
    .sort(([, a], [, b]) => b - a)
    .slice(0, 8)
    .map(([r, k]) => `${r} (${n(k)})`)
    .join("; ")}`,
)
console.log(
  `mutations: ${Object.entries(report.mutations)
    .sort(([, a], [, b]) => b - a)
    .map(([m, k]) => `${m} ${n(k)}`)
    .join(", ")}`,
)
for (const e of report.errors.slice(0, 20)) {
  console.error(
    `ERROR (${e.where}${e.session === undefined ? "" : `, --seed ${seed} --show-session ${e.session}`}): ${e.what}${e.frame === undefined ? "" : `\n  frames: ${e.frame}`}`,
  )
}
if (report.errors.length > 20) console.error(`… and ${report.errors.length - 20} more errors`)
console.log(
  `frames ${fast.frames + node.frames}, through dispatch ${node.dispatched}, disconnects ${node.disconnects}, bans ${node.bans}, errors: ${report.errors.length}, seconds ${seconds.toFixed(1)}`,
)
process.exit(report.errors.length === 0 ? 0 : 1)
