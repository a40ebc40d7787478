// Standard base64 (RFC 4648 §4, with padding), as Go's encoding/base64.StdEncoding, which
// Consul uses for KV values in JSON.

public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let invalid: UInt8 = 0xFF
    private static let decodeTable: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        encode(bytes, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the encoding of `bytes` (ASCII) to `out`.
    public static func encode(_ bytes: [UInt8], into out: inout [UInt8]) {
        let n = bytes.count
        out.reserveCapacity(out.count + (n + 2) / 3 * 4)
        bytes.withUnsafeBufferPointer { b in
            alphabet.withUnsafeBufferPointer { a in
                var i = 0
                while i + 3 <= n {
                    let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
                    out.append(a[Int(v >> 18)])
                    out.append(a[Int(v >> 12 & 63)])
                    out.append(a[Int(v >> 6 & 63)])
                    out.append(a[Int(v & 63)])
                    i += 3
                }
                let rest = n - i
                if rest == 1 {
                    let v = UInt32(b[i]) << 16
                    out.append(a[Int(v >> 18)])
                    out.append(a[Int(v >> 12 & 63)])
                    out.append(contentsOf: [UInt8(ascii: "="), UInt8(ascii: "=")])
                } else if rest == 2 {
                    let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8
                    out.append(a[Int(v >> 18)])
                    out.append(a[Int(v >> 12 & 63)])
                    out.append(a[Int(v >> 6 & 63)])
                    out.append(UInt8(ascii: "="))
                }
            }
        }
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var s = s
        return s.withUTF8 { decode(bytes: $0) }
    }

    public static func decode(_ bytes: [UInt8]) -> [UInt8]? {
        bytes.withUnsafeBufferPointer { decode(bytes: $0) }
    }

    /// Like Go's StdEncoding.Decode: padding required, CR and LF ignored, anything else outside
    /// the alphabet rejected. Unused low bits of the last symbol are not checked (Go's
    /// non-strict mode).
    static func decode(bytes input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(input.count / 4 * 3)
        var quad: UInt32 = 0
        var have = 0
        var padding = 0
        for c in input {
            if c == UInt8(ascii: "\r") || c == UInt8(ascii: "\n") { continue }
            if c == UInt8(ascii: "=") {
                // Padding may only complete a quad that has 2 or 3 symbols.
                if have + padding < 2 { return nil }
                padding += 1
                if have + padding > 4 { return nil }
                continue
            }
            if padding > 0 { return nil }  // data after padding
            let v = decodeTable[Int(c)]
            if v == invalid { return nil }
            quad = quad << 6 | UInt32(v)
            have += 1
            if have == 4 {
                out.append(UInt8(quad >> 16 & 0xFF))
                out.append(UInt8(quad >> 8 & 0xFF))
                out.append(UInt8(quad & 0xFF))
                quad = 0
                have = 0
            }
        }
        if padding > 0 {
            guard have + padding == 4 else { return nil }
            if have == 2 {
                out.append(UInt8(quad >> 4 & 0xFF))
            } else {
                out.append(UInt8(quad >> 10 & 0xFF))
                out.append(UInt8(quad >> 2 & 0xFF))
            }
            return out
        }
        return have == 0 ? out : nil
    }
}
