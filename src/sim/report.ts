import { replayFlags } from "./options.js"
import type { Percentiles, SimReport } from "./Simulator.js"

/** report.ts prints a run's report as text for a terminal or as JSON for scripts. */

const seconds = (ms: number | undefined): string => (ms === undefined ? "—" : `${(ms / 1000).toFixed(1)} s`)
const millis = (ms: number | undefined): string => (ms === undefined ? "—" : `${Math.round(ms)} ms`)
const spread = (values: ReadonlyArray<number>): string => {
  if (values.length === 0) return "—"
  const min = Math.min(...values)
  const max = Math.max(...values)
  const mean = values.reduce((a, b) => a + b, 0) / values.length
  return `min ${Math.round(min)}, mean ${Math.round(mean)}, max ${Math.round(max)}`
}
const percentileLine = (p: Percentiles): string =>
  p.samples === 0
    ? "no arrivals"
    : `p50 ${millis(p.p50)}, p95 ${millis(p.p95)}, max ${millis(p.max)} (${p.samples} arrivals)`

/** replayCommand is the one line that runs the same scenario again. */
export const replayCommand = (report: SimReport): string => `npm run sim -- ${replayFlags(report.options)}`

/** formatText is the human summary: the run, propagation, traffic, the trace hash and each invariant. */
export const formatText = (r: SimReport): string => {
  const o = r.options
  const rate = r.realMs > 0 ? (r.simulatedMs + r.setupMs) / r.realMs : 0
  const lines = [
    `fibercoin sim: ${o.nodes} nodes, topology ${o.topology}, seed ${o.seed}`,
    `  simulated ${seconds(r.simulatedMs)} (+ ${seconds(r.setupMs)} setup) in ${seconds(r.realMs)} real (${rate.toFixed(1)} simulated s per real s)`,
    `  blocks mined ${r.blocksMined}, final height ${r.finalHeight}, tip ${r.finalTip.slice(0, 16)}…`,
    `  payments ${r.payments.accepted}/${r.payments.attempted} accepted`,
    `  convergence: ${r.convergenceAfterHealMs.map((ms, i) => `heal ${i + 1}: ${millis(ms)}`).join(", ") || "no heals"}; after mining stopped: ${millis(r.finalConvergenceMs)}`,
    `  block propagation: ${percentileLine(r.propagation)}`,
    `  messages per node sent: ${spread(r.traffic.map((t) => t.messagesSent))}; received: ${spread(r.traffic.map((t) => t.messagesReceived))}`,
    `  bytes per node sent: ${spread(r.traffic.map((t) => t.bytesSent))}; received: ${spread(r.traffic.map((t) => t.bytesReceived))}`,
    ...(r.crashes ?? []).map(
      (c) =>
        `  crash: node ${c.node} down at ${seconds(c.crashedAtMs)} (height ${c.heightAtCrash}), restarted ${c.restartedAtMs === undefined ? "never (had not stopped)" : `at ${seconds(c.restartedAtMs)} from its storage at height ${c.heightAtRestart}`}`,
    ),
    ...(r.clockSkewMs === undefined ? [] : [`  clock skew per node (ms): ${r.clockSkewMs.join(", ")}`]),
    `  trace ${r.traceHash} (${r.traceMessages} messages, ${r.clockWakes} timer wakes)`,
    "invariants:",
    ...r.invariants.map((i) => `  ${i.ok ? "ok  " : "FAIL"} ${i.name}: ${i.detail}`),
  ]
  if (!r.ok) lines.push(`FAILED with seed ${o.seed}; replay: ${replayCommand(r)}`)
  return lines.join("\n")
}

/** formatJson is the report as one JSON document (`--json`), with the replay command when it failed. */
export const formatJson = (r: SimReport): string =>
  JSON.stringify({ ...r, ...(r.ok ? {} : { replay: replayCommand(r) }) }, null, 2)
