// The disk thread: the one thread that writes LMDB (log appends, fsync, state apply).
// The loop thread hands it jobs; results go back through a LoopMailbox, so the loop never
// blocks on a disk sync and nothing on the loop side needs a lock.
import Foundation

/// A dedicated thread running submitted jobs in order.
///
/// Thread confinement: `submit` and `stop` may be called from any thread (they take `lock`,
/// held only to move a job in or out of the queue); jobs run only on the disk thread.
public final class DiskThread: @unchecked Sendable {
    private let lock = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var stopping = false
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    public init(name: String = "conclave-disk") {
        let thread = Thread { [unowned self] in self.run() }
        thread.name = name
        self.thread = thread
        thread.start()
    }

    /// Queues a job. Jobs submitted after `stop` are dropped.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        lock.lock()
        defer { lock.unlock() }
        guard !stopping else { return }
        jobs.append(job)
        lock.signal()
    }

    /// Runs every job already queued, then ends the thread and waits for it. Idempotent.
    public func stop() {
        lock.lock()
        let wasStopping = stopping
        stopping = true
        lock.signal()
        lock.unlock()
        if !wasStopping { finished.wait() }
    }

    private func run() {
        while true {
            lock.lock()
            while jobs.isEmpty && !stopping { lock.wait() }
            if jobs.isEmpty && stopping {
                lock.unlock()
                finished.signal()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            lock.unlock()
            for job in batch { job() }
        }
    }
}

/// Moves a value owned by one thread to another where the compiler cannot see that the
/// hand-off is exclusive. Used only for the stores, which the disk thread owns after start.
struct ThreadHandoff<Value>: @unchecked Sendable {
    let value: Value
}
