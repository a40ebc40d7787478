// UDP datagrams and the cross-thread mailbox.
import Dispatch
import Foundation
import Testing
@testable import EventLoop

@Suite struct UDPAndMailboxTests {
    @Test func udpDatagramsTravelBothWaysWithTheSenderAddress() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let reply = Locked<([UInt8], SocketAddress)?>(nil)
        let done = Expectation()
        let ports = try onLoop(loop) { () -> (Int, Int) in
            let bound = LoopBound<UDPSocket?>(emptyOn: loop)
            let responder = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { bytes, sender in
                bound.value!.send(bytes.reversed(), to: sender)
            }
            bound.value = responder
            let asker = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { bytes, sender in
                reply.mutate { $0 = (bytes, sender) }
                done.fulfill()
            }
            asker.send([1, 2, 3], to: SocketAddress(host: "127.0.0.1", port: responder.localPort))
            return (asker.localPort, responder.localPort)
        }
        try done.wait("the reply datagram")
        let (bytes, sender) = try #require(reply.value)
        #expect(bytes == [3, 2, 1])
        #expect(sender == SocketAddress(host: "127.0.0.1", port: ports.1))
        #expect(ports.0 != 0)
    }

    @Test func udpSendToABadAddressIsCountedNotFatal() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let errors = try onLoop(loop) {
            let socket = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { _, _ in }
            socket.send([1], to: SocketAddress(host: "not-an-address", port: 1))
            socket.send([1], to: SocketAddress(host: "127.0.0.1", port: 70_000))
            socket.close()
            socket.send([1], to: SocketAddress(host: "127.0.0.1", port: 1))  // closed: ignored
            return socket.sendErrorCount
        }
        #expect(errors == 2)
    }

    @Test func manyDatagramsInOneTurnAreAllSentOrCounted() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let received = Locked(0)
        let outcome = try onLoop(loop) { () -> (errors: Int, sent: Int) in
            let sink = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { _, _ in received.mutate { $0 += 1 } }
            let source = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { _, _ in }
            for _ in 0..<2_000 {
                source.send(Array(repeating: 9, count: 1_200), to: SocketAddress(host: "127.0.0.1", port: sink.localPort))
            }
            return (source.sendErrorCount, 2_000)
        }
        // Loopback may drop when the receiver's buffer fills; what matters is no crash and honest counts.
        try waitOnLoop(loop, "some datagrams") { received.value > 0 }
        #expect(outcome.errors <= outcome.sent)
    }

    @Test func mailboxDeliversEveryMessageInOrderFromOtherThreads() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let senders = 6
        let perSender = 5_000
        let delivered = Locked<[(sender: Int, sequence: Int)]>([])
        let offLoop = Locked(0)
        let batches = Locked(0)
        let all = Expectation()
        let mailbox = try onLoop(loop) {
            LoopMailbox<(sender: Int, sequence: Int)>(loop: loop) { messages in
                if !loop.isInLoopThread { offLoop.mutate { $0 += 1 } }
                batches.mutate { $0 += 1 }
                delivered.mutate { $0 += messages }
                for _ in messages { all.fulfill() }
            }
        }
        DispatchQueue.concurrentPerform(iterations: senders) { sender in
            for sequence in 0..<perSender {
                #expect(mailbox.send((sender, sequence)))
            }
        }
        try all.wait(count: senders * perSender, "every message")
        #expect(offLoop.value == 0)
        let messages = delivered.value
        #expect(messages.count == senders * perSender)
        for sender in 0..<senders {
            #expect(messages.filter { $0.sender == sender }.map(\.sequence) == Array(0..<perSender))
        }
        #expect(batches.value <= senders * perSender)
    }

    @Test func mailboxRefusesMessagesWhenFullOrClosed() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let mailbox = try onLoop(loop) { LoopMailbox<Int>(loop: loop, capacity: 2) { _ in } }
        // Hold the loop busy so nothing is delivered while we fill the mailbox.
        let release = DispatchSemaphore(value: 0)
        let busy = Expectation()
        loop.execute { busy.fulfill(); _ = release.wait(timeout: .now() + waitSeconds) }
        try busy.wait("the loop to be busy")
        #expect(mailbox.send(1))
        #expect(mailbox.send(2))
        #expect(!mailbox.send(3))
        release.signal()
        try onLoop(loop) { mailbox.close() }
        #expect(!mailbox.send(4))
    }
}

@Suite struct AddressTests {
    @Test(arguments: [
        ("127.0.0.1", 8500, true),
        ("localhost", 8500, true),
        ("::1", 8500, true),
        ("[::1]", 8500, true),
        ("0.0.0.0", 0, true),
        ("example.com", 80, false),
        ("127.0.0.1", 65_536, false),
        ("127.0.0.1", -1, false),
        ("", 80, false),
    ])
    func numericAddressesParseAndOthersAreRejected(host: String, port: Int, valid: Bool) {
        let parsed = (try? ResolvedAddress(host: host, port: port, operation: "test")) != nil
        #expect(parsed == valid)
    }

    @Test func addressesRoundTripThroughTheirSockaddr() throws {
        for (host, port) in [("127.0.0.1", 8301), ("::1", 8302), ("10.1.2.3", 0)] {
            let parsed = try ResolvedAddress(host: host, port: port, operation: "test")
            #expect(parsed.withSockaddr { ResolvedAddress.decode($0) } == SocketAddress(host: host, port: port))
        }
        #expect(SocketAddress(host: "::1", port: 53).description == "[::1]:53")
        #expect(SocketAddress(host: "127.0.0.1", port: 53).description == "127.0.0.1:53")
    }
}
