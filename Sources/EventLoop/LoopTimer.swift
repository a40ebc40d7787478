// A libuv timer on the loop: one-shot or repeating, in loop-clock milliseconds.
import CLibUV

/// Loop-confined. Retained by its handle until `close()` or loop shutdown.
public final class LoopTimer {
    public let loop: Loop
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private var callback: (() -> Void)?
    private var isRepeating = false
    private var isCloseRequested = false

    public init(loop: Loop) {
        loop.assertInLoopThread()
        self.loop = loop
        handle = .allocate(capacity: 1)
        precondition(uv_timer_init(loop.uvLoop, handle) == 0, "uv_timer_init failed")
        attach(self, to: handle)
        if loop.isShuttingDown {
            close()  // the loop is closing everything; a timer made now would never fire
        }
    }

    /// (Re)arms the timer: `callback` runs after `afterMilliseconds`, then every `repeatMilliseconds`
    /// if that is non-zero. Replaces any earlier schedule. Ignored once closed.
    public func start(afterMilliseconds: UInt64, repeatMilliseconds: UInt64 = 0, _ callback: @escaping () -> Void) {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        self.callback = callback
        isRepeating = repeatMilliseconds > 0
        uv_timer_start(handle, { handle in
            guard let handle else { return }
            owner(of: asHandle(handle), as: LoopTimer.self).fire()
        }, afterMilliseconds, repeatMilliseconds)
    }

    private func fire() {
        guard let callback else { return }
        if !isRepeating {
            self.callback = nil  // before the call, which may start the timer again
        }
        callback()
    }

    public func stop() {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        uv_timer_stop(handle)
        callback = nil
    }

    public func close() {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        isCloseRequested = true
        callback = nil
        closeHandle(handle)
    }
}

extension LoopTimer: LoopHandleOwner {
    func closeForShutdown() { close() }
    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) { callback = nil }
}
