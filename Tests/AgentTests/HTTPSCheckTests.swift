// HTTPS health checks against local TLS servers on 127.0.0.1 with a self-signed certificate made
// at test time: status mapping with TLSSkipVerify, verification failures in Go's words, and
// servers that are not TLS or hang up mid-handshake.
import Dispatch
import EventLoop
import Foundation
import Testing
import TLS
@testable import Agent

/// TLS servers on their own loop. `port`: HTTPS (/ok 200 "hello", /busy 429, /fail 500);
/// `garbagePort`: answers the ClientHello with plain HTTP; `hangUpPort`: closes after the ClientHello;
/// `silentPort`: accepts and never answers.
final class TLSCheckTargetServer: @unchecked Sendable {
    let loop: Loop
    private(set) var port = 0
    private(set) var garbagePort = 0
    private(set) var hangUpPort = 0
    private(set) var silentPort = 0
    private var listeners: [TCPListener] = []  // loop thread only

    init() throws {
        let identity = try TLSIdentity(selfSignedCommonName: "localhost", subjectAltNames: "DNS:localhost,IP:127.0.0.1")
        let context = try TLSContext.server(identity: identity)
        loop = try Loop(name: "tls-check-target")
        loop.start()
        let ready = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            listeners = [
                try? TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { tcp in
                    TLSConnection.server(over: tcp, context: context) { result in
                        guard case .success(let tls) = result else { return }
                        var request: [UInt8] = []
                        tls.onRead = { [unowned tls] bytes in
                            request += bytes
                            guard request.count < 64 * 1024 else { tls.closeNow(); return }
                            guard let text = String(bytes: request, encoding: .utf8), text.contains("\r\n\r\n") else { return }
                            let path = text.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
                            let (status, reason, body) = path == "/ok" ? (200, "OK", "hello")
                                : path == "/busy" ? (429, "Too Many Requests", "slow down") : (500, "Internal Server Error", "broken")
                            tls.write(Array("HTTP/1.1 \(status) \(reason)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8))
                            tls.close()
                        }
                    }
                },
                try? TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { tcp in
                    tcp.onRead = { [unowned tcp] _ in
                        tcp.write(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8))
                        tcp.close()
                    }
                    tcp.startReading()
                },
                try? TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { tcp in
                    tcp.onRead = { [unowned tcp] _ in tcp.close() }
                    tcp.startReading()
                },
                try? TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { tcp in
                    tcp.onRead = { _ in }
                    tcp.startReading()
                },
            ].compactMap { $0 }
            if listeners.count == 4 {
                (port, garbagePort, hangUpPort, silentPort) = (listeners[0].localPort, listeners[1].localPort,
                                                               listeners[2].localPort, listeners[3].localPort)
            }
            ready.signal()
        }
        ready.wait()
        try #require(port > 0 && garbagePort > 0 && hangUpPort > 0 && silentPort > 0)
    }

    func stop() { loop.shutdown() }
}

@Suite("HTTPS health checks")
struct HTTPSCheckTests {
    func fastAgent() throws -> TestAgent {
        try TestAgent {
            $0.minimumCheckIntervalMilliseconds = 0
            $0.minimumDeregisterCriticalMilliseconds = 0
        }
    }

    /// Waits until the check's output satisfies `condition`; returns the check.
    func waitForOutput(_ agent: TestAgent, _ id: String, _ condition: @escaping (String) -> Bool) throws -> [String: Any] {
        var last: [String: Any]?
        let ok = try eventually {
            last = try agent.check(id)
            return condition(last?["Output"] as? String ?? "")
        }
        #expect(ok, "check \(id) never produced the expected output; last: \(String(describing: last))")
        return last ?? [:]
    }

    @Test func httpsWithSkipVerifyMapsStatusCodes() throws {
        let target = try TLSCheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        let base = "https://127.0.0.1:\(target.port)"
        for (name, path) in [("ok", "/ok"), ("busy", "/busy"), ("fail", "/fail")] {
            let body = #"{"Name":"\#(name)","HTTP":"\#(base)\#(path)","TLSSkipVerify":true,"Interval":"200ms","Timeout":"5s"}"#
            #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        }
        let ok = try waitForOutput(agent, "ok") { $0.contains("200") }
        #expect(ok["Output"] as? String == "HTTP GET \(base)/ok: 200 OK Output: hello")
        #expect(ok["Status"] as? String == "passing")
        let busy = try waitForOutput(agent, "busy") { $0.contains("429") }
        #expect(busy["Output"] as? String == "HTTP GET \(base)/busy: 429 Too Many Requests Output: slow down")
        #expect(busy["Status"] as? String == "warning")
        let fail = try waitForOutput(agent, "fail") { $0.contains("500") }
        #expect(fail["Output"] as? String == "HTTP GET \(base)/fail: 500 Internal Server Error Output: broken")
        #expect(fail["Status"] as? String == "critical")
        let definition = try #require(ok["Definition"] as? [String: Any])
        #expect(definition["TLSSkipVerify"] as? Bool == true)
    }

    @Test func selfSignedCertificateFailsVerificationByDefault() throws {
        let target = try TLSCheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        let url = "https://127.0.0.1:\(target.port)/ok"
        let body = #"{"Name":"strict","HTTP":"\#(url)","Interval":"200ms","Timeout":"5s","Status":"passing"}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        let check = try waitForOutput(agent, "strict") { $0.contains("x509") }
        #expect(check["Output"] as? String == #"Get "\#(url)": tls: failed to verify certificate: x509: certificate signed by unknown authority"#)
        #expect(check["Status"] as? String == "critical")
    }

    @Test func tlsServerNameIsAcceptedAndShown() throws {
        let target = try TLSCheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        let url = "https://127.0.0.1:\(target.port)/ok"
        let body = #"{"Name":"named","HTTP":"\#(url)","TLSServerName":"localhost","TLSSkipVerify":true,"Interval":"200ms"}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        let check = try waitForOutput(agent, "named") { $0.contains("200") }
        #expect(check["Status"] as? String == "passing")
        let definition = try #require(check["Definition"] as? [String: Any])
        #expect(definition["TLSServerName"] as? String == "localhost")
        // Config-file spelling decodes to the same definition.
        let fromFile = try LocalDefinitions.check(from: ["name": "f", "http": url, "interval": "1s",
                                                         "tls_server_name": "svc.internal", "tls_skip_verify": true],
                                                  requireName: true)
        #expect(fromFile.tlsServerName == "svc.internal")
        #expect(fromFile.kind == .http(url: url, method: "GET", header: [:], body: "", tlsSkipVerify: true))
    }

    /// What the data dir keeps (the register JSON) reads back to the same HTTPS definition.
    @Test func httpsDefinitionsSurviveThePersistedForm() throws {
        let original = try LocalDefinitions.check(from: ["Name": "p", "HTTP": "https://svc:8443/h", "Interval": "2s",
                                                         "TLSSkipVerify": true, "TLSServerName": "svc.internal"],
                                                  requireName: true)
        let json = LocalDefinitions.registerJSON(original)
        #expect(json["TLSServerName"] as? String == "svc.internal")
        let decoded = try LocalDefinitions.check(from: json, requireName: true)
        #expect(decoded == original)
    }

    @Test func serversThatAreNotTLSOrHangUpAreCritical() throws {
        let target = try TLSCheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        let garbage = "https://127.0.0.1:\(target.garbagePort)/"
        let hangUp = "https://127.0.0.1:\(target.hangUpPort)/"
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"garbage","HTTP":"\#(garbage)","TLSSkipVerify":true,"Interval":"200ms","Status":"passing"}"#).status == 200)
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"hangup","HTTP":"\#(hangUp)","TLSSkipVerify":true,"Interval":"200ms","Status":"passing"}"#).status == 200)
        let g = try waitForOutput(agent, "garbage") { $0.hasPrefix("Get ") }
        #expect(g["Output"] as? String == #"Get "\#(garbage)": tls: first record does not look like a TLS handshake"#)
        #expect(g["Status"] as? String == "critical")
        let h = try waitForOutput(agent, "hangup") { $0.hasPrefix("Get ") }
        #expect((h["Output"] as? String ?? "").hasPrefix(#"Get "\#(hangUp)": "#))
        #expect(h["Status"] as? String == "critical")
        // A server that never answers the ClientHello: the check's timeout ends it.
        let silent = "https://127.0.0.1:\(target.silentPort)/"
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"silent","HTTP":"\#(silent)","Interval":"200ms","Timeout":"300ms","Status":"passing"}"#).status == 200)
        let s = try waitForOutput(agent, "silent") { $0.hasPrefix("Get ") }
        #expect(s["Output"] as? String == #"Get "\#(silent)": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"#)
        #expect(s["Status"] as? String == "critical")
        // The agent keeps serving after all of them.
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"after","TTL":"10s"}"#).status == 200)
    }
}
