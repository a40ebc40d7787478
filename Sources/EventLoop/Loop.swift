// The event loop: one uv_loop_t driven by one thread it owns. Everything built on a loop (TCP, UDP,
// timers, mailboxes, signals) lives on that thread; other threads reach it only through `execute`,
// `LoopMailbox.send` and `shutdown`.
import CLibUV
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Confinement: `uvLoop`, `readBuffer`, `flusher`, `shutdownHooks` and `isShuttingDown` belong to the
/// loop thread once `start()` has run (before that, to the thread that created the loop, which can
/// only shut it down). `lifecycle`, `threadHandle`, `loopThread`, `isJoined` and `closeStatus` are
/// guarded by `lifecycleLock`. `execute`, `shutdown`, `waitUntilStopped` and `isInLoopThread` are
/// the members that any thread may call.
public final class Loop: @unchecked Sendable {
    public let name: String
    let logger: Logger

    let uvLoop: UnsafeMutablePointer<uv_loop_t>
    /// One read buffer for every socket on the loop: libuv calls alloc, then read, then our read
    /// callback, which copies the bytes out before anything else can read. 64 KiB holds any datagram.
    let readBuffer: UnsafeMutableRawBufferPointer
    let flusher: WriteFlusher
    private let executeQueue: ExecuteQueue
    private var shutdownHooks: [() -> Void] = []
    /// Set when shutdown begins; new handles close themselves at once after that.
    private(set) var isShuttingDown = false

    private enum Lifecycle { case notStarted, running, stopped }
    private let lifecycleLock = ConditionLock()
    private var lifecycle = Lifecycle.notStarted
    private var threadHandle: uv_thread_t?
    private var loopThread: uv_thread_t?
    private var isJoined = false
    private var closeStatus: Int32?

    /// libuv writes sockets with writev(2), which cannot take MSG_NOSIGNAL, and does not
    /// ignore SIGPIPE itself: without this, a client that closes while we write to it kills
    /// the whole process (reproduced by HostileClientTests). A write to a closed peer must
    /// be an EPIPE error on that one connection, so the signal is ignored process-wide.
    static func ignoreBrokenPipeSignal() {
        signal(SIGPIPE, SIG_IGN)
    }

    public init(name: String = "conclave-loop") throws(LoopError) {
        Self.ignoreBrokenPipeSignal()
        let uvLoop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        let status = uv_loop_init(uvLoop)
        guard status == 0 else {
            uvLoop.deallocate()
            throw LoopError(code: status, operation: "uv_loop_init")
        }
        let queue: ExecuteQueue
        do {
            queue = try ExecuteQueue(uvLoop: uvLoop)
        } catch {
            uv_loop_close(uvLoop)
            uvLoop.deallocate()
            throw error
        }
        self.name = name
        var logger = Logger(label: "conclave.eventloop")
        logger[metadataKey: "loop"] = "\(name)"
        self.logger = logger
        self.uvLoop = uvLoop
        self.executeQueue = queue
        self.flusher = WriteFlusher(uvLoop: uvLoop)
        self.readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        uvLoop.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        let state = lifecycleLock.withLock { (lifecycle, threadHandle, isJoined) }
        switch state {
        case (.notStarted, _, _):
            _ = finishLoop(runShutdownSteps: false)
        case (.stopped, var thread?, false):
            // The loop thread may drop the last reference itself; it must not join itself.
            var current = uv_thread_self()
            if uv_thread_equal(&thread, &current) != 0 {
                pthread_detach(thread)
            } else {
                uv_thread_join(&thread)
            }
        case (.running, _, _):
            assertionFailure("a running loop is retained by its thread and cannot be deinitialised")
        default:
            break
        }
        readBuffer.deallocate()
        uvLoop.deallocate()
    }

    // MARK: Thread

    /// Spawns the loop thread and runs the loop on it until `shutdown()`.
    public func start() {
        lifecycleLock.withLock {
            precondition(lifecycle == .notStarted, "Loop.start() called twice or after shutdown")
            lifecycle = .running
            var thread = uv_thread_t()
            let retained = Unmanaged.passRetained(self).toOpaque()
            let status = uv_thread_create(&thread, { argument in
                let loop = Unmanaged<Loop>.fromOpaque(argument!).takeRetainedValue()
                loop.runOnLoopThread()
            }, retained)
            precondition(status == 0, "uv_thread_create failed: \(LoopError(code: status, operation: "start loop"))")
            threadHandle = thread
        }
    }

    private func runOnLoopThread() {
        lifecycleLock.withLock { loopThread = uv_thread_self() }
        logger.debug("loop started")
        uv_run(uvLoop, UV_RUN_DEFAULT)
        // uv_run returns only when nothing is left open, which the execute queue prevents until shutdown.
        let status = finishLoop(runShutdownSteps: true)
        logger.debug("loop stopped", metadata: ["uv_loop_close": "\(status)"])
        lifecycleLock.withLock {
            lifecycle = .stopped
            loopThread = nil
            closeStatus = status
            lifecycleLock.broadcast()
        }
    }

    /// Closes every handle, runs the loop until their close callbacks are done and closes the loop.
    /// Handles opened by close callbacks are swept by the retries. Returns `uv_loop_close`'s status.
    private func finishLoop(runShutdownSteps: Bool) -> Int32 {
        if runShutdownSteps {
            beginShutdown()
        } else {
            isShuttingDown = true
            _ = executeQueue.close()  // work queued on a loop that never started never runs
            closeAllHandles(uvLoop)
        }
        var status = uv_loop_close(uvLoop)
        var sweeps = 0
        while status != 0 && sweeps < 8 {
            sweeps += 1
            closeAllHandles(uvLoop)
            uv_run(uvLoop, UV_RUN_DEFAULT)
            status = uv_loop_close(uvLoop)
        }
        if status != 0 {
            logger.error("uv_loop_close failed", metadata: ["error": "\(LoopError(code: status, operation: "close loop"))"])
        }
        return status
    }

    public var isInLoopThread: Bool {
        lifecycleLock.withLock {
            guard var loopThread else { return false }
            var current = uv_thread_self()
            return uv_thread_equal(&loopThread, &current) != 0
        }
    }

    /// Debug builds stop here when loop-confined state is touched from another thread.
    public func assertInLoopThread(file: StaticString = #fileID, line: UInt = #line) {
        assert(isInLoopThread, "must run on the thread of loop \(name)", file: file, line: line)
    }

    // MARK: Work

    /// Any thread. Runs `work` on the loop thread, after everything submitted before it (FIFO).
    /// Work submitted after shutdown has begun is dropped.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        if !executeQueue.enqueue(work) {
            logger.debug("execute after shutdown: work dropped")
        }
    }

    /// Runs `callback` on the loop thread at the end of the current turn, after the turn's I/O
    /// callbacks and before its writes are flushed (in the same turn when called from a callback).
    /// Loop thread only. Dropped once shutdown has closed the loop's handles.
    public func atEndOfTurn(_ callback: @escaping () -> Void) {
        assertInLoopThread()
        flusher.runAtEndOfTurn(callback)
    }

    /// Loop thread. The loop's clock (`uv_now`), in milliseconds, updated once per loop turn.
    public var nowMilliseconds: UInt64 {
        assertInLoopThread()
        return uv_now(uvLoop)
    }

    // MARK: Shutdown

    /// Loop thread. `hook` runs at shutdown, in registration order, before remaining handles are closed.
    /// Registered after shutdown has begun, it runs at once.
    public func addShutdownHook(_ hook: @escaping () -> Void) {
        assertInLoopThread()
        if isShuttingDown {
            hook()
        } else {
            shutdownHooks.append(hook)
        }
    }

    /// Any thread; idempotent. Runs work queued so far, then the shutdown hooks, then closes every open
    /// handle (connections close at once, queued writes dropped), lets the close callbacks run and
    /// closes the loop; the thread then exits. From another thread this blocks until it has exited;
    /// on the loop thread it only begins the shutdown.
    public func shutdown() {
        if isInLoopThread {
            beginShutdown()
            return
        }
        let wasNotStarted = lifecycleLock.withLock { () -> Bool in
            guard lifecycle == .notStarted else { return false }
            lifecycle = .stopped
            return true
        }
        if wasNotStarted {
            let status = finishLoop(runShutdownSteps: false)
            lifecycleLock.withLock {
                closeStatus = status
                lifecycleLock.broadcast()
            }
            return
        }
        execute { [self] in beginShutdown() }
        waitUntilStopped()
    }

    /// Blocks until the loop thread has exited (after some thread called `shutdown()`).
    public func waitUntilStopped() {
        precondition(!isInLoopThread, "waitUntilStopped() on the loop thread would wait forever")
        let threadToJoin = lifecycleLock.withLock { () -> uv_thread_t? in
            while lifecycle != .stopped {
                lifecycleLock.wait()
            }
            guard !isJoined, let threadHandle else { return nil }
            isJoined = true
            return threadHandle
        }
        if var thread = threadToJoin {
            uv_thread_join(&thread)
        }
    }

    /// `uv_loop_close`'s status once the loop has stopped (0 means every handle was closed).
    var loopCloseStatus: Int32? {
        lifecycleLock.withLock { closeStatus }
    }

    private func beginShutdown() {
        assertInLoopThread()
        guard !isShuttingDown else { return }
        isShuttingDown = true
        logger.debug("loop shutting down")
        for work in executeQueue.close() {
            work()
        }
        while !shutdownHooks.isEmpty {
            let hooks = shutdownHooks
            shutdownHooks = []
            for hook in hooks {
                hook()
            }
        }
        closeAllHandles(uvLoop)
    }
}
