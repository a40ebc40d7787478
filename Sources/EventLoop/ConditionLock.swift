// A mutex and condition variable on the heap (a pthread mutex must never move), used for the few
// pieces of state that other threads touch: the execute queue, mailboxes and the loop's lifecycle.
import CLibUV

/// Thread-safe by construction: it only wraps `uv_mutex_t`/`uv_cond_t`, which are made for sharing.
final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<uv_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<uv_cond_t>.allocate(capacity: 1)

    init() {
        precondition(uv_mutex_init(mutex) == 0, "uv_mutex_init failed")
        precondition(uv_cond_init(condition) == 0, "uv_cond_init failed")
    }

    deinit {
        uv_cond_destroy(condition)
        uv_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        uv_mutex_lock(mutex)
        defer { uv_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for `broadcast()`; call only inside `withLock`.
    func wait() {
        uv_cond_wait(condition, mutex)
    }

    /// Wakes every waiter; call inside `withLock` after changing the state they wait on.
    func broadcast() {
        uv_cond_broadcast(condition)
    }
}
