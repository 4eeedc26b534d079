import ipaddr from "ipaddr.js"

/**
 * netaddr converts between host strings (what sockets and config use) and the 16-byte form the wire
 * carries (IPv6, IPv4 as `::ffff:a.b.c.d`), and names the network groups the address book and the
 * outbound caps count by. Parsing is ipaddr.js's; only IP literals are addresses here (no DNS).
 */

/** hostToBytes is a host string's 16-byte wire form; undefined when it is not an IP literal. */
export const hostToBytes = (host: string): Uint8Array | undefined => {
  if (!ipaddr.isValid(host)) return undefined
  const parsed = ipaddr.parse(host)
  const v6 = parsed.kind() === "ipv4" ? (parsed as ipaddr.IPv4).toIPv4MappedAddress() : parsed
  return Uint8Array.from(v6.toByteArray())
}

/** bytesToHost is the host string of a 16-byte address: dotted quad for IPv4-mapped, RFC 5952 otherwise. */
export const bytesToHost = (bytes: Uint8Array): string => {
  const v6 = ipaddr.fromByteArray([...bytes]) as ipaddr.IPv6
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address().toString() : v6.toRFC5952String()
}

/** isUnspecifiedBytes: the 16-byte form of 0.0.0.0 (IPv4-mapped) or :: (never an address to dial, gossip or announce). */
export const isUnspecifiedBytes = (bytes: Uint8Array): boolean => {
  const v4 = bytes.subarray(12).every((b) => b === 0)
  const head = bytes.subarray(0, 10).every((b) => b === 0)
  return head && v4 && ((bytes[10] === 0 && bytes[11] === 0) || (bytes[10] === 0xff && bytes[11] === 0xff))
}

/** isUnspecifiedHost: a host string naming 0.0.0.0 or :: (false for anything that is not an IP literal). */
export const isUnspecifiedHost = (host: string): boolean => {
  const bytes = hostToBytes(host)
  return bytes !== undefined && isUnspecifiedBytes(bytes)
}

/** normalizeHost maps a host string to one spelling (`::ffff:1.2.3.4` → `1.2.3.4`); non-IPs unchanged. */
export const normalizeHost = (host: string): string => {
  const bytes = hostToBytes(host)
  return bytes === undefined ? host : bytesToHost(bytes)
}

/** SubnetBits are the prefix lengths the caps count by (IPv4; IPv6 uses /32, /48, /64 in their place). */
export type SubnetBits = 8 | 16 | 24

const v6Bits: Record<SubnetBits, number> = { 8: 32, 16: 48, 24: 64 }

/**
 * subnetOf names the /8, /16 or /24 an address is in (e.g. `"10.1/16"`); for IPv6 the /32, /48 or
 * /64 (Core groups IPv6 by /32). Hosts that are not IP literals (sim names) are their own group.
 */
export const subnetOf = (host: string, bits: SubnetBits): string => {
  const bytes = hostToBytes(host)
  if (bytes === undefined) return `host:${host}`
  const v6 = ipaddr.fromByteArray([...bytes]) as ipaddr.IPv6
  if (v6.isIPv4MappedAddress()) {
    const octets = v6.toIPv4Address().octets.slice(0, bits / 8)
    return `${octets.join(".")}/${bits}`
  }
  const n = v6Bits[bits] / 8
  return `${[...bytes.subarray(0, n)].map((b) => b.toString(16).padStart(2, "0")).join("")}/${v6Bits[bits]}`
}

/** endpointKey is the canonical `host:port` text of an endpoint (map keys, logs). */
export const endpointKey = (ep: { readonly host: string; readonly port: number }): string => {
  const host = normalizeHost(ep.host)
  return host.includes(":") ? `[${host}]:${ep.port}` : `${host}:${ep.port}`
}
