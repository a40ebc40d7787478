// Gossip key rotation across real agents: install a new key everywhere, make it primary,
// remove the old one; then only agents with the new key can join.
import Foundation
import HTTP
import Testing

@Suite("Gossip keyring rotation", .serialized)
struct KeyringRotationTests {
    func newKey() throws -> String { try runCLI(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) }

    /// `conclave keyring -list`: key → "n/m".
    func listed(_ agent: AgentProcess) throws -> [String: String] {
        let result = try runCLI(["keyring", "-list"] + agent.httpAddr)
        var out: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") where line.hasPrefix("  ") {
            let cells = line.split(separator: " ")
            if cells.count == 2 { out[String(cells[0])] = String(cells[1]) }
        }
        return out
    }

    @Test func rotatingTheKeyAcrossThreeAgentsKeepsThemTogetherAndLocksOutTheOldKey() throws {
        let oldKey = try newKey(), freshKey = try newKey()
        let first = try AgentProcess(node: "rot1", server: true, extra: ["-bootstrap", "-encrypt", oldKey])
        defer { _ = first.terminate(); try? FileManager.default.removeItem(atPath: first.dataDir) }
        let seed = "127.0.0.1:\(try first.serfLANPort())"
        let second = try AgentProcess(node: "rot2", server: false, extra: ["-encrypt", oldKey, "-retry-join", seed, "-retry-interval", "1s"])
        defer { _ = second.terminate(); try? FileManager.default.removeItem(atPath: second.dataDir) }
        let third = try AgentProcess(node: "rot3", server: false, extra: ["-encrypt", oldKey, "-retry-join", seed, "-retry-interval", "1s"])
        defer { _ = third.terminate(); try? FileManager.default.removeItem(atPath: third.dataDir) }
        try poll("three alive members", seconds: 15) { try first.members().values.filter { $0 == "alive" }.count == 3 }

        #expect(try listed(first) == [oldKey: "[3/3]"])
        let install = try runCLI(["keyring", "-install", freshKey] + second.httpAddr)
        #expect(install.status == 0, "\(install.stderr)")
        #expect(install.stdout.contains("Installing new gossip encryption key"))
        #expect(try listed(third) == [oldKey: "[3/3]", freshKey: "[3/3]"])

        // The primary key cannot be removed; an unknown key cannot be made primary.
        let removePrimary = try runCLI(["keyring", "-remove", oldKey] + first.httpAddr)
        #expect(removePrimary.status == 1)
        #expect(removePrimary.stderr.contains("Removing the primary key is not allowed"))
        let useUnknown = try runCLI(["keyring", "-use", try newKey()] + first.httpAddr)
        #expect(useUnknown.status == 1)
        #expect(useUnknown.stderr.contains("Requested key is not in the keyring"))

        #expect(try runCLI(["keyring", "-use", freshKey] + first.httpAddr).status == 0)
        #expect(try runCLI(["keyring", "-remove", oldKey] + first.httpAddr).status == 0)
        #expect(try listed(first) == [freshKey: "[3/3]"])
        // Each agent saved the new keyring (it wins over -encrypt on restart).
        let saved = try String(contentsOfFile: third.dataDir + "/serf/local.keyring", encoding: .utf8)
        #expect(saved.replacingOccurrences(of: "\\/", with: "/").contains(freshKey))
        #expect(!saved.replacingOccurrences(of: "\\/", with: "/").contains(oldKey))

        // The members stayed together through the rotation.
        try poll("all three still alive", seconds: 10) { try first.members().values.filter { $0 == "alive" }.count == 3 }
        // Only the new key gets in now.
        let late = try AgentProcess(node: "rot4", server: false, extra: ["-encrypt", freshKey])
        defer { _ = late.terminate(); try? FileManager.default.removeItem(atPath: late.dataDir) }
        #expect(try runCLI(["join"] + late.httpAddr + [seed]).status == 0)
        let stale = try AgentProcess(node: "rot5", server: false, extra: ["-encrypt", oldKey])
        defer { _ = stale.terminate(); try? FileManager.default.removeItem(atPath: stale.dataDir) }
        #expect(try runCLI(["join"] + stale.httpAddr + [seed]).status == 1)
    }

    @Test func keyringNeedsEncryptionAndExactlyOneAction() throws {
        let plain = try AgentProcess(node: "plain", server: true, extra: ["-bootstrap"])
        defer { _ = plain.terminate(); try? FileManager.default.removeItem(atPath: plain.dataDir) }
        let list = try runCLI(["keyring", "-list"] + plain.httpAddr)
        #expect(list.status == 1)
        #expect(list.stderr.contains("not enabled"))
        let none = try runCLI(["keyring"] + plain.httpAddr)
        #expect(none.status == 1)
        #expect(none.stderr.contains("Exactly one of"))
    }
}
