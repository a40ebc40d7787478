// Event handler scripts on real agents: member events and user events reach the script with
// Serf's environment and stdin; `conclave event` fires them.
import Foundation
import HTTP
import Testing

@Suite("Agent process: event handlers", .serialized)
struct EventHandlerTests {
    @Test func handlersSeeMemberAndUserEvents() throws {
        let root = temporaryDataDir("handlers")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let log = root + "/events.log"
        let script = root + "/handler.sh"
        try """
        #!/bin/sh
        { echo "event=$SERF_EVENT self=$SERF_SELF_NAME role=$SERF_SELF_ROLE user=$SERF_USER_EVENT"; cat; echo; } >> \(log)
        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)

        let first = try AgentProcess(dataDir: root + "/a", arguments: [
            "agent", "-server", "-bootstrap", "-server-port", "0", "-node", "hand-a", "-data-dir", root + "/a", "-bind", "127.0.0.1",
            "-client", "127.0.0.1", "-http-port", "0", "-dns-port", "-1", "-serf-lan-port", "0", "-serf-wan-port", "-1",
            "-event-handler", "member-join,user:deploy=\(script)"])
        defer { _ = first.terminate() }
        var client = first.client()
        let self0 = try client.request(method: "GET", path: "/v1/agent/self")
        let config = try JSONSerialization.jsonObject(with: Data(self0.body)) as? [String: Any]
        let lanPort = (config?["DebugConfig"] as? [String: Any])?["SerfPortLAN"] as? Int ?? 0
        #expect(lanPort > 0)

        let second = try AgentProcess(dataDir: root + "/b", arguments: [
            "agent", "-node", "hand-b", "-data-dir", root + "/b", "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", "0", "-dns-port", "-1", "-serf-lan-port", "0", "-retry-join", "127.0.0.1:\(lanPort)",
            "-retry-interval", "1s"])
        defer { _ = second.terminate() }

        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !logText().contains("hand-b\t127.0.0.1\tnode\t") { usleep(50_000) }
        #expect(logText().contains("event=member-join self=hand-a role=consul"))
        #expect(logText().contains("hand-b\t127.0.0.1\tnode\t"))

        let fire = try runCLI(["event", "-http-addr", "127.0.0.1:\(second.httpPort)", "-name", "deploy", "payload-42"])
        #expect(fire.status == 0)
        #expect(fire.stdout.hasPrefix("Event ID: "))
        let ignored = try runCLI(["event", "-http-addr", "127.0.0.1:\(second.httpPort)", "-name", "other", "nope"])
        #expect(ignored.status == 0)
        while Date() < deadline.addingTimeInterval(10), !logText().contains("payload-42") { usleep(50_000) }
        #expect(logText().contains("event=user self=hand-a role=consul user=deploy\npayload-42"))
        #expect(!logText().contains("nope"), "the handler is filtered to user:deploy")

        let missingName = try runCLI(["event", "-http-addr", "127.0.0.1:\(second.httpPort)"])
        #expect(missingName.status == 1)
    }
}
