// A listening TCP socket on the loop: binds, listens and hands each accepted socket to its owner
// as a TCPConnection (not yet reading: the owner sets onRead and calls startReading).
import CLibUV

/// Loop-confined. Stays open (and retained by its handle) until `close()` or loop shutdown.
public final class TCPListener {
    public let loop: Loop
    private let handle: UnsafeMutablePointer<uv_tcp_t>
    private var onAccept: ((TCPConnection) -> Void)?
    private var isCloseRequested = false
    /// The address asked for, for log lines and errors.
    private let listenAddress: String

    private init(loop: Loop, handle: UnsafeMutablePointer<uv_tcp_t>, listenAddress: String,
                 onAccept: @escaping (TCPConnection) -> Void) {
        self.loop = loop
        self.handle = handle
        self.listenAddress = listenAddress
        self.onAccept = onAccept
    }

    /// Binds and listens. Port 0 picks a free port (see `localPort`). An address in use, a bad
    /// address or a loop that is shutting down throws; nothing is left open then.
    public static func listen(on loop: Loop, host: String, port: Int, backlog: Int32 = 1024,
                              onAccept: @escaping (TCPConnection) -> Void) throws(LoopError) -> TCPListener {
        loop.assertInLoopThread()
        let operation = "listen \(SocketAddress(host: host, port: port))"
        if loop.isShuttingDown {
            throw LoopError(UV_ECANCELED, operation: operation)
        }
        let address = try ResolvedAddress(host: host, port: port, operation: operation)
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let initStatus = uv_tcp_init(loop.uvLoop, handle)
        guard initStatus == 0 else {
            handle.deallocate()
            throw LoopError(code: initStatus, operation: operation)
        }
        let listener = TCPListener(loop: loop, handle: handle, listenAddress: "\(SocketAddress(host: host, port: port))",
                                   onAccept: onAccept)
        attach(listener, to: handle)
        // libuv reports bind conflicts (EADDRINUSE) from uv_listen, not uv_tcp_bind.
        var status = address.withSockaddr { uv_tcp_bind(handle, $0, 0) }
        if status == 0 {
            status = uv_listen(asStream(handle), backlog) { server, status in
                guard let server else { return }
                owner(of: asHandle(server), as: TCPListener.self).acceptConnection(status: status)
            }
        }
        guard status == 0 else {
            listener.close()
            throw LoopError(code: status, operation: operation)
        }
        loop.logger.debug("listening", metadata: ["address": "\(listener.listenAddress)", "port": "\(listener.localPort)"])
        return listener
    }

    /// The bound port: the one the kernel chose when port 0 was asked for. 0 once closed.
    public var localPort: Int {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return 0 }
        return ResolvedAddress.read { uv_tcp_getsockname(handle, $0, $1) }?.port ?? 0
    }

    /// Stops listening. Connections already accepted stay open.
    public func close() {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        isCloseRequested = true
        onAccept = nil
        closeHandle(handle)
    }

    private func acceptConnection(status: Int32) {
        guard !isCloseRequested else { return }
        guard status == 0 else {
            // EMFILE and friends: the listener stays up; libuv retries on the next readiness.
            loop.logger.warning("accept failed", metadata: ["error": "\(LoopError(code: status, operation: "accept on \(listenAddress)"))"])
            return
        }
        let client = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        precondition(uv_tcp_init(loop.uvLoop, client) == 0, "uv_tcp_init failed")
        let connection = TCPConnection(loop: loop, handle: client, isConnected: true)
        let acceptStatus = uv_accept(asStream(handle), asStream(client))
        guard acceptStatus == 0 else {
            connection.closeNow()
            loop.logger.warning("accept failed", metadata: ["error": "\(LoopError(code: acceptStatus, operation: "accept on \(listenAddress)"))"])
            return
        }
        connection.didConnect()
        onAccept?(connection)
    }
}

extension TCPListener: LoopHandleOwner {
    func closeForShutdown() { close() }
    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) { onAccept = nil }
}
