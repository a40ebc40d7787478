// Service and check definitions come from HTTP bodies, config files and the data dir: any JSON
// object must decode to a definition or a DefinitionError, never a crash.
import Foundation
import Testing
@testable import Agent

/// SplitMix64 (as TestSupport's), local so this target needs no new dependency.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Definition decoding fuzz")
struct DefinitionFuzzTests {
    static let keys = ["ID", "Name", "Tags", "Address", "Port", "Meta", "EnableTagOverride", "Weights", "Check", "Checks",
                       "CheckID", "TTL", "HTTP", "TCP", "Args", "Interval", "Timeout", "Status", "Header", "Method",
                       "SuccessBeforePassing", "FailuresBeforeCritical", "DeregisterCriticalServiceAfter", "ServiceID",
                       "Passing", "Warning", "enable_tag_override", "script", "Body", "Notes"]

    private func value(_ rng: inout SplitMix, depth: Int) -> Any {
        switch Int.random(in: 0..<(depth > 2 ? 7 : 9), using: &rng) {
        case 0: return NSNull()
        case 1: return Bool.random(using: &rng)
        case 2: return Int.random(in: -3...70_000, using: &rng)
        case 3: return Double.random(in: -1e20...1e20, using: &rng)
        case 4: return ["10s", "", "1m30s", "bogus", "-5s", "http://127.0.0.1:1/", "127.0.0.1:1", "passing", "critical", "x"]
            .randomElement(using: &rng)!
        case 5: return ["a", "b"]
        case 6: return String(repeating: "é", count: Int.random(in: 0...3, using: &rng))
        case 7: return (0..<Int.random(in: 0...3, using: &rng)).map { _ in value(&rng, depth: depth + 1) }
        default: return object(&rng, depth: depth + 1)
        }
    }

    private func object(_ rng: inout SplitMix, depth: Int) -> [String: Any] {
        var out: [String: Any] = [:]
        for _ in 0..<Int.random(in: 0...6, using: &rng) {
            out[Self.keys.randomElement(using: &rng)!] = value(&rng, depth: depth)
        }
        return out
    }

    @Test func randomObjectsDecodeOrFailCleanly() {
        let seed: UInt64 = 6
        var rng = SplitMix(state: seed)
        var decoded = 0
        for _ in 0..<5000 {
            let candidate = object(&rng, depth: 0)
            if (try? LocalDefinitions.service(from: candidate)) != nil { decoded += 1 }
            _ = try? LocalDefinitions.check(from: candidate, requireName: Bool.random(using: &rng))
        }
        // Some random objects are valid services: the generator reaches past the first check.
        #expect(decoded > 0, "seed \(seed)")
    }
}
