import { createRequire } from "node:module"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { Duration } from "effect"

/**
 * startWorkerThread starts the worker script `name` that sits beside the calling module
 * (`moduleUrl` = its import.meta.url). Compiled, that is dist/layers/<name>.js. Run from TypeScript
 * sources (vitest, tsx), it is <name>.ts, which a plain worker cannot load: on Node 20 a worker ignores
 * `execArgv: ["--import", "tsx"]` for its entry (ERR_UNKNOWN_FILE_EXTENSION), so a small bootstrap
 * registers tsx's loader inside the thread, then imports the entry. Used by the signature and mining
 * pools.
 */
export const startWorkerThread = (moduleUrl: string, name: string, workerData?: unknown): Worker => {
  const options = workerData === undefined ? {} : { workerData }
  if (!moduleUrl.endsWith(".ts")) return new Worker(new URL(`./${name}.js`, moduleUrl), options)
  const entry = new URL(`./${name}.ts`, moduleUrl).href
  // tsx's CommonJS api build mis-resolves its own loader from a worker; its ESM build sits beside it.
  const tsxApi = pathToFileURL(
    createRequire(moduleUrl)
      .resolve("tsx/esm/api")
      .replace(/\.cjs$/, ".mjs"),
  ).href
  const bootstrap = `import(${JSON.stringify(tsxApi)})
    .then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}) })`
  return new Worker(bootstrap, { eval: true, ...options })
}

/** restartDelay backs off a pool slot whose replacement threads keep dying: 100 ms doubling to 30 s. */
export const restartDelay = (failures: number): Duration.Duration =>
  Duration.millis(Math.min(30_000, 100 * 2 ** Math.max(0, failures - 1)))
