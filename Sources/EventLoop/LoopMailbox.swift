// A typed cross-thread inbox: other threads send messages, the loop thread receives them in batches
// (everything sent since the last wake-up, in order) through one uv_async handle.
import CLibUV

/// Confinement: `pending` and `isClosedForSenders` are guarded by `lock`; `uv_async_send` is called
/// only under `lock` while the mailbox is open, so it cannot race with `uv_close`. `handler`, `handle`'s
/// lifetime and `isCloseRequested` belong to the loop thread (the mailbox is created there).
public final class LoopMailbox<Message: Sendable>: @unchecked Sendable {
    public let loop: Loop
    /// Messages held for the loop at most; `send` refuses more. Unbounded by default because the
    /// senders (disk completions) must not lose messages; set it where dropping is acceptable.
    public let capacity: Int
    private let handle: UnsafeMutablePointer<uv_async_t>
    private let lock = ConditionLock()
    private var pending: [Message] = []
    private var isClosedForSenders = false
    private var handler: (([Message]) -> Void)?
    private var isCloseRequested = false

    public init(loop: Loop, capacity: Int = .max, handler: @escaping ([Message]) -> Void) {
        loop.assertInLoopThread()
        precondition(capacity > 0, "LoopMailbox capacity must be positive")
        self.loop = loop
        self.capacity = capacity
        self.handler = handler
        handle = .allocate(capacity: 1)
        precondition(uv_async_init(loop.uvLoop, handle) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            // Generic types cannot be named in a C callback; reach the mailbox through a protocol.
            (Unmanaged<AnyObject>.fromOpaque(data).takeUnretainedValue() as? AsyncWakeTarget)?.wake()
        } == 0, "uv_async_init failed")
        attach(self, to: handle)
        if loop.isShuttingDown {
            close()
        }
    }

    /// Any thread. Returns false (dropping `message`) when the mailbox is closed or full.
    @discardableResult
    public func send(_ message: Message) -> Bool {
        lock.withLock {
            guard !isClosedForSenders, pending.count < capacity else { return false }
            let wasEmpty = pending.isEmpty
            pending.append(message)
            if wasEmpty {
                uv_async_send(handle)
            }
            return true
        }
    }

    /// Loop thread. Stops delivery; messages not yet delivered are dropped.
    public func close() {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        isCloseRequested = true
        lock.withLock {
            isClosedForSenders = true
            pending = []
        }
        handler = nil
        closeHandle(handle)
    }
}

protocol AsyncWakeTarget: AnyObject {
    func wake()
}

extension LoopMailbox: AsyncWakeTarget {
    func wake() {
        let batch = lock.withLock { () -> [Message] in
            defer { pending = [] }
            return pending
        }
        guard !batch.isEmpty, let handler else { return }
        handler(batch)
    }
}

extension LoopMailbox: LoopHandleOwner {
    func closeForShutdown() { close() }
    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) { handler = nil }
}
