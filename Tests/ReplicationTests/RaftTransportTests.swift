// The Raft TCP transport: messages both ways, protocol violations close the connection
// without harm, and a peer restarted on the same port is reached again.
import EventLoop
import Foundation
import Logging
import RaftCore
@testable import Replication
import Testing

@Suite("Raft transport")
struct RaftTransportTests {
    let logger = Logger(label: "test.transport")

    final class Inbox: @unchecked Sendable {
        let lock = NSLock()
        private var items: [Message] = []
        func add(_ m: Message) { lock.lock(); items.append(m); lock.unlock() }
        var messages: [Message] { lock.lock(); defer { lock.unlock() }; return items }
    }

    func heartbeat(from: NodeID, to: NodeID, term: UInt64) -> Message {
        Message(from: from, to: to, term: term, body: .heartbeat(Heartbeat(commit: term, readRound: 0)))
    }

    func makeTransport(_ loop: Loop, port: Int = 0, inbox: Inbox) throws -> Unsafe<RaftTransport> {
        try onLoop(loop) {
            let t = try RaftTransport(loop: loop, host: "127.0.0.1", port: port, logger: logger)
            t.onMessage = { inbox.add($0) }
            return Unsafe(t)
        }
    }

    @Test func twoTransportsExchangeMessagesBothWays() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let inboxA = Inbox(), inboxB = Inbox()
        let a = try makeTransport(loop, inbox: inboxA)
        let b = try makeTransport(loop, inbox: inboxB)
        try onLoop(loop) {
            a.value.setAddress("127.0.0.1:\(b.value.port)", for: 2)
            b.value.setAddress("127.0.0.1:\(a.value.port)", for: 1)
            for term in 1 ... 50 as ClosedRange<UInt64> {
                a.value.send(heartbeat(from: 1, to: 2, term: term))
                b.value.send(heartbeat(from: 2, to: 1, term: term))
            }
        }
        #expect(eventually { inboxA.messages.count == 50 && inboxB.messages.count == 50 })
        #expect(inboxB.messages.map(\.term) == Array(1 ... 50))
        #expect(inboxA.messages.allSatisfy { $0.from == 2 && $0.to == 1 })
        // A large AppendEntries survives being split across reads.
        let entries = (1 ... 20).map { Entry(index: UInt64($0), term: 3, data: [UInt8](repeating: UInt8($0), count: 50_000)) }
        let append = Message(from: 1, to: 2, term: 3, body: .appendEntries(
            AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: entries, leaderCommit: 0)))
        try onLoop(loop) { a.value.send(append) }
        #expect(eventually { inboxB.messages.count == 51 })
        #expect(inboxB.messages.last == append)
        try onLoop(loop) { a.value.close(); b.value.close() }
    }

    @Test(arguments: [
        ("oversized length", [0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3] as [UInt8]),
        ("undecodable message", [0, 0, 0, 3, 0x09, 0x01, 0x02] as [UInt8]),
        ("empty frame", [0, 0, 0, 0] as [UInt8]),
    ])
    func badFrameClosesTheConnectionWithoutCrashing(name: String, bytes: [UInt8]) throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let inbox = Inbox()
        let server = try makeTransport(loop, inbox: inbox)
        let port = try onLoop(loop) { server.value.port }
        let closedByServer = Unsafe(false)
        let lock = NSLock()
        try onLoop(loop) {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case let .success(connection) = result else { return }
                connection.onRead = { _ in }
                connection.onClose = { _ in lock.lock(); closedByServer.value = true; lock.unlock() }
                connection.startReading()
                connection.write(bytes)
            }
        }
        #expect(eventually(10) { lock.lock(); defer { lock.unlock() }; return closedByServer.value }, "\(name)")
        #expect(try onLoop(loop) { server.value.rejectedConnections } == 1)
        // The transport still works afterwards.
        let client = try makeTransport(loop, inbox: Inbox())
        try onLoop(loop) {
            client.value.setAddress("127.0.0.1:\(port)", for: 1)
            client.value.send(heartbeat(from: 2, to: 1, term: 7))
        }
        #expect(eventually { inbox.messages.count == 1 })
        try onLoop(loop) { server.value.close(); client.value.close() }
    }

    @Test func aStreamKindFirstFrameHandsTheConnectionOver() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let server = try makeTransport(loop, inbox: Inbox())
        let port = try onLoop(loop) { server.value.port }
        let lock = NSLock()
        let received = Unsafe<[[UInt8]]>([])
        try onLoop(loop) {
            server.value.streamHandlers[StreamKind.clientRPC] = { connection, first, decoder in
                var decoder = decoder
                lock.lock(); received.value.append(first); lock.unlock()
                func drain() {
                    while let payload = try? decoder.next() {
                        lock.lock(); received.value.append(payload); lock.unlock()
                    }
                }
                drain()  // frames that arrived in the same read as the first one
                connection.onRead = { bytes in decoder.feed(bytes); drain() }
                connection.write(Framing.frame([0xAA]))
            }
        }
        let answered = Unsafe(false)
        try onLoop(loop) {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case let .success(connection) = result else { return }
                connection.onRead = { bytes in if bytes.contains(0xAA) { lock.lock(); answered.value = true; lock.unlock() } }
                connection.startReading()
                // The first two frames in one write, the third later.
                connection.write(Framing.frame([StreamKind.clientRPC, 1]) + Framing.frame([7, 7]))
                connection.write(Framing.frame([8]))
            }
        }
        #expect(eventually { lock.lock(); defer { lock.unlock() }; return received.value.count == 3 && answered.value })
        #expect(received.value == [[StreamKind.clientRPC, 1], [7, 7], [8]])
        // A stream kind nobody registered is refused.
        try onLoop(loop) {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case let .success(connection) = result else { return }
                connection.onRead = { _ in }
                connection.startReading()
                connection.write(Framing.frame([0xEE]))
            }
        }
        #expect(eventually { (try? onLoop(loop) { server.value.rejectedConnections }) == 1 })
        try onLoop(loop) { server.value.close() }
    }

    @Test func peerRestartedOnTheSamePortIsReconnected() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let inboxB = Inbox()
        let a = try makeTransport(loop, inbox: Inbox())
        var b = try makeTransport(loop, inbox: inboxB)
        let port = try onLoop(loop) { b.value.port }
        try onLoop(loop) {
            a.value.setAddress("127.0.0.1:\(port)", for: 2)
            a.value.send(heartbeat(from: 1, to: 2, term: 1))
        }
        #expect(eventually { inboxB.messages.count == 1 })
        try onLoop(loop) { b.value.close() }
        // While B is down, sends are dropped (and counted), never queued without bound.
        #expect(try eventually {
            try onLoop(loop) { a.value.send(heartbeat(from: 1, to: 2, term: 2)) }
            return try onLoop(loop) { a.value.droppedMessages } > 0
        })
        let inboxB2 = Inbox()
        b = try makeTransport(loop, port: port, inbox: inboxB2)
        // Raft keeps sending (heartbeats); the transport reconnects after its back-off.
        #expect(try eventually {
            try onLoop(loop) { a.value.send(heartbeat(from: 1, to: 2, term: 3)) }
            return !inboxB2.messages.isEmpty
        })
        #expect(inboxB2.messages.allSatisfy { $0.term == 3 })
        try onLoop(loop) { a.value.close(); b.value.close() }
    }

    @Test func aPeerThatNeverAnswersGetsItsConnectionRemade() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        // A "peer" that accepts and then stays silent, like one behind a half-open connection.
        let accepted = Unsafe<[TCPConnection]>([])
        let silent = try onLoop(loop) {
            Unsafe(try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { connection in
                accepted.value.append(connection)
            })
        }
        var config = RaftTransportConfig()
        config.silentPeerTimeoutMilliseconds = 50
        let a = try onLoop(loop) { Unsafe(try RaftTransport(loop: loop, host: "127.0.0.1", port: 0, config: config, logger: logger)) }
        try onLoop(loop) { a.value.setAddress("127.0.0.1:\(silent.value.localPort)", for: 2) }
        #expect(try eventually(10) {
            try onLoop(loop) { a.value.send(heartbeat(from: 1, to: 2, term: 1)) }
            return try onLoop(loop) { a.value.silentPeerResets >= 2 && accepted.value.count >= 3 }
        })
        try onLoop(loop) {
            a.value.close()
            silent.value.close()
            for connection in accepted.value { connection.closeNow() }
        }
    }

    @Test func inboundConnectionsBeyondTheLimitAreClosed() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        var config = RaftTransportConfig()
        config.maxInboundConnections = 1
        let inbox = Inbox()
        let server = try onLoop(loop) {
            let t = try RaftTransport(loop: loop, host: "127.0.0.1", port: 0, config: config, logger: logger)
            t.onMessage = { inbox.add($0) }
            return Unsafe(t)
        }
        let port = try onLoop(loop) { server.value.port }
        let first = try makeTransport(loop, inbox: Inbox())
        try onLoop(loop) {
            first.value.setAddress("127.0.0.1:\(port)", for: 1)
            first.value.send(heartbeat(from: 2, to: 1, term: 1))
        }
        #expect(eventually { inbox.messages.count == 1 })
        let second = try makeTransport(loop, inbox: Inbox())
        try onLoop(loop) {
            second.value.setAddress("127.0.0.1:\(port)", for: 1)
            second.value.send(heartbeat(from: 3, to: 1, term: 1))
        }
        #expect(try eventually { try onLoop(loop) { server.value.rejectedConnections } == 1 })
        #expect(inbox.messages.allSatisfy { $0.from == 2 })
        try onLoop(loop) { server.value.close(); first.value.close(); second.value.close() }
    }

    @Test func frameDecoderIsTotalOnSplitInput() throws {
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        let frames = [[UInt8](repeating: 1, count: 10), [2], [UInt8](repeating: 3, count: 1000)]
        let stream = frames.flatMap(Framing.frame)
        var out: [[UInt8]] = []
        for byte in stream {
            decoder.feed([byte])
            while let payload = try decoder.next() { out.append(payload) }
        }
        #expect(out == frames)
    }

    @Test func invalidConfigIsRejectedWithTheFieldName() {
        var config = RaftTransportConfig()
        config.reconnectMaxDelayMilliseconds = 1
        #expect(throws: ReplicationConfigError.self) { try config.validate() }
    }
}
