// Test support: start a loop, run a closure on it and wait for the answer, count events with a
// deadline. Nothing here sleeps to wait for a condition; every wait ends at its event or its deadline.
import Dispatch
import Foundation
import Testing
@testable import EventLoop

struct TestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Deadline for any single wait; generous because CI machines are slow, never reached when passing.
let waitSeconds = 20.0

/// A value shared between the loop thread and the test thread, guarded by a lock.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func mutate<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&stored) } }
}

/// Counts events from any thread; `wait` returns once `count` of them happened or the deadline passed.
final class Expectation: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func fulfill() { semaphore.signal() }
    func wait(count: Int = 1, _ what: String) throws {
        let deadline = DispatchTime.now() + waitSeconds
        for _ in 0..<count where semaphore.wait(timeout: deadline) == .timedOut {
            throw TestTimeout(what: what)
        }
    }
}

func startedLoop(_ name: String = "test-loop") throws -> Loop {
    let loop = try Loop(name: name)
    loop.start()
    return loop
}

/// Runs `body` on the loop thread and returns its result (or rethrows its error).
func onLoop<T: Sendable>(_ loop: Loop, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let result = Locked<Result<T, any Error>?>(nil)
    let done = Expectation()
    loop.execute {
        let outcome = Result { try body() }
        result.mutate { $0 = outcome }
        done.fulfill()
    }
    try done.wait("work on the loop")
    return try result.value!.get()
}

/// Polls `condition` on the loop thread until it holds or the deadline passes. For states with no
/// event to wait on (such as a byte count reaching a value).
func waitOnLoop(_ loop: Loop, _ what: String, _ condition: @escaping @Sendable () -> Bool) throws {
    let deadline = Date().addingTimeInterval(waitSeconds)
    while Date() < deadline {
        if try onLoop(loop, condition) { return }
        // Let the loop make progress between polls.
        _ = DispatchSemaphore(value: 0).wait(timeout: .now() + .milliseconds(2))
    }
    throw TestTimeout(what: what)
}

/// A server that echoes every byte back; returns its port.
func startEchoServer(on loop: Loop) throws -> Int {
    try onLoop(loop) {
        let listener = try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { connection in
            connection.onRead = { [unowned connection] bytes in connection.write(bytes) }
            connection.startReading()
        }
        return listener.localPort
    }
}

/// Connects a client and a server-side connection to each other over 127.0.0.1.
struct ConnectedPair {
    let server: LoopBound<TCPConnection?>
    let client: LoopBound<TCPConnection?>
    let listener: LoopBound<TCPListener?>

    /// `configureServer` runs on the accepted connection before anything else happens on the loop.
    static func make(on loop: Loop,
                     configureServer: @escaping @Sendable (TCPConnection) -> Void = { _ in }) throws -> ConnectedPair {
        let pair = ConnectedPair(server: .init(emptyOn: loop), client: .init(emptyOn: loop), listener: .init(emptyOn: loop))
        let both = Expectation()
        let port = try onLoop(loop) {
            let listener = try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { connection in
                pair.server.value = connection
                configureServer(connection)
                both.fulfill()
            }
            pair.listener.value = listener
            return listener.localPort
        }
        let failure = Locked<LoopError?>(nil)
        loop.execute {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                switch result {
                case .success(let connection): pair.client.value = connection
                case .failure(let error): failure.mutate { $0 = error }
                }
                both.fulfill()
            }
        }
        try both.wait(count: 2, "accept and connect")
        if let error = failure.value { throw error }
        return pair
    }
}

/// Deterministic, non-repeating-looking bytes for integrity checks.
func pattern(count: Int, seed: UInt32 = 1) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 1_664_525 &+ 1_013_904_223
        return UInt8(truncatingIfNeeded: state >> 24)
    }
}
