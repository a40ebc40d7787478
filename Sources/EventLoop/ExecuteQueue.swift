// The loop's cross-thread work queue: any thread appends under a mutex, one uv_async wake-up
// drains everything queued since the last one, in order, on the loop thread.
import CLibUV

/// Confinement: `items` and `isClosed` are guarded by `lock`. `handle` is created by the thread that
/// builds the loop and closed on the loop thread; the only call other threads make on it is
/// `uv_async_send` (thread-safe by libuv's contract), and only under `lock` while `!isClosed`, so it
/// can never race with the `uv_close` in `close()`.
final class ExecuteQueue: LoopHandleOwner, @unchecked Sendable {
    typealias Work = @Sendable () -> Void

    private let lock = ConditionLock()
    private let handle: UnsafeMutablePointer<uv_async_t>
    private var items: [Work] = []
    private var isClosed = false

    init(uvLoop: UnsafeMutablePointer<uv_loop_t>) throws(LoopError) {
        handle = .allocate(capacity: 1)
        let status = uv_async_init(uvLoop, handle) { handle in
            guard let handle else { return }
            owner(of: asHandle(handle), as: ExecuteQueue.self).runQueuedWork()
        }
        guard status == 0 else {
            handle.deallocate()
            throw LoopError(code: status, operation: "uv_async_init")
        }
        attach(self, to: handle)
    }

    /// Any thread. Returns false (and drops `work`) once the loop has begun shutting down.
    func enqueue(_ work: @escaping Work) -> Bool {
        lock.withLock {
            guard !isClosed else { return false }
            let wasEmpty = items.isEmpty
            items.append(work)
            if wasEmpty {
                // A drain takes the whole array, so an empty queue means no wake-up is pending.
                uv_async_send(handle)
            }
            return true
        }
    }

    /// Loop thread: runs everything queued so far. Work queued meanwhile wakes the loop again.
    private func runQueuedWork() {
        let batch = lock.withLock { () -> [Work] in
            defer { items = [] }
            return items
        }
        for work in batch {
            work()
        }
    }

    /// Loop thread: stops accepting work, closes the wake-up handle and returns what was still queued.
    func close() -> [Work] {
        let remaining = lock.withLock { () -> [Work] in
            guard !isClosed else { return [] }
            isClosed = true
            defer { items = [] }
            return items
        }
        if uv_is_closing(asHandle(handle)) == 0 {
            closeHandle(handle)
        }
        return remaining
    }

    func closeForShutdown() {
        _ = close()
    }

    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) {}
}
