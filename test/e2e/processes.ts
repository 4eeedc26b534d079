import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

/** root is the repository (the e2e suite runs the built dist/ programs from here). */
export const root = fileURLToPath(new URL("../..", import.meta.url))

/** workDir makes a temp directory and a cleanup that kills the nodes started in it and removes it. */
export const workDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const running: Array<ChildProcess> = []
  return {
    dir,
    running,
    cleanup: () => {
      for (const p of running) p.kill("SIGKILL")
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** freePort asks the OS for a free loopback port. */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const address = s.address()
      s.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

export interface NodeHandle {
  readonly dataDir: string
  readonly rpc: number
  readonly p2p: number
  readonly process: ChildProcess
  readonly exited: Promise<number | null>
  output: string
}

/**
 * startNode runs `node dist/main.js` as a full node (no background mining, unless `extra` names another
 * `--role`) and waits until its RPC answers.
 */
export const startNode = async (
  running: Array<ChildProcess>,
  dataDir: string,
  rpc: number,
  p2p: number,
  extra: ReadonlyArray<string> = [],
): Promise<NodeHandle> => {
  const child = spawn(
    process.execPath,
    [
      "dist/main.js",
      "--datadir",
      dataDir,
      "--rpc",
      `127.0.0.1:${rpc}`,
      "--listen",
      `127.0.0.1:${p2p}`,
      ...(extra.includes("--role") ? [] : ["--role", "full"]),
      // a free UDP port of its own (several nodes run on this machine), unless the test sets one
      ...(extra.includes("--udp") ? [] : ["--udp", "127.0.0.1:0"]),
      ...extra,
    ],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  )
  running.push(child)
  const handle: NodeHandle = {
    dataDir,
    rpc,
    p2p,
    process: child,
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
    output: "",
  }
  child.stdout!.on("data", (d: Buffer) => {
    handle.output += d.toString()
  })
  child.stderr!.on("data", (d: Buffer) => {
    handle.output += d.toString()
  })
  for (let i = 0; i < 200 && child.exitCode === null; i++) {
    if ((await cliAsync(handle, "getblockcount")).status === 0) return handle
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`node did not answer RPC (exit ${child.exitCode}): ${handle.output}`)
}

/**
 * outputContains waits (at most 10 s) until the node's log shows `needle`: the spawnSync calls of the
 * CLI block this process's event loop, so the child's output is only read while we wait here.
 */
export const outputContains = async (node: NodeHandle, needle: string) => {
  for (let i = 0; i < 100 && !node.output.includes(needle); i++) await new Promise((r) => setTimeout(r, 100))
  return node.output.includes(needle)
}

const cliArgs = (node: { dataDir: string; rpc: number }, args: ReadonlyArray<string>) => [
  "dist/cli.js",
  "--rpc",
  `127.0.0.1:${node.rpc}`,
  "--datadir",
  node.dataDir,
  ...args,
]

/** cli runs `node dist/cli.js` against a node (cookie auth from its data directory), blocking. */
export const cli = (node: { dataDir: string; rpc: number }, ...args: Array<string>) =>
  spawnSync(process.execPath, cliArgs(node, args), { cwd: root, encoding: "utf8", timeout: 60_000 })

/** cliAsync is `cli` without blocking the event loop (the nodes' output keeps being read). */
export const cliAsync = (node: { dataDir: string; rpc: number }, ...args: Array<string>) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      cliArgs(node, args),
      { cwd: root, encoding: "utf8", timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resolve({ status: code, stdout, stderr })
      },
    )
  })

/** json runs a CLI call that must succeed and parses its output. */
export const json = (node: NodeHandle, ...args: Array<string>) => {
  const r = cli(node, ...args)
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed (${r.status}): ${r.stderr}`)
  return JSON.parse(r.stdout) as unknown
}

/** text runs a CLI call that must succeed and returns its trimmed output. */
export const text = (node: NodeHandle, ...args: Array<string>) => {
  const r = cli(node, ...args)
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed (${r.status}): ${r.stderr}`)
  return r.stdout.trim()
}

/** rpcAsync runs a CLI call without blocking, failing the test when it fails; JSON-parsed when it parses. */
export const rpcAsync = async (node: NodeHandle, ...args: Array<string>): Promise<unknown> => {
  const r = await cliAsync(node, ...args)
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed (${r.status}): ${r.stderr}`)
  const out = r.stdout.trim()
  try {
    return JSON.parse(out) as unknown
  } catch {
    return out
  }
}

/** eventually polls `check` (every 200 ms, at most `ms`) until it answers true. */
export const eventually = async (what: string, ms: number, check: () => Promise<boolean>) => {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`timed out after ${ms} ms waiting for: ${what}`)
}

/** WrappedNode is a node run under a command prefix (e.g. `ip netns exec NS`), whose CLI runs under the same prefix. */
export interface WrappedNode extends NodeHandle {
  readonly wrap: ReadonlyArray<string>
}

/** cliWrappedAsync is `cliAsync` for a wrapped node: the CLI runs under the node's prefix (its namespace's loopback). */
export const cliWrappedAsync = (node: WrappedNode, ...args: Array<string>) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    const [file, ...prefix] = node.wrap
    execFile(
      file!,
      [...prefix, process.execPath, ...cliArgs(node, args)],
      { cwd: root, encoding: "utf8", timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resolve({ status: code, stdout, stderr })
      },
    )
  })

/** rpcWrappedAsync is `rpcAsync` for a wrapped node. */
export const rpcWrappedAsync = async (node: WrappedNode, ...args: Array<string>): Promise<unknown> => {
  const r = await cliWrappedAsync(node, ...args)
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed (${r.status}): ${r.stderr}`)
  const out = r.stdout.trim()
  try {
    return JSON.parse(out) as unknown
  } catch {
    return out
  }
}

/**
 * startWrappedNode runs `node dist/main.js` as a full node under `wrap` (e.g. `ip netns exec NS`) with
 * RPC on 127.0.0.1:`rpc` there and the given P2P `listen` and `udp` addresses (no other flags than
 * `extra`), and waits (at most 20 s) until its RPC answers.
 */
export const startWrappedNode = async (
  running: Array<ChildProcess>,
  wrap: ReadonlyArray<string>,
  options: { dataDir: string; rpc: number; listen: string; udp: string; extra?: ReadonlyArray<string> },
): Promise<WrappedNode> => {
  const [file, ...prefix] = wrap
  const child = spawn(
    file!,
    [
      ...prefix,
      process.execPath,
      "dist/main.js",
      "--datadir",
      options.dataDir,
      "--rpc",
      `127.0.0.1:${options.rpc}`,
      "--listen",
      options.listen,
      "--udp",
      options.udp,
      "--role",
      "full",
      ...(options.extra ?? []),
    ],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  )
  running.push(child)
  const handle: WrappedNode = {
    wrap,
    dataDir: options.dataDir,
    rpc: options.rpc,
    p2p: Number(options.listen.slice(options.listen.lastIndexOf(":") + 1)),
    process: child,
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
    output: "",
  }
  child.stdout!.on("data", (d: Buffer) => {
    handle.output += d.toString()
  })
  child.stderr!.on("data", (d: Buffer) => {
    handle.output += d.toString()
  })
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break
    if ((await cliWrappedAsync(handle, "getblockcount")).status === 0) return handle
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`node ${options.dataDir} did not answer RPC (exit ${child.exitCode}): ${handle.output}`)
}

/**
 * startLightNode runs `node dist/main.js --role light` (issue 9: headers only, the blocks its filters
 * match fetched on demand) with its own RPC, P2P and UDP ports, and waits until its RPC answers.
 */
export const startLightNode = (
  running: Array<ChildProcess>,
  dataDir: string,
  rpc: number,
  p2p: number,
  extra: ReadonlyArray<string> = [],
): Promise<NodeHandle> => startNode(running, dataDir, rpc, p2p, ["--role", "light", ...extra])

/** dirBytes sums the sizes of the files under `dir`, recursively (what `du --apparent-size` counts). */
export const dirBytes = (dir: string): number =>
  readdirSync(dir, { withFileTypes: true }).reduce((sum, entry) => {
    const path = join(dir, entry.name)
    return sum + (entry.isDirectory() ? dirBytes(path) : entry.isFile() ? statSync(path).size : 0)
  }, 0)
