// One TCP stream on the loop: reads delivered as owned byte arrays, writes queued and sent as one
// writev per loop turn, read pausing above a write high-water mark, orderly and abrupt close.
import CLibUV

/// Loop-confined. An open connection is retained by its libuv handle, so it stays alive (and keeps
/// delivering reads) until it closes, whether or not its owner keeps a reference.
public final class TCPConnection {
    public let loop: Loop
    private let handle: UnsafeMutablePointer<uv_tcp_t>
    private var stream: UnsafeMutablePointer<uv_stream_t> { asStream(handle) }

    private enum State {
        case connecting
        case open
        /// `close()`: queued writes are flushed, then the write side is shut down, then the handle closes.
        case closing
        /// `uv_close` has been called; `onClose` runs from its callback.
        case closed
    }
    private var state: State
    /// The first error that ended the connection; nil for EOF and local closes.
    private var closeError: LoopError?
    private var connectCompletion: ((Result<TCPConnection, LoopError>) -> Void)?
    private var connectOperation = ""

    /// Each chunk read, in order. Not called after `close()`.
    public var onRead: (([UInt8]) -> Void)?
    /// Called exactly once, after the socket is closed: nil for EOF or a local close, the error otherwise.
    public var onClose: ((LoopError?) -> Void)?

    private var wantsReading = false
    private var isPausedForBackpressure = false
    private var isReading = false

    /// Bytes accepted by `write` and not yet handed to libuv (each chunk copied into its own buffer).
    private var queuedChunks: [UnsafeMutableRawBufferPointer] = []
    private var queuedByteCount = 0
    private var isRegisteredForFlush = false
    /// uv_write calls issued so far (tests check the one-writev-per-turn batching with it).
    private(set) var writeRequestCount = 0

    /// Bytes queued or in flight, not yet confirmed written to the socket.
    public private(set) var pendingWriteBytes = 0
    /// Above this many pending bytes reading pauses, so a peer that does not read cannot make us buffer
    /// without bound while it keeps sending requests. 1 MiB: the project's default, not yet measured.
    public var writeHighWaterBytes = 1 << 20 {
        didSet { updateBackpressure() }
    }
    /// Reading resumes once pending bytes drop to this (unless the owner stopped reading itself).
    public var writeLowWaterBytes = 256 << 10 {
        didSet { updateBackpressure() }
    }

    /// The peer, "127.0.0.1:54321"; kept after close.
    public private(set) var remoteAddress = "unknown"

    init(loop: Loop, handle: UnsafeMutablePointer<uv_tcp_t>, isConnected: Bool) {
        self.loop = loop
        self.handle = handle
        self.state = isConnected ? .open : .connecting
        attach(self, to: handle)
    }

    /// Connects to a numeric address (or "localhost"). `completion` runs once on the loop thread with
    /// the open connection or the error (refused, unreachable, bad address, loop shutting down).
    public static func connect(on loop: Loop, host: String, port: Int,
                               completion: @escaping (Result<TCPConnection, LoopError>) -> Void) {
        loop.assertInLoopThread()
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        precondition(uv_tcp_init(loop.uvLoop, handle) == 0, "uv_tcp_init failed")
        let connection = TCPConnection(loop: loop, handle: handle, isConnected: false)
        connection.connectCompletion = completion
        connection.connectOperation = "connect \(SocketAddress(host: host, port: port))"
        // Every failure is reported from the close callback, so completion never runs inside connect().
        if loop.isShuttingDown {
            connection.fail(LoopError(UV_ECANCELED, operation: connection.connectOperation))
            return
        }
        let address: ResolvedAddress
        do {
            address = try ResolvedAddress(host: host, port: port, operation: connection.connectOperation)
        } catch {
            connection.fail(error)
            return
        }
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        let status = address.withSockaddr {
            uv_tcp_connect(request, handle, $0) { request, status in
                guard let request else { return }
                let stream = request.pointee.handle!
                request.deallocate()
                owner(of: asHandle(stream), as: TCPConnection.self).connectFinished(status: status)
            }
        }
        if status != 0 {
            request.deallocate()
            connection.fail(LoopError(code: status, operation: connection.connectOperation))
        }
    }

    private func connectFinished(status: Int32) {
        guard status == 0 else {
            fail(LoopError(code: status, operation: connectOperation))
            return
        }
        guard state == .connecting else { return }
        state = .open
        didConnect()
        let completion = connectCompletion
        connectCompletion = nil
        completion?(.success(self))
    }

    /// The socket is connected (accepted or connect finished).
    func didConnect() {
        if let peer = ResolvedAddress.read({ uv_tcp_getpeername(handle, $0, $1) }) {
            remoteAddress = peer.description
        }
    }

    /// True once `close()`/`closeNow()` was called or the connection failed: writes are dropped.
    public var isClosed: Bool {
        loop.assertInLoopThread()
        return state == .closing || state == .closed
    }

    /// True while reading is paused because `pendingWriteBytes` went above `writeHighWaterBytes`.
    public var isReadingPausedForBackpressure: Bool {
        loop.assertInLoopThread()
        return isPausedForBackpressure
    }

    public func setNoDelay(_ on: Bool) {
        loop.assertInLoopThread()
        guard state == .open else { return }
        uv_tcp_nodelay(handle, on ? 1 : 0)
    }

    // MARK: Reading

    public func startReading() {
        loop.assertInLoopThread()
        wantsReading = true
        updateReading()
    }

    /// For the owner's own backpressure; independent of the write high-water pause.
    public func stopReading() {
        loop.assertInLoopThread()
        wantsReading = false
        updateReading()
    }

    private func updateReading() {
        guard state == .open else { return }
        let shouldRead = wantsReading && !isPausedForBackpressure
        if shouldRead && !isReading {
            let status = uv_read_start(stream, loopReadBufferAllocator) { stream, count, _ in
                guard let stream else { return }
                owner(of: asHandle(stream), as: TCPConnection.self).didRead(count: count)
            }
            guard status == 0 else {
                fail(LoopError(code: status, operation: "read from \(remoteAddress)"))
                return
            }
            isReading = true
        } else if !shouldRead && isReading {
            uv_read_stop(stream)
            isReading = false
        }
    }

    private func didRead(count: Int) {
        if count > 0 {
            guard state == .open else { return }  // closing: drain and discard
            let bytes = Array(UnsafeRawBufferPointer(start: loop.readBuffer.baseAddress, count: count))
            onRead?(bytes)
        } else if count == Int(UV_EOF.rawValue) {
            isReading = false  // libuv stops reading at EOF
            close()
        } else if count < 0 {
            fail(LoopError(code: Int32(count), operation: "read from \(remoteAddress)"))
        }
    }

    // MARK: Writing

    /// Queues `bytes`; everything queued during one loop turn goes out as one writev. Dropped silently
    /// when the connection is closing or closed.
    public func write(_ bytes: [UInt8]) {
        loop.assertInLoopThread()
        guard state == .open, !bytes.isEmpty else { return }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        chunk.copyBytes(from: bytes)
        queuedChunks.append(chunk)
        queuedByteCount += bytes.count
        pendingWriteBytes += bytes.count
        if !isRegisteredForFlush {
            isRegisteredForFlush = true
            loop.flusher.register(self)
        }
        updateBackpressure()
    }

    /// Hands every queued chunk to libuv as one uv_write. Called by the flusher and by `close()`.
    func flushQueuedWrites() {
        isRegisteredForFlush = false
        guard !queuedChunks.isEmpty, state == .open || state == .closing else { return }
        let request = WriteRequest(connection: self, chunks: queuedChunks, byteCount: queuedByteCount)
        queuedChunks = []
        queuedByteCount = 0
        writeRequestCount += 1
        let status = request.submit(on: stream)
        if status != 0 {
            pendingWriteBytes -= request.byteCount
            request.free()
            fail(LoopError(code: status, operation: "write to \(remoteAddress)"))
        }
    }

    fileprivate func writeFinished(byteCount: Int, status: Int32) {
        pendingWriteBytes -= byteCount
        if status < 0 && status != UV_ECANCELED.rawValue {
            fail(LoopError(code: status, operation: "write to \(remoteAddress)"))
        } else {
            updateBackpressure()
        }
    }

    private func updateBackpressure() {
        if !isPausedForBackpressure && pendingWriteBytes > writeHighWaterBytes {
            isPausedForBackpressure = true
            updateReading()
        } else if isPausedForBackpressure && pendingWriteBytes <= writeLowWaterBytes {
            isPausedForBackpressure = false
            updateReading()
        }
    }

    private func dropQueuedWrites() {
        for chunk in queuedChunks {
            chunk.deallocate()
        }
        pendingWriteBytes -= queuedByteCount
        queuedChunks = []
        queuedByteCount = 0
    }

    // MARK: Closing

    /// Orderly close: queued writes are sent, the write side is shut down (FIN), then the socket closes
    /// and `onClose` runs. A peer that never reads can stall this; call `closeNow()` after a deadline.
    public func close() {
        loop.assertInLoopThread()
        switch state {
        case .connecting:
            closeNow()
            return
        case .open:
            break
        case .closing, .closed:
            return
        }
        state = .closing
        flushQueuedWrites()
        guard state == .closing else { return }  // the flush failed and closed us
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let status = uv_shutdown(request, stream) { request, _ in
            guard let request else { return }
            let stream = request.pointee.handle!
            request.deallocate()
            // Any status: success, ECANCELED (closed meanwhile) or an error a write already reported.
            owner(of: asHandle(stream), as: TCPConnection.self).closeNow()
        }
        if status != 0 {
            request.deallocate()
            closeNow()
        }
    }

    /// Abrupt close: queued writes are dropped, in-flight ones cancelled; `onClose` runs from the close callback.
    public func closeNow() {
        loop.assertInLoopThread()
        guard state != .closed else { return }
        state = .closed
        dropQueuedWrites()
        isReading = false
        closeHandle(handle)
    }

    /// Aborts the connection with a TCP reset (SO_LINGER 0) instead of a FIN: for peers that broke the
    /// protocol. Queued writes are dropped; the peer sees ECONNRESET.
    public func reset() {
        loop.assertInLoopThread()
        guard state == .open else {
            closeNow()
            return
        }
        state = .closed
        dropQueuedWrites()
        isReading = false
        if uv_tcp_close_reset(handle, handleCloseCallback) != 0 {
            closeHandle(handle)
        }
    }

    /// Ends the connection because of `error` (kept if it is the first).
    private func fail(_ error: LoopError) {
        if closeError == nil {
            closeError = error
        }
        closeNow()
    }
}

extension TCPConnection: LoopHandleOwner {
    func closeForShutdown() { closeNow() }

    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) {
        let completion = connectCompletion
        let onClose = self.onClose
        connectCompletion = nil
        self.onClose = nil
        onRead = nil
        if let completion {
            completion(.failure(closeError ?? LoopError(UV_ECANCELED, operation: connectOperation)))
        } else {
            onClose?(closeError)
        }
    }
}

/// One uv_write: the chunks it sends stay allocated until libuv calls back.
private final class WriteRequest {
    let connection: TCPConnection
    let byteCount: Int
    private let chunks: [UnsafeMutableRawBufferPointer]
    private let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
    private let buffers: UnsafeMutablePointer<uv_buf_t>

    init(connection: TCPConnection, chunks: [UnsafeMutableRawBufferPointer], byteCount: Int) {
        self.connection = connection
        self.chunks = chunks
        self.byteCount = byteCount
        buffers = .allocate(capacity: chunks.count)
        for (index, chunk) in chunks.enumerated() {
            buffers[index] = uv_buf_init(chunk.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(chunk.count))
        }
    }

    /// Starts the write; on success the request keeps itself alive until the callback.
    func submit(on stream: UnsafeMutablePointer<uv_stream_t>) -> Int32 {
        let retained = Unmanaged.passRetained(self)
        request.pointee.data = retained.toOpaque()
        let status = uv_write(request, stream, buffers, UInt32(chunks.count)) { request, status in
            guard let request else { return }
            let write = Unmanaged<WriteRequest>.fromOpaque(request.pointee.data).takeRetainedValue()
            write.connection.writeFinished(byteCount: write.byteCount, status: status)
            write.free()
        }
        if status != 0 {
            retained.release()
        }
        return status
    }

    func free() {
        for chunk in chunks {
            chunk.deallocate()
        }
        buffers.deallocate()
        request.deallocate()
    }
}

/// Every socket on a loop reads into the loop's one read buffer (see `Loop.readBuffer`).
let loopReadBufferAllocator: uv_alloc_cb = { handle, _, buffer in
    guard let handle, let buffer else { return }
    let loop = Unmanaged<Loop>.fromOpaque(handle.pointee.loop.pointee.data).takeUnretainedValue()
    buffer.pointee = uv_buf_init(loop.readBuffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                 UInt32(loop.readBuffer.count))
}
