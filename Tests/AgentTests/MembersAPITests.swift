// /v1/agent/members, join and force-leave on in-process agents gossiping over 127.0.0.1,
// and what a client agent answers for server-backed endpoints.
import Agent
import Foundation
import HTTP
import Testing

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func pollUntil(_ what: String, seconds: Double = 15, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return }
        usleep(20_000)
    }
    Issue.record("timed out waiting for \(what)")
    throw CancellationError()
}

@Suite("Agent members API", .serialized)
struct MembersAPITests {
    @Test func aClientJoinsAServerAndBothListEachOtherAliveWithConsulTags() throws {
        let server = try TestAgent { $0.nodeName = "srv1" }
        defer { server.stop() }
        let client = try TestAgent { $0.nodeName = "cli1"; $0.server = false; $0.bootstrap = false }
        defer { client.stop() }

        let join = try client.request("PUT", "/v1/agent/join/127.0.0.1:\(server.agent.serfLANPort)")
        #expect(join.status == 200)
        try pollUntil("both agents to list 2 alive members") {
            try [server, client].allSatisfy { agent in
                let members = try agent.request("GET", "/v1/agent/members").entries
                return members.count == 2 && members.allSatisfy { ($0["Status"] as? Int) == 1 }
            }
        }
        let members = try server.request("GET", "/v1/agent/members").entries
        let cli = try #require(members.first { $0["Name"] as? String == "cli1" })
        #expect(cli["Addr"] as? String == "127.0.0.1")
        #expect(cli["Port"] as? Int == client.agent.serfLANPort)
        let tags = try #require(cli["Tags"] as? [String: String])
        #expect(tags["role"] == "node")
        #expect(tags["dc"] == "dc1")
        #expect(members.first { $0["Name"] as? String == "srv1" }?["Tags"].flatMap { $0 as? [String: String] }?["role"] == "consul")
        #expect(cli["ProtocolCur"] as? Int == 2 && cli["DelegateCur"] as? Int == 4)

        // The client learns the server from the LAN pool (what Raft will bootstrap from).
        try pollUntil("the client to know the server") { client.agent.liveServers.map(\.name) == ["srv1"] }
        #expect(client.agent.liveServers.first?.bootstrap == true)

        // Servers also run the WAN pool, named node.dc.
        let wan = try server.request("GET", "/v1/agent/members?wan").entries
        #expect(wan.map { $0["Name"] as? String } == ["srv1.dc1"])
        #expect(try client.request("GET", "/v1/agent/members?wan").entries.isEmpty)
    }

    @Test func aClientAgentAnswersServerBackedEndpointsWithNoKnownServers() throws {
        let client = try TestAgent { $0.nodeName = "lonely-client"; $0.server = false; $0.bootstrap = false }
        defer { client.stop() }
        let kv = try client.request("GET", "/v1/kv/anything")
        #expect(kv.status == 500)
        #expect(kv.text == "No known Consul servers")
        #expect(try client.request("PUT", "/v1/kv/x", body: Array("v".utf8)).status == 500)
        #expect(try client.request("GET", "/v1/status/leader").status == 500)
        #expect(try client.request("GET", "/v1/agent/members").entries.count == 1)
    }

    @Test func joinToANonAgentAddressFailsWith500AndForceLeaveOfAnUnknownNodeFails() throws {
        let server = try TestAgent { $0.nodeName = "srv-alone" }
        defer { server.stop() }
        let join = try server.request("PUT", "/v1/agent/join/127.0.0.1:1")
        #expect(join.status == 500)
        let forced = try server.request("PUT", "/v1/agent/force-leave/nobody")
        #expect(forced.status == 500)
        #expect(forced.text.contains("No node found"))
        #expect(try server.request("GET", "/v1/agent/join/127.0.0.1:1").status == 405)
    }

    @Test func anAgentThatLeavesIsShownLeftByTheOthers() throws {
        let server = try TestAgent { $0.nodeName = "stays" }
        defer { server.stop() }
        let leaver = try TestAgent { $0.nodeName = "goes"; $0.server = false; $0.bootstrap = false }
        defer { leaver.stop() }
        #expect(try leaver.request("PUT", "/v1/agent/join/127.0.0.1:\(server.agent.serfLANPort)").status == 200)
        try pollUntil("the server to see the client") {
            try server.request("GET", "/v1/agent/members").entries.count == 2
        }
        #expect(try leaver.request("PUT", "/v1/agent/leave").status == 200)
        try pollUntil("the server to show the client left") {
            try server.request("GET", "/v1/agent/members").entries.first { $0["Name"] as? String == "goes" }?["Status"] as? Int == 3
        }
    }
}
