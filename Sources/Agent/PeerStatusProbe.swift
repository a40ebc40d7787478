// One-shot `GET /v1/status/peers` to another server over the client-RPC stream of its server
// port (RPCWire.swift). A -bootstrap-expect server asks every expected server before it
// bootstraps, as Consul's maybeBootstrap asks each one for its Raft peers: a server that
// already has peers belongs to a cluster, and bootstrapping would start a second one.
import EventLoop
import Foundation
import Gossip
import HTTP
import Replication

enum PeerStatusProbe {
    enum Outcome: Equatable {
        /// The server's voters ("host:port"); empty when it has no Raft configuration yet.
        case peers([String])
        /// No usable answer (connect error, timeout, closed, bad frame, non-200, bad JSON).
        case failed(String)
    }

    /// Connects to `address` ("host:serverPort"), asks once, closes. `completion` runs exactly
    /// once, on the loop thread, within about `timeoutMilliseconds`.
    static func query(loop: Loop, address: String, timeoutMilliseconds: UInt64,
                      completion: @escaping (Outcome) -> Void) {
        loop.assertInLoopThread()
        guard let (host, port) = parseHostPort(address) else {
            completion(.failed("bad server address \(address)"))
            return
        }
        let probe = Probe(completion: completion)
        let timer = LoopTimer(loop: loop)
        probe.timer = timer
        timer.start(afterMilliseconds: timeoutMilliseconds) { [probe] in
            probe.finish(.failed("no answer from \(address) within \(timeoutMilliseconds) ms"))
        }
        TCPConnection.connect(on: loop, host: host, port: port) { [probe] result in
            switch result {
            case .failure(let error):
                probe.finish(.failed("connect \(address): \(error)"))
            case .success(let tcp):
                guard !probe.done else { tcp.closeNow(); return }
                probe.connected(tcp, address: address)
            }
        }
    }

    /// Loop-confined; owns the connection and the timer until `finish`.
    private final class Probe {
        private let completion: (Outcome) -> Void
        var timer: LoopTimer?
        private var tcp: TCPConnection?
        private var decoder = FrameDecoder(maxFrameBytes: RPCWire.maxResponseFrameBytes)
        private(set) var done = false
        private static let requestID: UInt64 = 1

        init(completion: @escaping (Outcome) -> Void) { self.completion = completion }

        func connected(_ tcp: TCPConnection, address: String) {
            self.tcp = tcp
            // The probe keeps itself alive through these closures until `finish` clears them.
            tcp.onRead = { [self] bytes in received(bytes) }
            tcp.onClose = { [self] error in
                finish(.failed("connection to \(address) closed: \(error.map { "\($0)" } ?? "EOF")"))
            }
            tcp.startReading()
            let request = RPCRequest(id: Self.requestID, method: "GET", target: "/v1/status/peers",
                                     headers: HTTPHeaders(), body: [])
            do {
                tcp.write(Framing.frame(RPCWire.hello()) + Framing.frame(try RPCWire.encode(request)))
            } catch {
                finish(.failed("encoding the request: \(error)"))
            }
        }

        private func received(_ bytes: [UInt8]) {
            decoder.feed(bytes)
            while !done {
                let payload: [UInt8]
                do throws(FrameError) {
                    guard let next = try decoder.next() else { return }
                    payload = next
                } catch {
                    finish(.failed("rpc error: \(error)"))
                    return
                }
                guard case .response(let response)? = try? RPCWire.decode(payload),
                      response.id == Self.requestID else {
                    finish(.failed("rpc error: unexpected frame from the server"))
                    return
                }
                guard response.status == 200 else {
                    finish(.failed("status \(response.status): \(String(decoding: response.body, as: UTF8.self))"))
                    return
                }
                guard let peers = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String] else {
                    finish(.failed("the answer is not a JSON list of addresses"))
                    return
                }
                finish(.peers(peers))
            }
        }

        func finish(_ outcome: Outcome) {
            guard !done else { return }
            done = true
            timer?.close()
            timer = nil
            if let tcp {
                tcp.onRead = nil
                tcp.onClose = nil
                tcp.closeNow()
                self.tcp = nil
            }
            completion(outcome)
        }
    }
}
