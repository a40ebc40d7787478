// Helpers for the Raft I/O tests: run a closure on a loop thread and wait for its result,
// and fresh temporary data directories.
import EventLoop
import Foundation

/// Carries a value across threads; tests only touch it on the loop thread or after a wait.
final class Unsafe<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// Runs `body` on `loop`'s thread and returns its result (rethrowing its error).
func onLoop<T>(_ loop: Loop, _ body: @escaping () throws -> T) throws -> T {
    let result = Unsafe<Result<T, Error>?>(nil)
    let work = Unsafe(body)
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        result.value = Result { try work.value() }
        done.signal()
    }
    guard done.wait(timeout: .now() + 30) == .success else { throw TestTimeout() }
    return try result.value!.get()
}

struct TestTimeout: Error {}

func temporaryDataDirectory() -> String {
    NSTemporaryDirectory() + "/conclave-raft-" + UUID().uuidString
}

/// Polls `condition` until it holds or `seconds` pass (no sleeping on the condition itself).
func eventually(_ seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(5_000)
    }
    return try condition()
}
