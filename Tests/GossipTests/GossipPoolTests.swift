// Gossip pools on 127.0.0.1 in one process: real UDP and TCP, fast timers. Each test polls
// with a deadline; none sleeps to wait for a condition.
import Dispatch
import EventLoop
import Foundation
import GossipCore
import Logging
import Testing
@testable import Gossip

final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func mutate<R>(_ body: (inout Value) -> R) -> R { lock.withLock { body(&stored) } }
}

struct Timeout: Error, CustomStringConvertible {
    let description: String
}

/// Runs `body` on the loop thread and returns its result.
func onLoop<T: Sendable>(_ loop: Loop, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let result = Locked<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        result.mutate { $0 = Result { try body() } }
        done.signal()
    }
    guard done.wait(timeout: .now() + 20) == .success else { throw Timeout(description: "work on the loop") }
    return try result.value!.get()
}

/// Polls `condition` (run on the loop thread) every 20 ms until it holds or `seconds` pass.
func eventually(_ loop: Loop, _ what: String, seconds: Double = 15, _ condition: @escaping @Sendable () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try onLoop(loop, condition) { return }
        usleep(20_000)
    }
    throw Timeout(description: "timed out waiting for \(what)")
}

/// Memberlist's local profile, faster still: loopback never loses packets.
func fastConfig(name: String) -> (String) -> GossipConfig {
    { address in
        var c = GossipConfig.local(name: name, address: address, randomSeed: UInt64(abs(name.hashValue)))
        c.probeIntervalMs = 200
        c.probeTimeoutMs = 100
        c.gossipIntervalMs = 50
        c.pushPullIntervalMs = 2_000
        return c
    }
}

/// A set of pools on one loop, all on 127.0.0.1 with kernel-chosen ports.
final class Cluster: @unchecked Sendable {
    let loop: Loop
    let pools: LoopBound<[GossipPool]>
    let events: Locked<[String]>

    init(size: Int, keys: [[String]?] = []) throws {
        loop = try Loop(name: "gossip-test")
        loop.start()
        events = Locked([])
        let loop = self.loop, events = self.events
        pools = try onLoop(loop) {
            var pools: [GossipPool] = []
            for i in 0..<size {
                let name = "n\(i)"
                let keyring = try (i < keys.count ? keys[i] : nil).map { try GossipKeyring(base64Keys: $0) }
                var transport = GossipTransportConfig()
                transport.streamTimeoutMs = 1_000
                let pool = try GossipPool(loop: loop, label: "lan", bindHost: "127.0.0.1", advertiseHost: "127.0.0.1", port: 0,
                                          tags: ["role": "node", "i": "\(i)"], transport: transport, keyring: keyring,
                                          logger: Logger(label: "gossip.\(name)"), makeConfig: fastConfig(name: name))
                pool.onEvent = { event in events.mutate { $0.append("\(name): \(event)") } }
                pools.append(pool)
            }
            return LoopBound(pools, loop: loop)
        }
    }

    deinit { loop.shutdown() }

    func address(_ i: Int) throws -> String { try onLoop(loop) { self.pools.value[i].advertiseAddress } }

    /// Joins pool `i` through `address`, returning how many addresses answered.
    func join(_ i: Int, _ addresses: [String]) throws -> Int {
        let answered = Locked<Int?>(nil)
        try onLoop(loop) { self.pools.value[i].join(addresses) { n in answered.mutate { $0 = n } } }
        try eventually(loop, "join to answer", seconds: 5) { answered.value != nil }
        return answered.value!
    }

    /// The status `observer` holds for `node` ("alive", "failed", "left"; nil if unknown).
    func status(of node: String, at observer: Int) throws -> String? {
        try onLoop(loop) { self.pools.value[observer].members.first { $0.member.name == node }?.statusName }
    }

    func waitUntil(_ what: String, seconds: Double = 15, _ check: @escaping @Sendable ([GossipPool]) -> Bool) throws {
        try eventually(loop, what, seconds: seconds) { check(self.pools.value) }
    }
}

@Suite(.serialized) struct GossipPoolTests {
    @Test func poolsBindUDPAndTCPOnTheSameKernelChosenPortAndAdvertiseIt() throws {
        let cluster = try Cluster(size: 2)
        let (a, b) = try onLoop(cluster.loop) { (cluster.pools.value[0].advertiseAddress, cluster.pools.value[1].port) }
        #expect(a.hasPrefix("127.0.0.1:"))
        #expect(a != "127.0.0.1:0")
        #expect(b > 0)
    }

    @Test func aKernelChosenUDPPortWhoseTCPSideIsTakenIsReplacedByAFreshOne() throws {
        // Fake sockets make the collision deterministic: the kernel's first two UDP choices
        // have their TCP port taken, the third is free.
        var udpPorts = [40_001, 40_002, 40_003]
        var closed: [Int] = []
        var tcpTried: [Int] = []
        let (udp, tcp) = try GossipPool.bindSamePort(
            requestedPort: 0, attempts: 8,
            bindUDP: { port in #expect(port == 0); return udpPorts.removeFirst() },
            udpPort: { $0 }, closeUDP: { closed.append($0) },
            bindTCP: { port throws(GossipPool.BindFailure) in
                tcpTried.append(port)
                guard port == 40_003 else { throw .init("tcp 127.0.0.1:\(port): address already in use") }
                return "tcp-\(port)"
            })
        #expect(udp == 40_003)
        #expect(tcp == "tcp-40003")
        #expect(tcpTried == [40_001, 40_002, 40_003])
        #expect(closed == [40_001, 40_002])
    }

    @Test func kernelChosenPortsGiveUpAfterTheConfiguredAttemptsWithTheLastReason() {
        var udpCalls = 0
        var closed = 0
        #expect(throws: GossipPool.BindFailure.self) {
            _ = try GossipPool.bindSamePort(
                requestedPort: 0, attempts: 3,
                bindUDP: { _ in udpCalls += 1; return 50_000 + udpCalls },
                udpPort: { $0 }, closeUDP: { _ in closed += 1 },
                bindTCP: { port throws(GossipPool.BindFailure) -> Int in throw .init("tcp port \(port) taken") })
        }
        #expect(udpCalls == 3)
        #expect(closed == 3)
    }

    @Test func aFixedPortWhoseTCPSideIsTakenFailsAtOnceNamingTCP() throws {
        // Real sockets: occupy the TCP side of a port, then ask for a pool on that port.
        let loop = try Loop(name: "gossip-bind-test")
        loop.start()
        defer { loop.shutdown() }
        let outcome = try onLoop(loop) { () -> String in
            let holder = try TCPListener.listen(on: loop, host: "127.0.0.1", port: 0) { $0.closeNow() }
            defer { holder.close() }
            let port = holder.localPort
            do {
                let pool = try GossipPool(loop: loop, label: "lan", bindHost: "127.0.0.1", advertiseHost: "127.0.0.1",
                                          port: port, tags: [:], logger: Logger(label: "gossip.bind"),
                                          makeConfig: fastConfig(name: "bind"))
                pool.close()
                return "bound \(port)"
            } catch {
                return "\(port) \(error)"
            }
        }
        let port = try #require(outcome.split(separator: " ").first.map(String.init))
        #expect(outcome.contains("cannot bind gossip (lan) port: tcp 127.0.0.1:\(port)"), "\(outcome)")
    }

    @Test func fourPoolsJoiningThroughOneSeeEachOtherAlive() throws {
        let cluster = try Cluster(size: 4)
        let seed = try cluster.address(0)
        for i in 1..<4 { #expect(try cluster.join(i, [seed]) == 1) }
        try cluster.waitUntil("every pool to see 4 alive members") { pools in
            pools.allSatisfy { p in p.members.count == 4 && p.members.allSatisfy { $0.serfStatus == 1 } }
        }
        let tags = try onLoop(cluster.loop) { cluster.pools.value[3].members.first { $0.member.name == "n0" }?.member.tags }
        #expect(tags == ["role": "node", "i": "0"])
    }

    @Test func joinToAnAddressWithNoAgentReportsZeroAnswered() throws {
        let cluster = try Cluster(size: 1)
        #expect(try cluster.join(0, ["127.0.0.1:1"]) == 0)
    }

    @Test func aClosedPoolIsReportedFailedByTheOthers() throws {
        let cluster = try Cluster(size: 4)
        let seed = try cluster.address(0)
        for i in 1..<4 { _ = try cluster.join(i, [seed]) }
        try cluster.waitUntil("4 alive everywhere") { $0.allSatisfy { $0.members.filter { $0.serfStatus == 1 }.count == 4 } }
        try onLoop(cluster.loop) { cluster.pools.value[3].close() }
        try cluster.waitUntil("n3 failed at n0, n1, n2") { pools in
            pools[0..<3].allSatisfy { $0.members.first { $0.member.name == "n3" }?.statusName == "failed" }
        }
        #expect(cluster.events.value.contains { $0.hasPrefix("n0: failed") })
    }

    @Test func aLeavingPoolIsReportedLeftAndForceLeaveTurnsFailedIntoLeft() throws {
        let cluster = try Cluster(size: 4)
        let seed = try cluster.address(0)
        for i in 1..<4 { _ = try cluster.join(i, [seed]) }
        try cluster.waitUntil("4 alive everywhere") { $0.allSatisfy { $0.members.filter { $0.serfStatus == 1 }.count == 4 } }
        let left = Locked(false)
        try onLoop(cluster.loop) { cluster.pools.value[2].leave(timeoutMs: 2_000) { left.mutate { $0 = true } } }
        try eventually(cluster.loop, "leave to finish", seconds: 5) { left.value }
        try onLoop(cluster.loop) { cluster.pools.value[2].close() }
        try cluster.waitUntil("n2 left at n0, n1, n3") { pools in
            [0, 1, 3].allSatisfy { pools[$0].members.first { $0.member.name == "n2" }?.statusName == "left" }
        }
        // A crash, then force-leave at one member: left everywhere.
        try onLoop(cluster.loop) { cluster.pools.value[3].close() }
        try cluster.waitUntil("n3 failed at n0 and n1") { pools in
            [0, 1].allSatisfy { pools[$0].members.first { $0.member.name == "n3" }?.statusName == "failed" }
        }
        #expect(try onLoop(cluster.loop) { cluster.pools.value[0].forceLeave("n3", prune: false) })
        try cluster.waitUntil("n3 left at n0 and n1") { pools in
            [0, 1].allSatisfy { pools[$0].members.first { $0.member.name == "n3" }?.statusName == "left" }
        }
        #expect(try onLoop(cluster.loop) { cluster.pools.value[0].forceLeave("n3", prune: true) })
        #expect(try cluster.status(of: "n3", at: 0) == nil)
        #expect(try onLoop(cluster.loop) { cluster.pools.value[0].forceLeave("nobody", prune: false) } == false)
    }

    @Test func encryptedPoolsJoinAndAPoolWithTheWrongKeyStaysOut() throws {
        let key = GossipKeyring.generateBase64Key()
        let cluster = try Cluster(size: 3, keys: [[key], [key], [GossipKeyring.generateBase64Key()]])
        let seed = try cluster.address(0)
        #expect(try cluster.join(1, [seed]) == 1)
        #expect(try cluster.join(2, [seed]) == 0)
        try cluster.waitUntil("n0 and n1 see each other") { pools in
            pools[0..<2].allSatisfy { $0.members.filter { $0.serfStatus == 1 }.count == 2 }
        }
        #expect(try onLoop(cluster.loop) { cluster.pools.value[0].members.map(\.member.name) } == ["n0", "n1"])
        #expect(try onLoop(cluster.loop) { cluster.pools.value[2].members.count } == 1)
        #expect(try onLoop(cluster.loop) { cluster.pools.value[0].decryptFailures } >= 1)
    }
}

@Suite struct StreamFrameTests {
    @Test func framesSplitAcrossReadsAreReassembled() throws {
        var decoder = StreamFrameDecoder(maxFrameBytes: 16)
        let framed = StreamFrameDecoder.frame([1, 2, 3])
        #expect(try decoder.append(Array(framed[0..<2])) == nil)
        #expect(try decoder.append(Array(framed[2...])) == [1, 2, 3])
    }

    @Test func aFrameAnnouncingMoreThanTheLimitIsRejected() {
        var decoder = StreamFrameDecoder(maxFrameBytes: 16)
        #expect(throws: StreamFrameError.frameTooLarge(size: 17, limit: 16)) { try decoder.append([0, 0, 0, 17]) }
    }

    @Test func sealedBytesOpenOnlyWithTheRightKey() throws {
        let a = try GossipKeyring(base64Keys: [GossipKeyring.generateBase64Key()])
        let b = try GossipKeyring(base64Keys: [GossipKeyring.generateBase64Key()])
        let sealed = a.seal([9, 8, 7])
        #expect(sealed.count == 3 + GossipKeyring.overheadBytes)
        #expect(a.open(sealed) == [9, 8, 7])
        #expect(b.open(sealed) == nil)
        #expect(a.open([1, 2]) == nil)
        #expect(throws: GossipKeyringError.invalidKeyLength(3)) { try GossipKeyring(base64Keys: ["AAAA"]) }
    }
}

@Suite struct AddressTests {
    @Test(arguments: [
        ("127.0.0.1:8301", "127.0.0.1", 8301), ("[::1]:8302", "::1", 8302), ("localhost:1", "localhost", 1),
    ])
    func hostPortParses(text: String, host: String, port: Int) {
        let parsed = parseHostPort(text)
        #expect(parsed?.host == host && parsed?.port == port)
    }

    @Test(arguments: ["127.0.0.1", "::1", ":8301", "h:0", "h:70000", "h:x", ""])
    func addressesWithoutAUsablePortAreRejected(text: String) {
        #expect(parseHostPort(text) == nil)
    }
}

@Suite(.serialized) struct GossipPoolHostileInputTests {
    @Test func garbagePacketsAndAnOversizedFrameLeaveThePoolWorking() throws {
        let cluster = try Cluster(size: 2)
        let port = try onLoop(cluster.loop) { cluster.pools.value[0].port }
        let closedByPool = Locked(false)
        try onLoop(cluster.loop) {
            let loop = cluster.loop
            let sender = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { _, _ in }
            var rng = SystemRandomNumberGenerator()
            for size in [0, 1, 7, 100, 1_400] {
                sender.send((0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }, to: SocketAddress(host: "127.0.0.1", port: port))
            }
            sender.close()
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case .success(let connection) = result else { return }
                connection.onClose = { _ in closedByPool.mutate { $0 = true } }
                connection.startReading()
                connection.write([0xff, 0xff, 0xff, 0xff, 1, 2, 3])  // announces a 4 GiB frame
            }
        }
        try eventually(cluster.loop, "the pool to drop the oversized stream", seconds: 5) { closedByPool.value }
        #expect(try cluster.join(1, [try cluster.address(0)]) == 1)
        try cluster.waitUntil("both pools see each other") { $0.allSatisfy { $0.members.filter { $0.serfStatus == 1 }.count == 2 } }
    }
}

@Suite struct LoneLeaveTests {
    @Test func aLonePoolLeavesWithoutWaitingOutTheTimeout() throws {
        let cluster = try Cluster(size: 1)
        let left = Locked(false)
        let started = Date()
        try onLoop(cluster.loop) { cluster.pools.value[0].leave(timeoutMs: 10_000) { left.mutate { $0 = true } } }
        try eventually(cluster.loop, "leave to finish", seconds: 5) { left.value }
        #expect(Date().timeIntervalSince(started) < 2)
        #expect(try onLoop(cluster.loop) { cluster.pools.value[0].members.first?.serfStatus } == 3)  // left, as serf reports itself after a leave
    }
}
