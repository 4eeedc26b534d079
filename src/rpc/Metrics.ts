/**
 * Prometheus text exposition (format 0.0.4) of Effect's global metric registry, served by the RPC
 * server at `GET /metrics`. Effect keeps every `Metric` in one registry; this file only renders a
 * `Metric.snapshot`, so any actor's counters, gauges and histograms appear without registration.
 */
import { Effect, Metric, type MetricPair, MetricState, Option } from "effect"

/** prometheusContentType is the Content-Type of the text exposition format. */
export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

/**
 * sanitizeMetricName maps an Effect metric name onto Prometheus' `[a-zA-Z_:][a-zA-Z0-9_:]*`:
 * every other character becomes `_`, and a leading digit gets a `_` prefix.
 */
export const sanitizeMetricName = (name: string): string => {
  const body = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return body === "" || /^[0-9]/.test(body) ? `_${body}` : body
}

/** sanitizeLabelName maps a tag key onto Prometheus' label names `[a-zA-Z_][a-zA-Z0-9_]*`. */
export const sanitizeLabelName = (name: string): string => {
  const body = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return body === "" || /^[0-9]/.test(body) ? `_${body}` : body
}

const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")

const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatNumber = (n: number | bigint): string => {
  if (typeof n === "bigint") return n.toString()
  if (Number.isNaN(n)) return "NaN"
  if (n === Number.POSITIVE_INFINITY) return "+Inf"
  if (n === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(n)
}

type Labels = ReadonlyArray<readonly [string, string]>

const formatLabels = (labels: Labels): string =>
  labels.length === 0
    ? ""
    : `{${labels.map(([k, v]) => `${sanitizeLabelName(k)}="${escapeLabelValue(v)}"`).join(",")}}`

type PromType = "counter" | "gauge" | "histogram" | "summary"

interface Family {
  readonly name: string
  readonly type: PromType
  help: string
  readonly lines: Array<string>
}

const typeOf = (state: MetricState.MetricState.Untyped): PromType | undefined => {
  if (MetricState.isCounterState(state) || MetricState.isFrequencyState(state)) return "counter"
  if (MetricState.isGaugeState(state)) return "gauge"
  if (MetricState.isHistogramState(state)) return "histogram"
  if (MetricState.isSummaryState(state)) return "summary"
  return undefined
}

const sampleLines = (name: string, labels: Labels, state: MetricState.MetricState.Untyped): Array<string> => {
  const line = (suffix: string, extra: Labels, value: number | bigint) =>
    `${name}${suffix}${formatLabels([...labels, ...extra])} ${formatNumber(value)}`
  if (MetricState.isCounterState(state)) return [line("", [], state.count)]
  if (MetricState.isGaugeState(state)) return [line("", [], state.value)]
  if (MetricState.isFrequencyState(state)) {
    return [...state.occurrences].map(([key, count]) => line("", [["key", key]], count))
  }
  if (MetricState.isHistogramState(state)) {
    const out = state.buckets.map(([le, count]) => line("_bucket", [["le", formatNumber(le)]], count))
    const last = state.buckets[state.buckets.length - 1]
    if (last === undefined || last[0] !== Number.POSITIVE_INFINITY) {
      out.push(line("_bucket", [["le", "+Inf"]], state.count))
    }
    out.push(line("_sum", [], state.sum), line("_count", [], state.count))
    return out
  }
  if (MetricState.isSummaryState(state)) {
    const out = state.quantiles.map(([q, value]) =>
      line(
        "",
        [["quantile", formatNumber(q)]],
        Option.getOrElse(value, () => Number.NaN),
      ),
    )
    out.push(line("_sum", [], state.sum), line("_count", [], state.count))
    return out
  }
  return []
}

/**
 * renderPrometheus renders metric pairs as Prometheus text: one `# HELP`/`# TYPE` header per
 * family (a family is every pair sharing a sanitized name), tags as labels, histograms as
 * cumulative `_bucket{le}` lines plus `_sum` and `_count`, summaries as `{quantile}` lines,
 * and Effect's frequencies as counters labelled `key`. Families and series are sorted so the
 * output is stable. A name reused with another metric type is emitted as `<name>_<type>`.
 */
export const renderPrometheus = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  for (const pair of pairs) {
    const type = typeOf(pair.metricState)
    if (type === undefined) continue
    let name = sanitizeMetricName(pair.metricKey.name)
    const existing = families.get(name)
    if (existing !== undefined && existing.type !== type) name = `${name}_${type}`
    let family = families.get(name)
    if (family === undefined) {
      family = { name, type, help: "", lines: [] }
      families.set(name, family)
    }
    if (family.help === "") family.help = Option.getOrElse(pair.metricKey.description, () => "")
    const labels: Labels = [...pair.metricKey.tags]
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .map((tag) => [tag.key, tag.value] as const)
    family.lines.push(...sampleLines(name, labels, pair.metricState))
  }
  const out: Array<string> = []
  for (const family of [...families.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    out.push(`# HELP ${family.name} ${escapeHelp(family.help === "" ? family.name : family.help)}`)
    out.push(`# TYPE ${family.name} ${family.type}`)
    out.push(...family.lines)
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}

/** prometheusSnapshot renders the current state of Effect's global metric registry. */
export const prometheusSnapshot: Effect.Effect<string> = Effect.map(Metric.snapshot, renderPrometheus)
