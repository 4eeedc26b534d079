import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { delimiter, join } from "node:path"

/**
 * A NAT lab of Linux network namespaces for the real-network NAT test (issue 8). Every namespace is
 * named `fcnat-<pid>-<role>`: the pid of the test process that made it, so a run removes the labs
 * of dead runs at start (`removeStaleLabs`) and never touches those of a run still going.
 *
 * ```
 *   hostA 10.0.1.2 ── 10.0.1.1 natA 198.51.100.2 ──┐              ┌── 203.0.113.2 natB 10.0.2.1 ── 10.0.2.2 hostB
 *                     (MASQUERADE out of wan)      198.51.100.1  pub  203.0.113.1    (MASQUERADE out of wan)
 *                                                          R: 192.0.2.1/32 on pub's lo
 * ```
 */

/** The lab's fixed addresses: documentation ranges (RFC 5737) for the "internet", RFC 1918 behind the NATs. */
export const labAddresses = {
  rendezvous: "192.0.2.1",
  pubA: "198.51.100.1",
  wanA: "198.51.100.2",
  pubB: "203.0.113.1",
  wanB: "203.0.113.2",
  lanA: "10.0.1.1",
  hostA: "10.0.1.2",
  lanB: "10.0.2.1",
  hostB: "10.0.2.2",
} as const

const PREFIX = "fcnat-"

/** which finds a program on PATH or in the sbin directories a root shell has (npm may run without them). */
const which = (program: string): string | undefined => {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
  for (const dir of dirs) {
    if (dir !== "" && existsSync(join(dir, program))) return join(dir, program)
  }
  return undefined
}

/** Tools are the absolute paths of the programs the lab runs. */
export interface Tools {
  readonly ip: string
  readonly iptables: string
}

/**
 * requireTools answers the lab's programs, or throws naming everything missing (not root, no `ip`,
 * no `iptables`): the NAT test must fail, not skip, where it cannot build its network.
 */
export const requireTools = (): Tools => {
  const missing: Array<string> = []
  if (typeof process.getuid !== "function" || process.getuid() !== 0)
    missing.push(
      `root (running as uid ${process.getuid?.() ?? "unknown"}; network namespaces need CAP_SYS_ADMIN)`,
    )
  const ip = which("ip")
  if (ip === undefined) missing.push("the `ip` program (apt-get install iproute2)")
  const iptables = which("iptables")
  if (iptables === undefined) missing.push("the `iptables` program (apt-get install iptables)")
  if (missing.length > 0 || ip === undefined || iptables === undefined)
    throw new Error(`the NAT e2e test cannot build its network namespaces; missing: ${missing.join("; ")}`)
  return { ip, iptables }
}

/** run runs a program to completion (10 s at most) and throws with its stderr when it fails. */
const run = (file: string, args: ReadonlyArray<string>): string => {
  const r = spawnSync(file, args, { encoding: "utf8", timeout: 10_000 })
  if (r.error !== undefined) throw new Error(`${file} ${args.join(" ")}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${file} ${args.join(" ")} exited ${r.status}: ${r.stderr.trim()}`)
  return r.stdout
}

const listNamespaces = (tools: Tools): Array<string> =>
  run(tools.ip, ["netns", "list"])
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(PREFIX))

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** removeStaleLabs deletes the `fcnat-<pid>-*` namespaces whose test process is gone; answers their names. */
export const removeStaleLabs = (tools: Tools): Array<string> => {
  const stale = listNamespaces(tools).filter((name) => {
    const pid = Number(name.slice(PREFIX.length).split("-")[0])
    return !Number.isInteger(pid) || pid === process.pid || !alive(pid)
  })
  for (const name of stale) spawnSync(tools.ip, ["netns", "del", name], { timeout: 10_000 })
  return stale
}

/** The five namespaces of one lab. */
export interface Lab {
  readonly tools: Tools
  readonly pub: string
  readonly natA: string
  readonly natB: string
  readonly hostA: string
  readonly hostB: string
  /** exec answers the argv that runs `argv` inside namespace `ns` (`ip netns exec ns …`). */
  readonly exec: (ns: string, argv: ReadonlyArray<string>) => Array<string>
  /** sh runs a program inside `ns` to completion, throwing on failure. */
  readonly sh: (ns: string, argv: ReadonlyArray<string>) => string
  /** destroy kills nothing (the test stops its processes) and deletes every namespace of the lab. */
  readonly destroy: () => Array<string>
}

/**
 * createLab builds the topology above. Any step that fails throws with the command and its stderr
 * (e.g. `ip netns add` without CAP_SYS_ADMIN, MASQUERADE without the nf_nat modules); the namespaces
 * made so far are deleted first.
 */
export const createLab = (tools: Tools): Lab => {
  const name = (role: string) => `${PREFIX}${process.pid}-${role}`
  const lab = {
    pub: name("pub"),
    natA: name("nata"),
    natB: name("natb"),
    hostA: name("hosta"),
    hostB: name("hostb"),
  }
  const all = [lab.pub, lab.natA, lab.natB, lab.hostA, lab.hostB]
  const exec = (ns: string, argv: ReadonlyArray<string>) => [tools.ip, "netns", "exec", ns, ...argv]
  const sh = (ns: string, argv: ReadonlyArray<string>) => {
    const [file, ...args] = exec(ns, argv)
    return run(file!, args)
  }
  const destroy = () => {
    const failures: Array<string> = []
    for (const ns of all) {
      const r = spawnSync(tools.ip, ["netns", "del", ns], { encoding: "utf8", timeout: 10_000 })
      if (r.status !== 0 && !r.stderr.includes("No such file")) failures.push(`${ns}: ${r.stderr.trim()}`)
    }
    return failures
  }
  const ip = (ns: string, ...args: Array<string>) => run(tools.ip, ["-n", ns, ...args])
  const forward = (ns: string) => sh(ns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])

  try {
    for (const ns of all) {
      run(tools.ip, ["netns", "add", ns])
      ip(ns, "link", "set", "lo", "up")
    }
    // the "internet": R's address on pub's loopback, one link to each NAT's WAN side
    ip(lab.pub, "addr", "add", `${labAddresses.rendezvous}/32`, "dev", "lo")
    forward(lab.pub)
    const nat = (
      router: string,
      host: string,
      pubSide: string,
      pubAddress: string,
      wanAddress: string,
      lanAddress: string,
      hostAddress: string,
    ) => {
      ip(lab.pub, "link", "add", pubSide, "type", "veth", "peer", "name", "wan", "netns", router)
      ip(lab.pub, "addr", "add", `${pubAddress}/24`, "dev", pubSide)
      ip(lab.pub, "link", "set", pubSide, "up")
      ip(router, "addr", "add", `${wanAddress}/24`, "dev", "wan")
      ip(router, "link", "set", "wan", "up")
      ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
      ip(router, "addr", "add", `${lanAddress}/24`, "dev", "lan")
      ip(router, "link", "set", "lan", "up")
      ip(router, "route", "add", "default", "via", pubAddress)
      forward(router)
      sh(router, [tools.iptables, "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"])
      // a home router's firewall: nothing unsolicited from the WAN reaches the router itself. Without
      // it a peer's punch probe that arrives before our own first probe leaves is delivered to the
      // router's stack and conntrack keeps that flow; our probe then clashes with it and MASQUERADE
      // gives it another source port, which the peer's NAT drops: simultaneous punching deadlocks
      sh(router, [
        tools.iptables,
        "-A",
        "INPUT",
        "-i",
        "wan",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW,INVALID",
        "-j",
        "DROP",
      ])
      ip(host, "addr", "add", `${hostAddress}/24`, "dev", "eth0")
      ip(host, "link", "set", "eth0", "up")
      ip(host, "route", "add", "default", "via", lanAddress)
    }
    nat(
      lab.natA,
      lab.hostA,
      "toa",
      labAddresses.pubA,
      labAddresses.wanA,
      labAddresses.lanA,
      labAddresses.hostA,
    )
    nat(
      lab.natB,
      lab.hostB,
      "tob",
      labAddresses.pubB,
      labAddresses.wanB,
      labAddresses.lanB,
      labAddresses.hostB,
    )
  } catch (e) {
    destroy()
    throw new Error(`the NAT e2e test could not build its network namespaces: ${(e as Error).message}`)
  }
  return { tools, ...lab, exec, sh, destroy }
}

/**
 * nodeScript runs `node -e script args…` inside a namespace and answers its exit code and output;
 * it is killed after `ms` (a probe that hangs counts as failed, code null).
 */
export const nodeScript = (
  lab: Lab,
  ns: string,
  script: string,
  args: ReadonlyArray<string>,
  ms: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const [file, ...rest] = lab.exec(ns, [process.execPath, "-e", script, ...args])
    const child = spawn(file!, rest, { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), ms)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

/** udpEchoServer (a `node -e` script): answers each datagram with the source address it saw, then keeps serving. */
export const udpEchoServerScript = `
const s = require("node:dgram").createSocket("udp4")
s.on("message", (m, r) => s.send(r.address + ":" + r.port, r.port, r.address))
s.bind(Number(process.argv[2]), process.argv[1], () => console.log("ready"))
`

/** udpAskScript (a `node -e` script): sends one datagram to host:port (retrying) and prints the first answer. */
export const udpAskScript = `
const s = require("node:dgram").createSocket("udp4")
s.on("message", (m) => { console.log(m.toString()); process.exit(0) })
const ask = () => s.send("who am i", Number(process.argv[2]), process.argv[1])
s.bind(0, () => { ask(); setInterval(ask, 200) })
`

/** tcpListenScript (a `node -e` script): listens on host:port and accepts connections until killed. */
export const tcpListenScript = `
require("node:net").createServer((c) => c.end("hello")).listen(Number(process.argv[2]), process.argv[1], () => console.log("ready"))
`

/** tcpProbeScript (a `node -e` script): exit 0 if a TCP connection to host:port opens, 1 on an error. */
export const tcpProbeScript = `
const c = require("node:net").connect(Number(process.argv[2]), process.argv[1])
c.on("connect", () => { console.log("connected"); process.exit(0) })
c.on("error", (e) => { console.log(e.code); process.exit(1) })
`

/** startBackground runs a `node -e` script inside a namespace until the caller kills it; resolves once it prints. */
export const startBackground = (
  lab: Lab,
  ns: string,
  script: string,
  args: ReadonlyArray<string>,
): Promise<ChildProcess> =>
  new Promise((resolve, reject) => {
    const [file, ...rest] = lab.exec(ns, [process.execPath, "-e", script, ...args])
    const child = spawn(file!, rest, { stdio: ["ignore", "pipe", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString()
    })
    child.stdout.once("data", () => resolve(child))
    child.on("exit", (code) => reject(new Error(`background script in ${ns} exited ${code}: ${stderr}`)))
  })
