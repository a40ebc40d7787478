// User events: /v1/event/fire and /v1/event/list across gossiping agents, the envelope
// they travel in, and the event-handler filter syntax.
@testable import Agent
import Foundation
import HTTP
import Testing

@Suite("User events", .serialized)
struct UserEventTests {
    func joinedPair() throws -> (TestAgent, TestAgent) {
        let a = try TestAgent { $0.nodeName = "ev-a" }
        let b = try TestAgent { $0.nodeName = "ev-b"; $0.server = false; $0.bootstrap = false }
        #expect(try b.request("PUT", "/v1/agent/join/127.0.0.1:\(a.agent.serfLANPort)").status == 200)
        try pollUntil("both to see 2 members") {
            try [a, b].allSatisfy { try $0.request("GET", "/v1/agent/members").entries.count == 2 }
        }
        return (a, b)
    }

    @Test func aFiredEventReachesEveryAgentsList() throws {
        let (a, b) = try joinedPair()
        defer { a.stop(); b.stop() }
        let fired = try a.request("PUT", "/v1/event/fire/deploy", body: Array("v1.2".utf8))
        #expect(fired.status == 200)
        let body = try #require(fired.json as? [String: Any])
        let id = try #require(body["ID"] as? String)
        #expect(UUID(uuidString: id) != nil)
        #expect(body["Name"] as? String == "deploy")
        #expect(body["Payload"] as? String == "djEuMg==")
        #expect(body["Version"] as? Int == 1)
        try pollUntil("the event on both agents") {
            try [a, b].allSatisfy { agent in
                try agent.request("GET", "/v1/event/list").entries.contains { $0["ID"] as? String == id }
            }
        }
        let listed = try #require(try b.request("GET", "/v1/event/list?name=deploy").entries.first)
        #expect(listed["Payload"] as? String == "djEuMg==")
        #expect(try b.request("GET", "/v1/event/list?name=other").entries.isEmpty)
    }

    @Test func nodeFilterLimitsWhichAgentsRecordTheEvent() throws {
        let (a, b) = try joinedPair()
        defer { a.stop(); b.stop() }
        let fired = try a.request("PUT", "/v1/event/fire/only-b?node=^ev-b$")
        let id = try #require((fired.json as? [String: Any])?["ID"] as? String)
        try pollUntil("ev-b to record it") { try b.request("GET", "/v1/event/list").entries.contains { $0["ID"] as? String == id } }
        // A later unfiltered event proves ev-a has processed gossip past the filtered one.
        let marker = try #require((try a.request("PUT", "/v1/event/fire/marker").json as? [String: Any])?["ID"] as? String)
        try pollUntil("ev-a to record the marker") { try a.request("GET", "/v1/event/list").entries.contains { $0["ID"] as? String == marker } }
        #expect(try !a.request("GET", "/v1/event/list").entries.contains { $0["ID"] as? String == id })
    }

    @Test func serviceAndTagFiltersMatchTheAgentsOwnServices() throws {
        let (a, b) = try joinedPair()
        defer { a.stop(); b.stop() }
        let register = try b.request("PUT", "/v1/agent/service/register",
                                     body: Array(#"{"Name":"web","Tags":["canary","v2"]}"#.utf8))
        #expect(register.status == 200)
        let toWeb = try #require((try a.request("PUT", "/v1/event/fire/to-web?service=^web$&tag=canary").json as? [String: Any])?["ID"] as? String)
        let toDB = try #require((try a.request("PUT", "/v1/event/fire/to-db?service=db").json as? [String: Any])?["ID"] as? String)
        let wrongTag = try #require((try a.request("PUT", "/v1/event/fire/stable?service=web&tag=^stable$").json as? [String: Any])?["ID"] as? String)
        let marker = try #require((try a.request("PUT", "/v1/event/fire/marker").json as? [String: Any])?["ID"] as? String)
        try pollUntil("both to record the marker") {
            try [a, b].allSatisfy { try $0.request("GET", "/v1/event/list").entries.contains { $0["ID"] as? String == marker } }
        }
        let onB = Set(try b.request("GET", "/v1/event/list").entries.compactMap { $0["ID"] as? String })
        let onA = Set(try a.request("GET", "/v1/event/list").entries.compactMap { $0["ID"] as? String })
        #expect(onB.contains(toWeb), "ev-b runs web with tag canary")
        #expect(!onB.contains(toDB) && !onB.contains(wrongTag))
        #expect(!onA.contains(toWeb) && !onA.contains(toDB), "ev-a has no services")
    }

    @Test func filterMatchingFollowsConsul() {
        let event = { (node: String, service: String, tag: String) in
            UserEvent(id: "", name: "e", payload: [], nodeFilter: node, serviceFilter: service, tagFilter: tag, ltime: 0)
        }
        let services: [(name: String, tags: [String])] = [("web", ["a", "b"]), ("db", [])]
        #expect(event("", "", "").matches(nodeName: "n1", services: []))
        #expect(event("^n", "", "").matches(nodeName: "n1", services: []))
        #expect(!event("^x", "web", "").matches(nodeName: "n1", services: services))
        #expect(event("", "db", "").matches(nodeName: "n1", services: services))
        #expect(event("", "we", "^b$").matches(nodeName: "n1", services: services))
        #expect(!event("", "db", "a").matches(nodeName: "n1", services: services), "the tag must be on the matching service")
        #expect(!event("", "(", "").matches(nodeName: "n1", services: services), "a bad pattern matches nothing")
    }

    @Test func blockingListWakesOnANewEvent() throws {
        let (a, b) = try joinedPair()
        defer { a.stop(); b.stop() }
        let before = try b.request("GET", "/v1/event/list")
        let index = try #require(before.consulIndex)
        let parked = BackgroundRequest(port: b.port, path: "/v1/event/list?index=\(index)&wait=20s")
        #expect(!parked.finished(within: 300), "an unchanged list must park")
        _ = try a.request("PUT", "/v1/event/fire/wake", body: [1])
        #expect(parked.finished(within: 10_000))
        #expect(parked.response?.entries.last?["Name"] as? String == "wake")
        #expect(parked.response?.consulIndex != index)
    }

    @Test func badFiresAreRefusedWithReasons() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("GET", "/v1/event/fire/x").status == 405)
        #expect(try agent.request("PUT", "/v1/event/fire/").status == 400)
        #expect(try agent.request("PUT", "/v1/event/fire/x?tag=web").status == 400)
        #expect(try agent.request("PUT", "/v1/event/fire/x?node=(").status == 400)
        #expect(try agent.request("PUT", "/v1/event/fire/x", body: [UInt8](repeating: 1, count: 401)).status == 413)
    }

    @Test func envelopeRoundTripsAndRejectsGarbage() {
        let event = UserEvent(id: "7f2b1b8e-0c3f-4a38-9d55-3c2f7d8ab001", name: "n", payload: [0, 1, 255],
                              nodeFilter: "web-.*", serviceFilter: "", tagFilter: "")
        let decoded = UserEvent(name: "n", envelope: event.envelope(), ltime: 9)
        #expect(decoded?.payload == [0, 1, 255])
        #expect(decoded?.nodeFilter == "web-.*")
        #expect(decoded?.ltime == 9)
        var rng = SystemRandomNumberGenerator()
        for length in 0..<200 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = UserEvent(name: "x", envelope: bytes, ltime: 0)   // must not crash
        }
        var truncated = event.envelope()
        truncated.removeLast(truncated.count - 5)
        #expect(UserEvent(name: "n", envelope: truncated, ltime: 0) == nil)
    }

    @Test(arguments: [
        ("handler.sh", [String](), true),
        ("member-join=handler.sh", ["member-join"], true),
        ("member-join,user:deploy=h.sh", ["member-join", "user:deploy"], true),
        ("query:ping=h.sh", ["query:ping"], true),
        ("member-jion=h.sh", [], false),
        ("user=", [], false),
    ])
    func eventHandlerSpecs(text: String, filters: [String], valid: Bool) {
        let spec = try? EventHandlerSpec.parse(text)
        #expect((spec != nil) == valid)
        if valid { #expect(spec?.filters == filters) }
    }

    @Test func handlerFiltersMatchLikeSerf() throws {
        let spec = try EventHandlerSpec.parse("member-join,user:deploy=h.sh")
        #expect(spec.matches(event: "member-join", name: nil))
        #expect(!spec.matches(event: "member-leave", name: nil))
        #expect(spec.matches(event: "user", name: "deploy"))
        #expect(!spec.matches(event: "user", name: "other"))
        #expect(try EventHandlerSpec.parse("h.sh").matches(event: "query", name: "x"))
    }
}
