// The load generator's pure parts: option validation, the response parser (incl. every split
// point and random garbage), request encoding for Conclave and etcd's gateway, report rendering
// and the JSON shape. Run with `cd Benchmarks && swift test --filter ConclaveBenchKitTests`.
import ArgumentParser
import Foundation
import Testing
import ConclaveBenchKit

@Suite("conclave-bench options")
struct OptionsTests {
    private func parse(_ arguments: [String]) throws -> BenchCommand {
        try BenchCommand.parse(arguments)  // parse() also runs validate()
    }

    @Test func defaultsAndListsParse() throws {
        let command = try parse(["--servers", "3", "--workload", "put, get", "--connections", "1,16,64"])
        #expect(command.workloads == [.put, .get])
        #expect(command.connectionCounts == [1, 16, 64])
        #expect(command.consistencyMode == .default)
        #expect(command.valueSize == 256)
        #expect(command.settings(system: .conclave, workload: .put, connections: 16, servers: 3).targeting == "leader")
        #expect(try parse(["--servers", "1", "--spread"]).settings(system: .etcd, workload: .get, connections: 1, servers: 1).targeting == "spread")
    }

    @Test func newScenariosAndWorkloadsParse() throws {
        let sweep = try parse(["--servers", "3", "--scenario", "sweep", "--sweep-inflight", "1,64", "--sweep-delay-ms", "0,5"])
        #expect(sweep.scenarioKind == .sweep)
        #expect(try parse(["--servers", "3", "--scenario", "large-kv", "--keys", "10000000"]).scenarioKind == .largeKV)
        #expect(try parse(["--servers", "3", "--workload", "catalog,health"]).workloads == [.catalog, .health])
    }

    @Test func sweepConfigFitsTheAgentsLimits() throws {
        let small = try #require(try JSONSerialization.jsonObject(with: Data(SweepConfig.json(inflight: 2, entries: 64, bytes: 262_144).utf8)) as? [String: Int])
        #expect(small == ["raft_max_inflight": 2, "raft_max_append_entries": 64, "raft_max_append_bytes": 262_144, "kv_max_value_size": 261_120])
        let large = try #require(try JSONSerialization.jsonObject(with: Data(SweepConfig.json(inflight: 8, entries: 512, bytes: 1 << 20).utf8)) as? [String: Int])
        #expect(large == ["raft_max_inflight": 8, "raft_max_append_entries": 512, "raft_max_append_bytes": 1 << 20])
    }

    @Test func targetsParse() throws {
        let command = try parse(["--target", "http://127.0.0.1:8500,localhost:8501"])
        #expect(command.targets == [Target(host: "127.0.0.1", port: 8500), Target(host: "localhost", port: 8501)])
    }

    @Test(arguments: [
        (["--workload", "put"], "--servers N"),
        (["--servers", "3", "--target", "http://127.0.0.1:8500"], "exclude"),
        (["--servers", "0"], "1...9"),
        (["--target", "https://127.0.0.1:8500"], "http://host:port"),
        (["--servers", "1", "--workload", "scan"], "Unknown workload"),
        (["--servers", "1", "--connections", "0"], "1...4096"),
        (["--servers", "1", "--connections", "a"], "1...4096"),
        (["--servers", "1", "--duration", "0"], "--duration"),
        (["--servers", "1", "--value-size", "600000"], "--value-size"),
        (["--servers", "1", "--consistency", "strong"], "--consistency"),
        (["--servers", "1", "--read-ratio", "1.5"], "--read-ratio"),
        (["--servers", "1", "--scenario", "chaos"], "--scenario"),
        (["--servers", "1", "--scenario", "failover"], "3 or more"),
        (["--servers", "3", "--scenario", "failover", "--failover-window", "5,4"], "--failover-window"),
        (["--target", "http://127.0.0.1:1", "--compare-etcd"], "--compare-etcd"),
        (["--servers", "1", "--compare-etcd", "--workload", "cas"], "put, get and mixed"),
        (["--servers", "1", "--compare-etcd", "--workload", "health"], "put, get and mixed"),
        (["--target", "http://127.0.0.1:1", "--scenario", "sweep"], "needs --servers"),
        (["--servers", "3", "--scenario", "sweep", "--sweep-inflight", "0,2"], "--sweep-inflight"),
        (["--servers", "3", "--scenario", "sweep", "--sweep-bytes", "1k"], "--sweep-bytes"),
        (["--servers", "3", "--scenario", "sweep", "--sweep-delay-ms", "20000"], "--sweep-delay-ms"),
        (["--servers", "1", "--scenario", "large-kv"], "3 or more"),
        (["--servers", "1", "--workload", "health", "--health-instances", "0"], "--health-instances"),
    ] as [([String], String)])
    func invalidOptionsAreRejectedWithAMessage(arguments: [String], expected: String) {
        do {
            _ = try parse(arguments)
            Issue.record("accepted \(arguments)")
        } catch {
            let message = BenchCommand.message(for: error)
            #expect(message.contains(expected), "\(arguments): \(message)")
        }
    }
}

@Suite("conclave-bench response parser")
struct ResponseParserTests {
    static let two = Array("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Consul-Index: 42\r\n\r\ntrue".utf8)
        + Array("HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nNo cl\r\n9\r\nuster lea\r\n3\r\nder\r\n0\r\n\r\n".utf8)

    @Test func parsesContentLengthAndChunkedResponses() throws {
        var parser = ResponseParser()
        let responses = try parser.feed(Self.two)
        #expect(responses.count == 2)
        #expect(responses[0] == ParsedResponse(status: 200, body: Array("true".utf8), keepAlive: true, consulIndex: 42))
        #expect(responses[1].status == 500)
        #expect(String(decoding: responses[1].body, as: UTF8.self) == "No cluster leader")
    }

    @Test func everySplitPointGivesTheSameResponses() throws {
        var whole = ResponseParser()
        let expected = try whole.feed(Self.two)
        for split in 0...Self.two.count {
            var parser = ResponseParser()
            let got = try parser.feed(Array(Self.two[..<split])) + parser.feed(Array(Self.two[split...]))
            #expect(got == expected, "split at \(split)")
        }
        var bytewise = ResponseParser()
        var got: [ParsedResponse] = []
        for byte in Self.two { got += try bytewise.feed([byte]) }
        #expect(got == expected)
    }

    @Test func connectionCloseAndNoBodyStatuses() throws {
        var parser = ResponseParser()
        let r = try parser.feed(Array("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n".utf8))
        #expect(r.map(\.status) == [204, 200])
        #expect(r.map(\.keepAlive) == [false, false])
    }

    @Test(arguments: [
        "HTTP/2 200\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until close",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
    ])
    func malformedResponsesAreErrors(text: String) {
        var parser = ResponseParser()
        #expect(throws: ResponseParseError.self) { _ = try parser.feed(Array(text.utf8)) }
    }

    @Test func randomAndMutatedBytesNeverCrash() {
        var rng = SplitMix(seed: 7)
        for round in 0..<3000 {
            var bytes = Self.two
            if round % 2 == 0 {
                bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                for _ in 0..<(1 + Int(rng.next() % 8)) {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1))))
            }
            var parser = ResponseParser()
            var offset = 0
            while offset < bytes.count {
                let n = 1 + Int(rng.next() % 40)
                do { _ = try parser.feed(Array(bytes[offset..<min(bytes.count, offset + n)])) } catch { break }
                offset += n
            }
        }
    }
}

@Suite("conclave-bench request encoding")
struct RequestEncodingTests {
    @Test func conclaveRequests() {
        let put = String(decoding: RequestEncoding.conclavePut(key: "bench/put/1/2", value: Array("abc".utf8), host: "127.0.0.1:8500"), as: UTF8.self)
        #expect(put == "PUT /v1/kv/bench/put/1/2 HTTP/1.1\r\nHost: 127.0.0.1:8500\r\nContent-Length: 3\r\n\r\nabc")
        let cas = String(decoding: RequestEncoding.conclavePut(key: "k", value: [], cas: 17, host: "h:1"), as: UTF8.self)
        #expect(cas.hasPrefix("PUT /v1/kv/k?cas=17 HTTP/1.1\r\n") && cas.hasSuffix("Content-Length: 0\r\n\r\n"))
        #expect(String(decoding: RequestEncoding.conclaveGet(key: "k", consistency: .stale, host: "h:1"), as: UTF8.self)
            == "GET /v1/kv/k?stale HTTP/1.1\r\nHost: h:1\r\n\r\n")
        #expect(String(decoding: RequestEncoding.conclaveGet(key: "k", consistency: .consistent, host: "h:1"), as: UTF8.self)
            .hasPrefix("GET /v1/kv/k?consistent "))
    }

    @Test func etcdGatewayRequestsCarryBase64JSON() throws {
        let put = RequestEncoding.etcdPut(key: "bench/k", value: Array("value".utf8), host: "127.0.0.1:2379")
        let text = String(decoding: put, as: UTF8.self)
        #expect(text.hasPrefix("POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\n"))
        let body = try #require(text.components(separatedBy: "\r\n\r\n").last)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: String])
        #expect(json == ["key": Data("bench/k".utf8).base64EncodedString(), "value": Data("value".utf8).base64EncodedString()])
        #expect(text.contains("Content-Length: \(body.utf8.count)\r\n"))

        for (mode, serializable) in [(Consistency.stale, true), (.default, false), (.consistent, false)] {
            let range = String(decoding: RequestEncoding.etcdRange(key: "k", consistency: mode, host: "h:1"), as: UTF8.self)
            #expect(range.hasPrefix("POST /v3/kv/range HTTP/1.1\r\n"))
            let rangeBody = try #require(range.components(separatedBy: "\r\n\r\n").last)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(rangeBody.utf8)) as? [String: Any])
            #expect(object["key"] as? String == "aw==")
            #expect((object["serializable"] as? Bool ?? false) == serializable)
        }
    }

    @Test func catalogAndHealthRequests() throws {
        let text = String(decoding: RequestEncoding.catalogRegister(node: "n1", service: "web", port: 80, host: "h:1"), as: UTF8.self)
        #expect(text.hasPrefix("PUT /v1/catalog/register HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n"))
        let body = try #require(text.components(separatedBy: "\r\n\r\n").last)
        #expect(text.contains("Content-Length: \(body.utf8.count)\r\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        #expect(object["Node"] as? String == "n1")
        let service = try #require(object["Service"] as? [String: Any])
        #expect(service["Service"] as? String == "web" && service["Port"] as? Int == 80)
        #expect(String(decoding: RequestEncoding.healthService("web", consistency: .stale, host: "h:1"), as: UTF8.self)
            == "GET /v1/health/service/web?stale HTTP/1.1\r\nHost: h:1\r\n\r\n")
    }

    @Test func modifyIndexIsReadFromAKVBody() {
        let body = Array(#"[{"LockIndex":0,"Key":"k","Flags":0,"Value":"dg==","CreateIndex":5,"ModifyIndex": 123}]"#.utf8)
        #expect(RequestEncoding.modifyIndex(in: body) == 123)
        #expect(RequestEncoding.modifyIndex(in: Array("[]".utf8)) == nil)
        #expect(RequestEncoding.modifyIndex(in: Array(#"{"ModifyIndex":}"#.utf8)) == nil)
    }

    @Test func valuesHaveTheRequestedSize() {
        #expect(RequestEncoding.value(size: 256).count == 256)
        #expect(RequestEncoding.value(size: 0).isEmpty)
        #expect(RequestEncoding.stamped(Array("abcdef".utf8), "1-2-") == Array("1-2-ef".utf8))
        #expect(RequestEncoding.stamped(Array("ab".utf8), "1-2-") == Array("1-".utf8))
    }
}

@Suite("conclave-bench report")
struct ReportTests {
    private func result(system: System, ops: Int, p50us: [UInt64]) -> RunResult {
        var histogram = makeLatencyHistogram()
        for v in p50us { _ = histogram.record(v) }
        let settings = RunSettings(system: system, workload: .get, connections: 16, durationSeconds: 2, requestCap: 0,
                                   valueSize: 256, consistency: .stale, readRatio: 0.9, keys: 100, servers: 3,
                                   targeting: "leader", clientLoops: 1, configFile: nil)
        return RunResult(settings: settings, startedAt: "2026-11-24T07:00:00Z", elapsedSeconds: 2, operations: ops,
                         latencyMs: LatencySummary(histogram: histogram), errors: ["status 500": 2, "connect: ECONNREFUSED": 1])
    }

    @Test func summaryComesFromTheHistogram() {
        var histogram = makeLatencyHistogram()
        for v in 1...1000 { _ = histogram.record(UInt64(v) * 10) }  // 10 µs ... 10 ms
        let summary = LatencySummary(histogram: histogram)
        #expect(abs(summary.p50 - 5.0) < 0.01)
        #expect(abs(summary.p90 - 9.0) < 0.01)
        #expect(abs(summary.p99 - 9.9) < 0.01)
        #expect(abs(summary.max - 10.0) < 0.01)
        #expect(LatencySummary(histogram: makeLatencyHistogram()) == LatencySummary(p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0))
    }

    @Test func tableRowsAndRatios() {
        let c = result(system: .conclave, ops: 20_000, p50us: [500, 500, 900])
        let e = result(system: .etcd, ops: 4_000, p50us: [1000, 1000, 1800])
        #expect(Table.row(c) == ["conclave", "3", "get/stale", "16", "10000", "0.50", "0.90", "0.90", "0.90", "0.90",
                                 "connect: ECONNREFUSED: 1; status 500: 2"])
        #expect(Table.ratioRow(conclave: c, etcd: e) == ["3", "get/stale", "16", "5.00x", "0.50x", "0.50x", "0.50x"])
        let lines = Table.render([Table.row(c), Table.row(e)]).split(separator: "\n")
        #expect(lines.count == 4)
        #expect(lines[0].hasPrefix("| system   | servers |"))
        #expect(Set(lines.map(\.count)).count == 1)  // columns padded to one width
    }

    @Test func jsonLineHasTheDocumentedShape() throws {
        let line = result(system: .conclave, ops: 20_000, p50us: [500]).jsonLine()
        #expect(!line.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["settings", "startedAt", "elapsedSeconds", "operations", "opsPerSecond", "latencyMs", "errors", "extra"])
        #expect(object["opsPerSecond"] as? Double == 10_000)
        let latency = try #require(object["latencyMs"] as? [String: Double])
        #expect(Set(latency.keys) == ["p50", "p90", "p99", "p999", "max", "mean"])
        let settings = try #require(object["settings"] as? [String: Any])
        #expect(settings["system"] as? String == "conclave")
        #expect(settings["workload"] as? String == "get")
        #expect(settings["consistency"] as? String == "stale")
        #expect(settings["connections"] as? Int == 16)
        #expect((object["errors"] as? [String: Int])?["status 500"] == 2)
        let decoded = try JSONDecoder().decode(RunResult.self, from: Data(line.utf8))
        #expect(decoded.settings == result(system: .conclave, ops: 1, p50us: []).settings)
    }
}

/// A seeded generator (SplitMix64) so a failing round replays.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
