// Health check runners against real local servers: HTTP status mapping and output, TCP
// connects, script exit codes, TTL expiry, thresholds and DeregisterCriticalServiceAfter.
import Dispatch
import EventLoop
import Foundation
import HTTP
import Logging
import Testing
@testable import Agent

/// An HTTP server on its own loop: /ok 200 "hello", /busy 429, /fail 500, /slow never answers,
/// /big 200 with a 10 000-byte body, anything else 404.
final class CheckTargetServer: @unchecked Sendable {
    let loop: Loop
    private(set) var port = 0
    private var server: HTTPServer?
    private var parked: [HTTPResponder] = []  // loop thread only

    init() throws {
        loop = try Loop(name: "check-target")
        loop.start()
        let ready = DispatchSemaphore(value: 0)
        let box = ServerBox()
        loop.execute { [self] in
            var logger = Logger(label: "check-target")
            logger.logLevel = .error
            box.server = try? HTTPServer(loop: self.loop, host: "127.0.0.1", port: 0, logger: logger) { responder in
                switch responder.request.path {
                case "/ok": responder.respond(.text(status: 200, "hello"))
                case "/busy": responder.respond(.text(status: 429, "slow down"))
                case "/fail": responder.respond(.text(status: 500, "broken"))
                case "/big": responder.respond(.text(status: 200, String(repeating: "b", count: 10_000)))
                case "/slow": self.parked.append(responder)
                default: responder.respond(.text(status: 404, "no"))
                }
            }
            box.port = box.server?.localPort ?? 0
            ready.signal()
        }
        ready.wait()
        server = box.server
        port = box.port
    }

    func stop() { loop.shutdown() }
}

private final class ServerBox: @unchecked Sendable { var server: HTTPServer?; var port = 0 }

@Suite("Health check runners")
struct CheckRunnerTests {
    /// An agent with Consul's floors (1 s interval, 1 min DeregisterCriticalServiceAfter, 30 s
    /// reaper) lowered so the runners can be observed in a fraction of a second.
    func fastAgent(scripts: Bool = false) throws -> TestAgent {
        try TestAgent {
            $0.minimumCheckIntervalMilliseconds = 0
            $0.minimumDeregisterCriticalMilliseconds = 0
            $0.criticalReapIntervalMilliseconds = 100
            $0.enableScriptChecks = scripts
        }
    }

    func waitForStatus(_ agent: TestAgent, _ id: String, _ status: String, seconds: Double = 20) throws -> [String: Any] {
        var last: [String: Any]?
        let ok = try eventually(seconds) {
            last = try agent.check(id)
            return last?["Status"] as? String == status
        }
        #expect(ok, "check \(id) never became \(status); last: \(String(describing: last))")
        return last ?? [:]
    }

    @Test func httpChecksMapStatusCodesLikeConsul() throws {
        let target = try CheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        let base = "http://127.0.0.1:\(target.port)"
        for (name, path) in [("ok", "/ok"), ("busy", "/busy"), ("fail", "/fail"), ("big", "/big")] {
            let body = #"{"Name":"\#(name)","HTTP":"\#(base)\#(path)","Interval":"200ms","Timeout":"2s"}"#
            #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        }
        let ok = try waitForStatus(agent, "ok", "passing")
        #expect(ok["Output"] as? String == "HTTP GET \(base)/ok: 200 OK Output: hello")
        #expect(ok["Type"] as? String == "http")
        let busy = try waitForStatus(agent, "busy", "warning")
        #expect(busy["Output"] as? String == "HTTP GET \(base)/busy: 429 Too Many Requests Output: slow down")
        // 500 stays critical (the initial status): wait for the output to show a probe ran.
        #expect(try eventually { (try agent.check("fail")?["Output"] as? String ?? "").contains("500") })
        #expect(try agent.check("fail")?["Status"] as? String == "critical")
        #expect(try agent.check("fail")?["Output"] as? String == "HTTP GET \(base)/fail: 500 Internal Server Error Output: broken")
        let big = try waitForStatus(agent, "big", "passing")
        let output = try #require(big["Output"] as? String)
        #expect(output.utf8.count == "HTTP GET \(base)/big: 200 OK Output: ".utf8.count + 4096)
    }

    @Test func httpCheckMethodHeadersAndBodyAreSent() {
        let request = CheckProbes.requestBytes(target: CheckURL(host: "127.0.0.1", port: 81, pathAndQuery: "/h?x=1"),
                                               method: "POST", header: ["X-Token": ["a", "b"], "Bad\r\nName": ["v"]], body: "ping")
        let text = String(decoding: request, as: UTF8.self)
        #expect(text.hasPrefix("POST /h?x=1 HTTP/1.1\r\n"))
        #expect(text.contains("X-Token: a\r\nX-Token: b\r\n"))
        #expect(text.contains("BadName: v\r\n"))
        #expect(text.contains("Host: 127.0.0.1:81\r\n"))
        #expect(text.contains("User-Agent: Consul Health Check\r\n"))
        #expect(text.hasSuffix("Content-Length: 4\r\n\r\nping"))
    }

    @Test(arguments: [
        ("http://127.0.0.1:8080/health?x=1", CheckURL(host: "127.0.0.1", port: 8080, pathAndQuery: "/health?x=1")),
        ("http://localhost", CheckURL(host: "localhost", port: 80, pathAndQuery: "/")),
        ("http://[::1]:9/a", CheckURL(host: "::1", port: 9, pathAndQuery: "/a")),
        ("HTTP://h:1?q", CheckURL(host: "h", port: 1, pathAndQuery: "/?q")),
    ])
    func checkURLsParse(text: String, expected: CheckURL) throws {
        #expect(try CheckURL.parse(text).get() == expected)
    }

    @Test func httpsAndBadURLsAreReportedNotCrashed() throws {
        #expect(try CheckURL.parse("https://x/").get() == CheckURL(host: "x", port: 443, pathAndQuery: "/", isTLS: true))
        #expect(try CheckURL.parse("HTTPS://[::1]:8443?q").get() == CheckURL(host: "::1", port: 8443, pathAndQuery: "/?q", isTLS: true))
        #expect((try? CheckURL.parse("ftp://x/").get()) == nil)
        #expect((try? CheckURL.parse("http://x:99999/").get()) == nil)
        #expect((try? CheckURL.parse("http://:80/").get()) == nil)
    }

    @Test func httpCheckAgainstAClosedPortIsCriticalWithGosWording() throws {
        let agent = try fastAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"down","HTTP":"http://127.0.0.1:1/","Interval":"200ms","Status":"passing"}"#).status == 200)
        let check = try waitForStatus(agent, "down", "critical")
        #expect(check["Output"] as? String == #"Get "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused"#)
    }

    @Test func httpCheckThatNeverAnswersTimesOut() throws {
        let target = try CheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        let body = #"{"Name":"slow","HTTP":"http://127.0.0.1:\#(target.port)/slow","Interval":"1s","Timeout":"300ms","Status":"passing"}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        let check = try waitForStatus(agent, "slow", "critical")
        #expect((check["Output"] as? String ?? "").contains("context deadline exceeded"))
    }

    @Test func tcpChecksPassOnConnectAndFailOnAClosedPort() throws {
        let target = try CheckTargetServer()
        defer { target.stop() }
        let agent = try fastAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"up","TCP":"127.0.0.1:\#(target.port)","Interval":"200ms"}"#).status == 200)
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"closed","TCP":"127.0.0.1:1","Interval":"200ms","Status":"passing"}"#).status == 200)
        let up = try waitForStatus(agent, "up", "passing")
        #expect(up["Output"] as? String == "TCP connect 127.0.0.1:\(target.port): Success")
        #expect(up["Type"] as? String == "tcp")
        let closed = try waitForStatus(agent, "closed", "critical")
        #expect(closed["Output"] as? String == "dial tcp 127.0.0.1:1: connect: connection refused")
    }

    @Test func scriptChecksMapExitCodes() throws {
        let agent = try fastAgent(scripts: true)
        defer { agent.stop() }
        let scripts = [("zero", "echo fine; exit 0"), ("one", "echo meh >&2; exit 1"), ("two", "exit 2")]
        for (name, script) in scripts {
            let body = #"{"Name":"\#(name)","Args":["/bin/sh","-c","\#(script)"],"Interval":"200ms","Status":"\#(name == "two" ? "passing" : "critical")"}"#
            #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        }
        #expect(try waitForStatus(agent, "zero", "passing")["Output"] as? String == "fine\n")
        #expect(try waitForStatus(agent, "one", "warning")["Output"] as? String == "meh\n")
        #expect(try waitForStatus(agent, "two", "critical")["Type"] as? String == "script")
    }

    @Test func scriptChecksPastTheirTimeoutAreKilledAndCritical() throws {
        let agent = try fastAgent(scripts: true)
        defer { agent.stop() }
        let body = #"{"Name":"hang","Args":["sleep","30"],"Interval":"1s","Timeout":"300ms","Status":"passing"}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        #expect(try waitForStatus(agent, "hang", "critical")["Output"] as? String == "Timed out (300ms) running check")
    }

    @Test func aScriptThatLeavesAChildHoldingItsOutputStillReports() throws {
        let agent = try fastAgent(scripts: true)
        defer { agent.stop() }
        let body = #"{"Name":"bg","Args":["/bin/sh","-c","sleep 3 & echo started; exit 1"],"Interval":"1s","Timeout":"5s"}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        let check = try waitForStatus(agent, "bg", "warning", seconds: 10)
        #expect(check["Output"] as? String == "started\n")
    }

    @Test func deregisteringACheckKillsItsRunningScript() throws {
        let agent = try fastAgent(scripts: true)
        defer { agent.stop() }
        let pidFile = NSTemporaryDirectory() + "/conclave-script-pid-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let body = #"{"Name":"long","Args":["/bin/sh","-c","echo $$ > \#(pidFile); exec sleep 30"],"Interval":"1m","Timeout":"1m"}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        var pid: pid_t = 0
        #expect(eventually(10) {
            pid = pid_t((try? String(contentsOfFile: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
            return pid > 0
        })
        #expect(kill(pid, 0) == 0)
        #expect(try agent.request("PUT", "/v1/agent/check/deregister/long").status == 200)
        // Killed and reaped by the agent: the pid no longer exists.
        #expect(eventually(10) { kill(pid, 0) != 0 })
    }

    @Test func ttlCheckExpiresToCriticalWithConsulsOutput() throws {
        let agent = try fastAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"beat","TTL":"400ms"}"#).status == 200)
        #expect(try agent.request("PUT", "/v1/agent/check/pass/beat").status == 200)
        #expect(try agent.check("beat")?["Status"] as? String == "passing")
        let expired = try waitForStatus(agent, "beat", "critical")
        #expect(expired["Output"] as? String == "TTL expired")
    }

    @Test func thresholdsHoldStatusUntilEnoughResultsInARow() throws {
        let loop = try Loop(name: "threshold-test")
        var reported: [CheckStatus] = []
        var definition = CheckDefinition(id: "c", name: "c", kind: .tcp(address: "127.0.0.1:1"))
        definition.successBeforePassing = 2
        definition.failuresBeforeCritical = 3
        let monitor = CheckMonitor(loop: loop, definition: definition) { status, _ in reported.append(status) }
        // results in, status recorded (nil: held back)
        let table: [(CheckStatus, CheckStatus?)] = [
            (.passing, nil), (.passing, .passing), (.critical, nil), (.critical, nil), (.critical, .critical),
            (.passing, nil), (.critical, nil), (.warning, nil), (.warning, .warning), (.critical, nil),
        ]
        for (index, (result, expected)) in table.enumerated() {
            let before = reported.count
            monitor.record(result, "")
            #expect(reported.count == before + (expected == nil ? 0 : 1), "step \(index)")
            if let expected { #expect(reported.last == expected, "step \(index)") }
        }
        loop.shutdown()
    }

    @Test func serviceCriticalLongerThanDeregisterCriticalServiceAfterIsRemoved() throws {
        let agent = try fastAgent()
        defer { agent.stop() }
        let body = #"{"Name":"flaky","Check":{"TTL":"200ms","DeregisterCriticalServiceAfter":"300ms"}}"#
        #expect(try agent.put("/v1/agent/service/register", body).status == 200)
        #expect(try agent.put("/v1/agent/service/register", #"{"Name":"steady"}"#).status == 200)
        #expect(try eventually { try agent.services()["flaky"] == nil })
        #expect(try agent.services().keys.sorted() == ["steady"])
        #expect(try agent.check("service:flaky") == nil)
    }

    @Test func outputTruncationKeepsUTF8Whole() {
        let text = String(repeating: "é", count: 3000)  // 2 bytes each
        let out = truncatedCheckOutput(Array(text.utf8))
        #expect(out.hasSuffix(" ... (captured 4096 of 6000 bytes)"))
        #expect(!out.contains("\u{FFFD}"))
    }
}

@Suite("Health check runners: names")
struct CheckRunnerNameTests {
    @Test func tcpAndHTTPChecksResolveHostNames() throws {
        let target = try CheckTargetServer()
        defer { target.stop() }
        let agent = try TestAgent { $0.minimumCheckIntervalMilliseconds = 0 }
        defer { agent.stop() }
        // "localhost" connects on the loop; other names resolve off the loop (getaddrinfo) and
        // report Go's lookup error when they do not resolve.
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"lh","HTTP":"http://localhost:\#(target.port)/ok","Interval":"200ms"}"#).status == 200)
        #expect(try eventually { try agent.check("lh")?["Status"] as? String == "passing" })
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"bad","TCP":"no-such-host.invalid:80","Interval":"200ms","Status":"passing"}"#).status == 200)
        #expect(try eventually { try agent.check("bad")?["Status"] as? String == "critical" })
        #expect(try agent.check("bad")?["Output"] as? String == "dial tcp: lookup no-such-host.invalid: no such host")
    }
}
