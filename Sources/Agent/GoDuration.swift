// Go's time.ParseDuration grammar, which Consul uses for `?wait=` and config durations:
// a sequence of decimal numbers with units ns, us (µs), ms, s, m, h, e.g. "1m30s", "1.5s".
public enum GoDuration {
    /// Parses to nanoseconds; nil for anything Go would reject (including a bare "5").
    public static func nanoseconds(_ text: String) -> UInt64? {
        var scalars = Array(text.unicodeScalars)
        if scalars == ["0"] { return 0 }
        if let sign = scalars.first, sign == "+" { scalars.removeFirst() }
        guard !scalars.isEmpty else { return nil }
        var total: Double = 0
        var i = 0
        while i < scalars.count {
            let numberStart = i
            var sawDigit = false
            while i < scalars.count, ("0"..."9").contains(scalars[i]) || scalars[i] == "." {
                if scalars[i] != "." { sawDigit = true }
                i += 1
            }
            guard sawDigit, let value = Double(String(String.UnicodeScalarView(scalars[numberStart..<i]))) else { return nil }
            let unitStart = i
            while i < scalars.count, !("0"..."9").contains(scalars[i]), scalars[i] != "." { i += 1 }
            let unit = String(String.UnicodeScalarView(scalars[unitStart..<i]))
            let scale: Double
            switch unit {
            case "ns": scale = 1
            case "us", "µs", "μs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            default: return nil
            }
            total += value * scale
            guard total < 9.2e18 else { return nil }
        }
        return UInt64(total)
    }
}
