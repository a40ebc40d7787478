// Batches the writes of one loop turn. A connection that queues bytes registers here once; a uv_check
// handle, which runs right after the turn's I/O callbacks, then issues one uv_write (writev) per
// connection. While anything is registered a no-op uv_idle handle stays active, which makes libuv poll
// with a zero timeout, so bytes queued outside the I/O phase (timers, close callbacks) never wait.
// The same check first runs the turn's end-of-turn callbacks (`Loop.atEndOfTurn`), so work they
// do (Raft coalescing a turn's proposals into one AppendEntries) is written in the same turn.
import CLibUV

/// Loop-confined; owned by `Loop`.
final class WriteFlusher: LoopHandleOwner {
    private let check: UnsafeMutablePointer<uv_check_t>
    private let idle: UnsafeMutablePointer<uv_idle_t>
    private var registered: [TCPConnection] = []
    private var endOfTurn: [() -> Void] = []
    private var isArmed = false
    private var isClosed = false

    init(uvLoop: UnsafeMutablePointer<uv_loop_t>) {
        check = .allocate(capacity: 1)
        idle = .allocate(capacity: 1)
        // Both only fail for an invalid loop.
        precondition(uv_check_init(uvLoop, check) == 0, "uv_check_init failed")
        precondition(uv_idle_init(uvLoop, idle) == 0, "uv_idle_init failed")
        attach(self, to: check)
        attach(self, to: idle)
    }

    /// `connection` has queued bytes; flush them at the end of this turn.
    func register(_ connection: TCPConnection) {
        guard !isClosed else { return }
        registered.append(connection)
        arm()
    }

    /// Runs `callback` once, at the end of this turn, before the turn's writes are flushed.
    func runAtEndOfTurn(_ callback: @escaping () -> Void) {
        guard !isClosed else { return }
        endOfTurn.append(callback)
        arm()
    }

    private func arm() {
        guard !isArmed else { return }
        isArmed = true
        uv_check_start(check) { check in
            guard let check else { return }
            owner(of: asHandle(check), as: WriteFlusher.self).flush()
        }
        uv_idle_start(idle) { _ in }
    }

    private func flush() {
        // A flush can fail a connection synchronously, and its owner may write elsewhere; a
        // callback may queue writes or register another callback: loop until quiet.
        while !registered.isEmpty || !endOfTurn.isEmpty {
            while !endOfTurn.isEmpty {
                let callbacks = endOfTurn
                endOfTurn = []
                for callback in callbacks { callback() }
            }
            let batch = registered
            registered = []
            for connection in batch {
                connection.flushQueuedWrites()
            }
        }
        isArmed = false
        uv_check_stop(check)
        uv_idle_stop(idle)
    }

    func closeForShutdown() {
        guard !isClosed else { return }
        isClosed = true
        registered = []
        endOfTurn = []
        closeHandle(check)
        closeHandle(idle)
    }

    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) {}
}
