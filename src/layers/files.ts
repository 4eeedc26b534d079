import * as fs from "node:fs"
import * as path from "node:path"

/**
 * writePrivateFileAtomic writes `text` to `file` so that a crash leaves either the old file or the new
 * one, never half of either, readable by the owner only: a temporary file created 0600, fsync, rename
 * over `file`, fsync of the directory (so the rename itself is durable). Synchronous and throwing: the
 * callers (the wallet's seed file, the node key) wrap it in their own typed errors.
 */
export const writePrivateFileAtomic = (file: string, text: string): void => {
  const tmp = `${file}.tmp`
  const fd = fs.openSync(tmp, "w", 0o600)
  try {
    fs.fchmodSync(fd, 0o600)
    fs.writeFileSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  const dir = fs.openSync(path.dirname(file), "r")
  try {
    fs.fsyncSync(dir)
  } finally {
    fs.closeSync(dir)
  }
}
