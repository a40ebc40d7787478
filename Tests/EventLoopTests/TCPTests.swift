// TCP on the loop: echo, many connections, large writes, batching, backpressure, close semantics.
import Dispatch
import Foundation
import Testing
@testable import EventLoop

@Suite struct TCPTests {
    @Test func echoRoundTripReturnsTheSameBytes() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let port = try startEchoServer(on: loop)
        let received = Locked<[UInt8]>([])
        let done = Expectation()
        let remote = Locked("")
        loop.execute {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case .success(let client) = result else { Issue.record("connect failed: \(result)"); return }
                remote.mutate { $0 = client.remoteAddress }
                client.onRead = { bytes in
                    let total = received.mutate { $0 += bytes; return $0.count }
                    if total == 5 { done.fulfill() }
                }
                client.startReading()
                client.write(Array("hello".utf8))
            }
        }
        try done.wait("echo")
        #expect(received.value == Array("hello".utf8))
        #expect(remote.value == "127.0.0.1:\(port)")
    }

    @Test func localhostResolvesToTheIPv4Loopback() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let port = try startEchoServer(on: loop)
        let connected = Expectation()
        loop.execute {
            TCPConnection.connect(on: loop, host: "localhost", port: port) { result in
                if case .success(let client) = result { client.close(); connected.fulfill() }
            }
        }
        try connected.wait("connect to localhost")
    }

    @Test func manyConcurrentConnectionsEachGetTheirOwnEcho() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let port = try startEchoServer(on: loop)
        let clients = 200
        let echoes = Locked<[Int: [UInt8]]>([:])
        let done = Expectation()
        loop.execute {
            for index in 0..<clients {
                let message = Array("client-\(index);".utf8)
                TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                    guard case .success(let client) = result else { Issue.record("connect \(index): \(result)"); return }
                    client.onRead = { [unowned client] bytes in
                        let count = echoes.mutate { $0[index, default: []] += bytes; return $0[index]!.count }
                        if count == message.count { client.close() }
                    }
                    client.onClose = { _ in done.fulfill() }
                    client.startReading()
                    client.write(message)
                }
            }
        }
        try done.wait(count: clients, "every client")
        let result = echoes.value
        #expect(result.count == clients)
        for index in 0..<clients {
            #expect(result[index] == Array("client-\(index);".utf8))
        }
    }

    @Test func largeWriteArrivesIntact() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let payload = pattern(count: 8 << 20)
        let received = Locked<[UInt8]>([])
        let serverClosed = Expectation()
        let pair = try ConnectedPair.make(on: loop) { server in
            server.onRead = { bytes in received.mutate { $0 += bytes } }
            server.onClose = { error in
                #expect(error == nil)
                serverClosed.fulfill()
            }
            server.startReading()
        }
        loop.execute {
            let client = pair.client.value!
            client.write(payload)
            client.close()
        }
        try serverClosed.wait("the server to see EOF")
        #expect(received.value.count == payload.count)
        #expect(received.value == payload)
    }

    @Test func writesQueuedInOneLoopTurnGoOutAsOneWrite() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let received = Locked<[UInt8]>([])
        let all = Expectation()
        let pair = try ConnectedPair.make(on: loop) { server in
            server.onRead = { bytes in
                if received.mutate({ $0 += bytes; return $0.count }) == 30 { all.fulfill() }
            }
            server.startReading()
        }
        try onLoop(loop) {
            for index in 0..<10 {
                pair.client.value!.write([UInt8(index), UInt8(index), UInt8(index)])
            }
        }
        try all.wait("all 30 bytes")
        #expect(received.value == (0..<10).flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
        #expect(try onLoop(loop) { pair.client.value!.writeRequestCount } == 1)
    }

    @Test func peerThatDoesNotReadPausesOurReadsUntilItDrains() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let total = 32 << 20  // far beyond what loopback socket buffers absorb
        let chunk = [UInt8](repeating: 0x5A, count: 64 << 10)
        let pendingWhenPingArrived = Locked<Int?>(nil)
        let pingArrived = Expectation()
        let pair = try ConnectedPair.make(on: loop) { server in
            server.onRead = { [unowned server] _ in
                pendingWhenPingArrived.mutate { $0 = server.pendingWriteBytes }
                pingArrived.fulfill()
            }
            server.startReading()
            for _ in 0..<(total / chunk.count) {
                server.write(chunk)
            }
        }
        // The client has not started reading; it sends a request the server should not read yet.
        let state = try onLoop(loop) { () -> (pending: Int, paused: Bool, high: Int) in
            pair.client.value!.write(Array("ping".utf8))
            let server = pair.server.value!
            return (server.pendingWriteBytes, server.isReadingPausedForBackpressure, server.writeHighWaterBytes)
        }
        #expect(state.pending > state.high)
        #expect(state.paused)

        let drained = Expectation()
        let clientReceived = Locked(0)
        loop.execute {
            let client = pair.client.value!
            client.onRead = { bytes in
                if clientReceived.mutate({ $0 += bytes.count; return $0 }) == total { drained.fulfill() }
            }
            client.startReading()
        }
        try drained.wait("the client to drain \(total) bytes")
        try pingArrived.wait("the server to read the ping after resuming")
        let lowWater = try onLoop(loop) { pair.server.value!.writeLowWaterBytes }
        #expect(try #require(pendingWhenPingArrived.value) <= lowWater)
        #expect(try onLoop(loop) { pair.server.value!.isReadingPausedForBackpressure } == false)
    }

    @Test func readingStaysStoppedAfterBackpressureWhenTheOwnerStoppedIt() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let pair = try ConnectedPair.make(on: loop)
        try onLoop(loop) {
            let server = pair.server.value!
            server.writeHighWaterBytes = 10
            server.writeLowWaterBytes = 5
            server.onRead = { _ in Issue.record("the owner stopped reading; nothing may be delivered") }
            server.startReading()
            server.stopReading()
            server.write(Array(repeating: 1, count: 100))  // above high water: paused as well
        }
        try waitOnLoop(loop, "the write to complete") { pair.server.value!.pendingWriteBytes == 0 }
        // Resuming from backpressure must not restart reading the owner stopped. Send a byte and make
        // a round trip on another connection's echo: by then a wrongly resumed read would have fired.
        try onLoop(loop) { pair.client.value!.write([42]) }
        let port = try startEchoServer(on: loop)
        let echoed = Expectation()
        loop.execute {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case .success(let probe) = result else { return }
                probe.onRead = { _ in echoed.fulfill() }
                probe.startReading()
                probe.write([1])
            }
        }
        try echoed.wait("probe echo")
        #expect(try onLoop(loop) { pair.server.value!.isReadingPausedForBackpressure } == false)
    }

    @Test func closeFlushesQueuedWritesBeforeClosing() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let payload = pattern(count: 3 << 20, seed: 7)
        let received = Locked<[UInt8]>([])
        let clientClosed = Expectation()
        let serverClose = Locked<[LoopError?]>([])
        let pair = try ConnectedPair.make(on: loop) { server in
            server.onClose = { error in serverClose.mutate { $0.append(error) } }
            // Queued in this turn and closed in the same turn: close must send them first.
            for offset in stride(from: 0, to: payload.count, by: 100_000) {
                server.write(Array(payload[offset..<min(offset + 100_000, payload.count)]))
            }
            server.close()
            server.write([0xFF])  // after close: dropped
            #expect(server.isClosed)
        }
        loop.execute {
            let client = pair.client.value!
            client.onRead = { bytes in received.mutate { $0 += bytes } }
            client.onClose = { error in
                #expect(error == nil)
                clientClosed.fulfill()
            }
            client.startReading()
        }
        try clientClosed.wait("EOF at the client")
        #expect(received.value == payload)
        try waitOnLoop(loop, "the server's onClose") { !serverClose.value.isEmpty }
        #expect(serverClose.value.count == 1)
        #expect(serverClose.value.first! == nil)
    }

    @Test func onCloseFiresOnceWithNilWhenThePeerCloses() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let calls = Locked<[LoopError?]>([])
        let closed = Expectation()
        let pair = try ConnectedPair.make(on: loop) { server in
            server.onClose = { error in calls.mutate { $0.append(error) }; closed.fulfill() }
            server.startReading()
        }
        loop.execute { pair.client.value!.close() }
        try closed.wait("onClose after EOF")
        try onLoop(loop) {
            pair.server.value!.close()
            pair.server.value!.closeNow()
        }
        try onLoop(loop) {}  // one more turn for any stray callback
        #expect(calls.value.count == 1)
        #expect(calls.value.first! == nil)
    }

    @Test func onCloseFiresOnceWithNilForALocalClose() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let calls = Locked<[LoopError?]>([])
        let closed = Expectation()
        let pair = try ConnectedPair.make(on: loop)
        loop.execute {
            let client = pair.client.value!
            client.onClose = { error in calls.mutate { $0.append(error) }; closed.fulfill() }
            client.close()
            client.close()
            client.closeNow()
            client.write([1, 2, 3])
            #expect(client.pendingWriteBytes == 0)
        }
        try closed.wait("onClose after local close")
        try onLoop(loop) {}
        #expect(calls.value.count == 1)
        #expect(calls.value.first! == nil)
    }

    @Test func onCloseFiresOnceWithTheErrorWhenThePeerResets() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let calls = Locked<[LoopError?]>([])
        let closed = Expectation()
        let pair = try ConnectedPair.make(on: loop) { server in
            server.onClose = { error in calls.mutate { $0.append(error) }; closed.fulfill() }
            server.startReading()
        }
        loop.execute { pair.client.value!.reset() }
        try closed.wait("onClose after reset")
        try onLoop(loop) { pair.server.value!.closeNow() }
        try onLoop(loop) {}
        #expect(calls.value.count == 1)
        let error = try #require(calls.value.first ?? nil)
        #expect(error.name == "ECONNRESET")
        #expect(error.description.hasPrefix("read from 127.0.0.1:"))
    }

    @Test func writeErrorClosesTheConnectionWithThatError() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let calls = Locked<[LoopError?]>([])
        let closed = Expectation()
        let pair = try ConnectedPair.make(on: loop) { server in
            // Not reading: the reset can only surface through a write.
            server.onClose = { error in calls.mutate { $0.append(error) }; closed.fulfill() }
        }
        try onLoop(loop) { pair.client.value!.reset() }
        loop.execute { pair.server.value!.write([1, 2, 3]) }
        try closed.wait("onClose after the failed write")
        try onLoop(loop) {}
        #expect(calls.value.count == 1)
        let error = try #require(calls.value.first ?? nil)
        #expect(["ECONNRESET", "EPIPE"].contains(error.name))
        #expect(error.operation.hasPrefix("write to 127.0.0.1:"))
        #expect(try onLoop(loop) { pair.server.value!.pendingWriteBytes } == 0)
    }

    @Test func connectToAClosedPortReportsConnectionRefused() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let port = try onLoop(loop) {
            let listener = try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { _ in }
            defer { listener.close() }
            return listener.localPort
        }
        let outcome = Locked<Result<String, LoopError>?>(nil)
        let done = Expectation()
        loop.execute {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                outcome.mutate { $0 = result.map(\.remoteAddress) }
                done.fulfill()
            }
        }
        try done.wait("connect result")
        guard case .failure(let error) = outcome.value else {
            Issue.record("expected a failure, got \(String(describing: outcome.value))")
            return
        }
        #expect(error.name == "ECONNREFUSED")
        #expect(error.operation == "connect 127.0.0.1:\(port)")
    }

    @Test func connectToANonNumericHostFailsWithoutCrashing() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let outcome = Locked<LoopError?>(nil)
        let done = Expectation()
        loop.execute {
            TCPConnection.connect(on: loop, host: "no.such.host", port: 80) { result in
                if case .failure(let error) = result { outcome.mutate { $0 = error } }
                done.fulfill()
            }
        }
        try done.wait("connect result")
        #expect(outcome.value?.name == "EINVAL")
    }

    @Test func listenOnAPortInUseThrowsAddressInUse() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let outcome = try onLoop(loop) { () -> (port: Int, error: LoopError?) in
            let first = try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { _ in }
            do throws(LoopError) {
                _ = try TCPListener.listen(on: loop, host: "127.0.0.1", port: first.localPort) { _ in }
                return (first.localPort, nil)
            } catch {
                return (first.localPort, error)
            }
        }
        let error = try #require(outcome.error)
        #expect(error.name == "EADDRINUSE")
        #expect(error.description == "listen 127.0.0.1:\(outcome.port): address already in use")
    }
}
