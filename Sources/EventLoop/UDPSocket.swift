// A bound UDP socket on the loop. Sends try the socket directly and queue in libuv only when the
// socket is busy, up to a byte limit; send errors are counted and logged, never thrown or fatal.
import CLibUV

/// Loop-confined. Stays open (and retained by its handle) until `close()` or loop shutdown.
public final class UDPSocket {
    public let loop: Loop
    private let handle: UnsafeMutablePointer<uv_udp_t>
    private var onMessage: (([UInt8], SocketAddress) -> Void)?
    private var isCloseRequested = false

    /// Bytes handed to libuv's send queue and not yet sent. Datagrams beyond the limit are dropped
    /// (UDP may drop anyway); 4 MiB is far above a gossip burst, not a measured figure.
    public private(set) var queuedSendBytes = 0
    public var maxQueuedSendBytes = 4 << 20
    /// Datagrams not sent: bad address, socket error or queue full.
    public private(set) var sendErrorCount = 0
    /// Receive errors and truncated datagrams.
    public private(set) var receiveErrorCount = 0

    private init(loop: Loop, handle: UnsafeMutablePointer<uv_udp_t>, onMessage: @escaping ([UInt8], SocketAddress) -> Void) {
        self.loop = loop
        self.handle = handle
        self.onMessage = onMessage
    }

    /// Binds and starts receiving. Port 0 picks a free port (see `localPort`).
    public static func bind(on loop: Loop, host: String, port: Int,
                            onMessage: @escaping ([UInt8], SocketAddress) -> Void) throws(LoopError) -> UDPSocket {
        loop.assertInLoopThread()
        let operation = "bind udp \(SocketAddress(host: host, port: port))"
        if loop.isShuttingDown {
            throw LoopError(UV_ECANCELED, operation: operation)
        }
        let address = try ResolvedAddress(host: host, port: port, operation: operation)
        let handle = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
        let initStatus = uv_udp_init(loop.uvLoop, handle)
        guard initStatus == 0 else {
            handle.deallocate()
            throw LoopError(code: initStatus, operation: operation)
        }
        let socket = UDPSocket(loop: loop, handle: handle, onMessage: onMessage)
        attach(socket, to: handle)
        var status = address.withSockaddr { uv_udp_bind(handle, $0, 0) }
        if status == 0 {
            status = uv_udp_recv_start(handle, loopReadBufferAllocator) { handle, count, _, address, flags in
                guard let handle else { return }
                owner(of: asHandle(handle), as: UDPSocket.self).didReceive(count: count, from: address, flags: flags)
            }
        }
        guard status == 0 else {
            socket.close()
            throw LoopError(code: status, operation: operation)
        }
        return socket
    }

    public var localPort: Int {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return 0 }
        return ResolvedAddress.read { uv_udp_getsockname(handle, $0, $1) }?.port ?? 0
    }

    private func didReceive(count: Int, from address: UnsafePointer<sockaddr>?, flags: UInt32) {
        guard !isCloseRequested else { return }
        if count < 0 {
            receiveErrorCount += 1
            loop.logger.debug("udp receive failed", metadata: ["error": "\(LoopError(code: Int32(count), operation: "udp receive"))"])
            return
        }
        // count == 0 with no address: libuv's "nothing more to read"; with an address: an empty datagram.
        guard let address, let sender = ResolvedAddress.decode(address) else { return }
        if flags & UInt32(UV_UDP_PARTIAL.rawValue) != 0 {
            receiveErrorCount += 1
            loop.logger.debug("udp datagram truncated, dropped", metadata: ["peer": "\(sender)"])
            return
        }
        let bytes = Array(UnsafeRawBufferPointer(start: loop.readBuffer.baseAddress, count: count))
        onMessage?(bytes, sender)
    }

    /// Sends one datagram. Never throws: failures are counted in `sendErrorCount` and logged at debug.
    public func send(_ bytes: [UInt8], to destination: SocketAddress) {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        let operation = "udp send to \(destination)"
        let address: ResolvedAddress
        do {
            address = try ResolvedAddress(host: destination.host, port: destination.port, operation: operation)
        } catch {
            recordSendFailure(error)
            return
        }
        // Direct send first: no allocation. EAGAIN means the socket (or libuv's queue) is busy.
        let sent = bytes.withUnsafeBytes { raw -> Int32 in
            var buffer = uv_buf_init(UnsafeMutablePointer(mutating: raw.baseAddress?.assumingMemoryBound(to: CChar.self)),
                                     UInt32(raw.count))
            return address.withSockaddr { uv_udp_try_send(handle, &buffer, 1, $0) }
        }
        if sent >= 0 { return }
        guard sent == UV_EAGAIN.rawValue else {
            recordSendFailure(LoopError(code: sent, operation: operation))
            return
        }
        guard queuedSendBytes + bytes.count <= maxQueuedSendBytes else {
            recordSendFailure(LoopError(UV_ENOBUFS, operation: operation))
            return
        }
        let request = DatagramRequest(socket: self, bytes: bytes)
        let status = address.withSockaddr { request.submit(on: handle, to: $0) }
        if status == 0 {
            queuedSendBytes += bytes.count
        } else {
            request.free()
            recordSendFailure(LoopError(code: status, operation: operation))
        }
    }

    fileprivate func sendFinished(byteCount: Int, status: Int32) {
        queuedSendBytes -= byteCount
        if status < 0 && status != UV_ECANCELED.rawValue {
            recordSendFailure(LoopError(code: status, operation: "udp send"))
        }
    }

    private func recordSendFailure(_ error: LoopError) {
        sendErrorCount += 1
        loop.logger.debug("udp send failed", metadata: ["error": "\(error)"])
    }

    /// Stops receiving and closes the socket; queued datagrams are cancelled.
    public func close() {
        loop.assertInLoopThread()
        guard !isCloseRequested else { return }
        isCloseRequested = true
        closeHandle(handle)
    }
}

extension UDPSocket: LoopHandleOwner {
    func closeForShutdown() { close() }
    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>) { onMessage = nil }
}

/// One queued uv_udp_send; owns a copy of the datagram until libuv calls back.
private final class DatagramRequest {
    let socket: UDPSocket
    private let payload: UnsafeMutableRawBufferPointer
    private let request = UnsafeMutablePointer<uv_udp_send_t>.allocate(capacity: 1)

    init(socket: UDPSocket, bytes: [UInt8]) {
        self.socket = socket
        payload = .allocate(byteCount: max(bytes.count, 1), alignment: 1)
        payload.copyBytes(from: bytes)
        byteCount = bytes.count
    }

    let byteCount: Int

    func submit(on handle: UnsafeMutablePointer<uv_udp_t>, to address: UnsafePointer<sockaddr>) -> Int32 {
        let retained = Unmanaged.passRetained(self)
        request.pointee.data = retained.toOpaque()
        var buffer = uv_buf_init(payload.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(byteCount))
        let status = uv_udp_send(request, handle, &buffer, 1, address) { request, status in
            guard let request else { return }
            let send = Unmanaged<DatagramRequest>.fromOpaque(request.pointee.data).takeRetainedValue()
            send.socket.sendFinished(byteCount: send.byteCount, status: status)
            send.free()
        }
        if status != 0 {
            retained.release()
        }
        return status
    }

    func free() {
        payload.deallocate()
        request.deallocate()
    }
}
