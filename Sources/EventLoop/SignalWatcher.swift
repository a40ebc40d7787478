// Delivers a POSIX signal (SIGINT, SIGTERM, SIGHUP) to a closure on the loop thread via uv_signal.
import CLibUV

/// Loop-confined. Retained by its handle until `close()` or loop shutdown.
public final class SignalWatcher {
    public let loop: Loop
    private let handle: UnsafeMutablePointer<uv_signal_t>
    private var callback: (() -> Void)?
    private var isCloseRequested = false

    public init(loop: Loop, signal: Int32, _ callback: @escaping () -> Void) throws(LoopError) {
        loop.assertInLoopThread()
        let operation = "watch signal \(signal)"
        if loop.isShuttingDown {
            throw LoopError(UV_ECANCELED, operation: operation)
        }
        self.loop = loop
        self.callback = callback
        handle = .allocate(capacity: 1)
        precondition(uv_signal_init(loop.uvLoop, handle) == 0, "uv_signal_init failed")
        attach(self, to: handle)
        let status = uv_signal_start(handle, { handle, _ in
            guard let handle else { return }
            owner(of: asHandle(handle), as: SignalWatcher.self).callback?()
        }, signal)
        guard status == 0 else {
            close()
            throw LoopError(code: status, operation: operation)
        }
    }

    public func close() {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        isCloseRequested = true
        callback = nil
        closeHandle(handle)
    }
}

extension SignalWatcher: LoopHandleOwner {
    func closeForShutdown() { close() }
    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) { callback = nil }
}
