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
