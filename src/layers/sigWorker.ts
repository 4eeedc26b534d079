/**
 * sigWorker is the entry of one SigVerifier pool thread (`layerPool` starts it; never import it). It
 * loads `loadDefaultBackend()` once, answers `Ready`, then verifies each request's packed checks in
 * order and answers the first invalid position, or -1. It keeps no state between requests. A request
 * it cannot read is a broken invariant: it throws, the thread dies, and the pool replaces it.
 */
import { parentPort } from "node:worker_threads"
import { loadDefaultBackend } from "./Signatures.js"
import {
  checkBytes,
  isSigWorkerRequest,
  keyOffset,
  msgOffset,
  type SigWorkerReply,
  type SigWorkerRequest,
  sigOffset,
} from "./SigVerifier.js"

const port = parentPort
if (port === null) throw new Error("sigWorker is a worker thread entry; SigVerifier.layerPool starts it")

const { backend, fallbackReason } = loadDefaultBackend()

// Warm up before `Ready`: bcrypto creates libsecp256k1's context lazily, on the first verify, with
// napi_create_external, and asserts that it succeeded. If the thread is being terminated at that
// moment (shutdown, or a kill from outside) the call fails and the assertion aborts the WHOLE process.
// After this, verify's N-API calls only read arguments and return a boolean, which termination cannot fail.
backend.verify(new Uint8Array(32), new Uint8Array(64), new Uint8Array(32))

const reply = (message: SigWorkerReply): void => port.postMessage(message)

/** firstInvalidPacked verifies packed checks `start .. start + count`; answers the first invalid position. */
const firstInvalidPacked = (request: SigWorkerRequest): number => {
  const bytes = new Uint8Array(request.buffer)
  const end = request.start + request.count
  for (let i = request.start; i < end; i++) {
    const at = i * checkBytes
    const ok = backend.verify(
      bytes.subarray(at + msgOffset, at + sigOffset),
      bytes.subarray(at + sigOffset, at + keyOffset),
      bytes.subarray(at + keyOffset, at + checkBytes),
    )
    if (!ok) return i
  }
  return -1
}

port.on("message", (message: unknown) => {
  if (!isSigWorkerRequest(message)) throw new Error("sigWorker: malformed request")
  reply({ _tag: "Verified", id: message.id, bad: firstInvalidPacked(message) })
})

reply(
  fallbackReason === undefined
    ? { _tag: "Ready", backend: backend.name }
    : { _tag: "Ready", backend: backend.name, fallbackReason },
)
