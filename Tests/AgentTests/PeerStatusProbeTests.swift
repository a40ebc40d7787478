// The pre-bootstrap peer check's one-shot query of another server's /v1/status/peers over the
// client-RPC stream of its server port, against real in-process agents.
@testable import Agent
import EventLoop
import Foundation
import Testing

@Suite("Pre-bootstrap peer status probe", .serialized)
struct PeerStatusProbeTests {
    final class Box: @unchecked Sendable {
        let lock = NSLock()
        var outcome: PeerStatusProbe.Outcome?
    }

    func probe(_ address: String, timeoutMilliseconds: UInt64 = 5_000) throws -> PeerStatusProbe.Outcome? {
        let loop = try Loop(name: "probe-test")
        loop.start()
        defer { loop.shutdown() }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        loop.execute {
            PeerStatusProbe.query(loop: loop, address: address, timeoutMilliseconds: timeoutMilliseconds) { outcome in
                box.lock.withLock { box.outcome = outcome }
                done.signal()
            }
        }
        _ = done.wait(timeout: .now() + 30)
        return box.lock.withLock { box.outcome }
    }

    func serverAddress(_ agent: TestAgent) throws -> String {
        let member = try #require(try agent.request("GET", "/v1/agent/self").json as? [String: Any])["Member"] as? [String: Any]
        return "127.0.0.1:\(try #require((member?["Tags"] as? [String: String])?["port"]))"
    }

    @Test func aBootstrappedServerReportsItsPeers() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let address = try serverAddress(agent)
        #expect(try probe(address) == .peers([address]))
    }

    @Test func aServerWaitingForBootstrapExpectReportsNoPeers() throws {
        let agent = try TestAgent { $0.bootstrap = false; $0.bootstrapExpect = 3 }
        defer { agent.stop() }
        #expect(try probe(try serverAddress(agent)) == .peers([]))
    }

    @Test func aClosedPortIsAFailureNotAnEmptyAnswer() throws {
        // A port that was just free: nothing listens there now.
        let loop = try Loop(name: "free-port")
        loop.start()
        let port = try onLoopValue(loop) {
            let listener = try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { $0.closeNow() }
            defer { listener.close() }
            return listener.localPort
        }
        loop.shutdown()
        let outcome = try probe("127.0.0.1:\(port)")
        guard case .failed? = outcome else {
            Issue.record("expected a failure, got \(String(describing: outcome))")
            return
        }
    }

    @Test func anUnreachableExpectedServerHoldsTheBootstrapUntilItAnswers() throws {
        // Server A expects 2: itself and B, whose server port nobody listens on yet.
        let freeLoop = try Loop(name: "free-port")
        freeLoop.start()
        let portB = try onLoopValue(freeLoop) {
            let listener = try TCPListener.listen(on: freeLoop, host: "127.0.0.1", port: 0) { $0.closeNow() }
            defer { listener.close() }
            return listener.localPort
        }
        freeLoop.shutdown()
        let loop = try Loop(name: "server-raft-a")
        loop.start()
        defer { loop.shutdown() }
        let dir = NSTemporaryDirectory() + "/conclave-bootstrap-check-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = AgentConfig()
        config.server = true
        config.bootstrapExpect = 2
        config.bindAddr = "127.0.0.1"
        config.ports.server = 0
        let settings = config
        let idA = "00000000-0000-000a-0000-000000000000"
        let raft = try onLoopRaft(loop) {
            let raft = try ServerRaft(loop: loop, config: settings, nodeID: idA, dataDir: dir, metricsFactory: MetricsRegistry())
            raft.serversChanged([
                KnownServer(name: "a", id: idA, datacenter: "dc1", gossipAddress: "127.0.0.1:1",
                            serverPort: raft.transport.port, bootstrapExpect: 2, bootstrap: false),
                KnownServer(name: "b", id: "00000000-0000-000b-0000-000000000000", datacenter: "dc1",
                            gossipAddress: "127.0.0.1:1", serverPort: portB, bootstrapExpect: 2, bootstrap: false),
            ])
            return raft
        }
        defer { _ = try? onLoopBool(loop) { raft.value.close(); return true } }
        // Several check intervals: no bootstrap on partial information.
        Thread.sleep(forTimeInterval: 2.5)
        #expect(try onLoopBool(loop) { raft.value.replicator == nil })
        // B comes up on that port, waiting for its own bootstrap (it answers no peers): the
        // next retry of the check bootstraps A.
        let agentB = try TestAgent { $0.bootstrap = false; $0.bootstrapExpect = 2; $0.ports.server = portB }
        defer { agentB.stop() }
        let deadline = Date().addingTimeInterval(30)
        var bootstrapped = false
        while Date() < deadline, !bootstrapped {
            bootstrapped = try onLoopBool(loop) { raft.value.replicator != nil }
            if !bootstrapped { usleep(50_000) }
        }
        #expect(bootstrapped)
    }

    @Test func aBadAddressIsAFailure() throws {
        guard case .failed? = try probe("no-port-here") else {
            Issue.record("expected a failure")
            return
        }
    }
}

private final class PortSlot: @unchecked Sendable { var result: Result<Int, any Error>? }

private func onLoopValue(_ loop: Loop, _ body: @escaping @Sendable () throws -> Int) throws -> Int {
    let slot = PortSlot()
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        slot.result = Result { try body() }
        done.signal()
    }
    _ = done.wait(timeout: .now() + 20)
    return try slot.result!.get()
}

private final class RaftBox: @unchecked Sendable {
    let value: ServerRaft
    init(_ value: ServerRaft) { self.value = value }
}

private final class RaftSlot: @unchecked Sendable { var result: Result<RaftBox, any Error>? }

private func onLoopRaft(_ loop: Loop, _ body: @escaping @Sendable () throws -> ServerRaft) throws -> RaftBox {
    let slot = RaftSlot()
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        slot.result = Result { RaftBox(try body()) }
        done.signal()
    }
    _ = done.wait(timeout: .now() + 20)
    return try slot.result!.get()
}

private final class BoolSlot: @unchecked Sendable { var value = false }

private func onLoopBool(_ loop: Loop, _ body: @escaping @Sendable () -> Bool) throws -> Bool {
    let slot = BoolSlot()
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        slot.value = body()
        done.signal()
    }
    _ = done.wait(timeout: .now() + 20)
    return slot.value
}
