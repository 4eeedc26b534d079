/** toHex renders bytes as lower-case hex (block ids and txids are shown in byte order, not reversed). */
export const toHex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

const hexPattern = /^(?:[0-9a-fA-F]{2})*$/

/** fromHex parses hex, or returns undefined for odd length or a non-hex character. */
export const fromHex = (hex: string): Uint8Array | undefined =>
  hexPattern.test(hex) ? new Uint8Array(Buffer.from(hex, "hex")) : undefined

/** bytesEqual compares two byte strings in constant-size steps (not constant time; ids are public). */
export const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
