// A CatalogCall that sends anti-entropy's requests to an HTTP API on the loop (non-blocking):
// pointed at this agent's own HTTP port, requests take the same route as any client's (served
// on a server, forwarded by a client agent once forwarding exists). Offered for the wiring;
// nothing calls it until the catalog endpoints exist.
import EventLoop
import HTTP

enum LoopbackCatalogCall {
    /// Largest catalog answer read (a node's services and checks).
    static let maxResponseBytes = 16 << 20
    static let timeoutMilliseconds: UInt64 = 30_000

    static func make(loop: Loop, host: String = "127.0.0.1", port: @escaping () -> Int) -> CatalogCall {
        return { method, pathAndQuery, body, completion in
            send(loop: loop, host: host, port: port(), method: method, pathAndQuery: pathAndQuery, body: body, completion: completion)
        }
    }

    /// One request on its own connection; `completion` runs once on the loop with the status
    /// and body, or status 0 and the reason when no response came.
    static func send(loop: Loop, host: String, port: Int, method: String, pathAndQuery: String, body: [UInt8],
                     completion: @escaping (Int, [UInt8]) -> Void) {
        var done = false
        func finish(_ status: Int, _ bytes: [UInt8]) {
            guard !done else { return }
            done = true
            completion(status, bytes)
        }
        let timer = LoopTimer(loop: loop)
        var open: TCPConnection?
        timer.start(afterMilliseconds: timeoutMilliseconds) {
            timer.close()
            open?.closeNow()
            finish(0, Array("timed out".utf8))
        }
        TCPConnection.connect(on: loop, host: host, port: port) { result in
            guard case .success(let connection) = result else {
                timer.close()
                if case .failure(let error) = result { finish(0, Array("\(error)".utf8)) }
                return
            }
            guard !done else { connection.closeNow(); return }
            open = connection
            let decoder = HTTPResponseDecoder(maxBodyBytes: maxResponseBytes)
            func handle(_ outcome: HTTPResponseDecoder.Outcome) {
                switch outcome {
                case .needMore: return
                case .response(let response, _):
                    timer.close()
                    connection.closeNow()
                    finish(response.status, response.body)
                case .failed(let message):
                    timer.close()
                    connection.closeNow()
                    finish(0, Array(message.utf8))
                }
            }
            connection.onRead = { bytes in handle(bytes.withUnsafeBytes { decoder.feed($0) }) }
            connection.onClose = { _ in
                timer.close()
                if !done { handle(decoder.feedEOF()) }
            }
            connection.startReading()
            var head = "\(method) \(pathAndQuery) HTTP/1.1\r\nHost: \(host):\(port)\r\nUser-Agent: conclave-anti-entropy\r\n"
            head += "Content-Type: application/json\r\nConnection: close\r\nContent-Length: \(body.count)\r\n\r\n"
            connection.write(Array(head.utf8) + body)
        }
    }
}
