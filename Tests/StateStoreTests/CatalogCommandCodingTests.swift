// The catalog command encoding: round trips, specific malformed inputs, and a seeded
// property test that decoding is total and canonical (like KVCommandCodingTests).
import TestSupport
@testable import StateStore
import Testing

@Suite struct CatalogCommandCodingTests {
    static let examples: [CatalogCommand] = [
        .register(CatalogRegistration(node: CatalogNode(name: "n", address: "a"))),
        .register(CatalogRegistration(
            node: CatalogNode(name: "nöde", id: "3f2a8b4c-1d2e-4f5a-9b6c-7d8e9f0a1b2c", address: "10.0.0.1", datacenter: "dc1",
                              taggedAddresses: ["lan": "10.0.0.1", "wan": "1.2.3.4"], meta: ["rack": "a", "": "empty key"],
                              createIndex: 5, modifyIndex: .max),
            skipNodeUpdate: true,
            service: CatalogService(node: "nöde", id: "web-1", service: "web", tags: ["v1", "🔑"], address: "10.0.0.2",
                                    taggedAddresses: ["lan": ServiceAddress(address: "10.0.0.2", port: 8080)],
                                    meta: ["version": "1"], port: 65535, weights: ServiceWeights(passing: 10, warning: -1),
                                    enableTagOverride: true),
            checks: [CatalogCheck(node: "nöde", checkID: "c", name: "C", status: CatalogCheckStatus.passing, notes: "n",
                                  output: String(repeating: "o", count: 300), serviceID: "web-1", serviceName: "web",
                                  serviceTags: ["v1"], type: "http", definition: #"{"HTTP":"http://x"}"#),
                     CatalogCheck(node: "nöde", checkID: "serfHealth")])),
        .deregisterNode(node: "n"),
        .deregisterService(node: "n", serviceID: "s"),
        .deregisterCheck(node: "n", checkID: "c"),
    ]

    @Test(arguments: examples)
    func roundTrips(command: CatalogCommand) throws {
        #expect(try CatalogCommand(decoding: command.encoded()) == command)
    }

    @Test func encodingIsCompactAndUsesTheCatalogTagRange() {
        #expect(CatalogCommand.deregisterNode(node: "a").encoded() == [0x21, 1, 0x61])
        #expect(CatalogCommand.deregisterCheck(node: "a", checkID: "b").encoded() == [0x23, 1, 0x61, 1, 0x62])
        for command in Self.examples {
            #expect(CatalogCommand.tags.contains(command.encoded()[0]))
        }
    }

    @Test func malformedInputsAreRejectedWithReasons() {
        let cases: [(bytes: [UInt8], reason: String)] = [
            ([], "missing tag"),
            ([0x2F], "unknown catalog tag 47"),
            ([0x21], "missing node name length"),
            ([0x21, 1, 0x61, 0], "1 trailing bytes"),
            ([0x22, 1, 0x61], "missing service ID length"),
            // register: name, id, address, datacenter, then a map count that lies.
            ([0x20, 1, 0x61, 0, 0, 0, 50], "tagged addresses count 50 exceeds the 0 bytes left"),
            // two map entries with the same key
            ([0x20, 1, 0x61, 0, 0, 0, 2, 1, 0x6b, 0, 1, 0x6b, 0], "tagged addresses keys out of order"),
            // flags with an unknown bit
            ([0x20, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 4], "unknown flags 4"),
            ([0x20, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 0, 9], "checks count 9 exceeds the 0 bytes left"),
        ]
        for (input, reason) in cases {
            #expect(throws: StateStoreError.malformedCommand(reason), "\(input)") { try CatalogCommand(decoding: input) }
        }
    }

    /// Random bytes and mutations of valid encodings: decoding never crashes, and whatever
    /// decodes re-encodes to the same bytes.
    @Test(arguments: [1, 2, 3, UInt64.random(in: 4...UInt64.max)])
    func decodingIsTotalAndCanonical(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var decoded = 0
        for round in 0..<4_000 {
            var input: [UInt8]
            if round % 2 == 0 {
                let length = Int.random(in: 0...60, using: &generator)
                input = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if !input.isEmpty && Bool.random(using: &generator) { input[0] = UInt8.random(in: 0x20...0x23, using: &generator) }
            } else {
                let command = randomCommand(&generator)
                let valid = command.encoded()
                if (try? CatalogCommand(decoding: valid)) != command {
                    Issue.record("seed \(seed) round \(round): \(command) does not round-trip")
                    return
                }
                input = mutate(valid, &generator)
            }
            do {
                let command = try CatalogCommand(decoding: input)
                decoded += 1
                if command.encoded() != input {
                    Issue.record("seed \(seed) round \(round): \(input) decoded to \(command), which encodes differently")
                    return
                }
            } catch {
                // Rejected: fine for random bytes.
            }
        }
        #expect(decoded > 0, "seed \(seed): some inputs should decode")
    }

    private func randomCommand(_ g: inout SeededGenerator) -> CatalogCommand {
        let nodeName = randomString(&g)
        switch Int.random(in: 0..<4, using: &g) {
        case 0: return .deregisterNode(node: nodeName)
        case 1: return .deregisterService(node: nodeName, serviceID: randomString(&g))
        case 2: return .deregisterCheck(node: nodeName, checkID: randomString(&g))
        default:
            let node = CatalogNode(name: nodeName, id: randomString(&g), address: randomString(&g), datacenter: randomString(&g),
                                   taggedAddresses: randomMap(&g), meta: randomMap(&g),
                                   createIndex: g.next(), modifyIndex: UInt64.random(in: 0...300, using: &g))
            var service: CatalogService?
            if Bool.random(using: &g) {
                service = CatalogService(node: nodeName, id: randomString(&g), service: randomString(&g),
                                         tags: (0..<Int.random(in: 0...3, using: &g)).map { _ in randomString(&g) },
                                         address: randomString(&g),
                                         taggedAddresses: randomMap(&g).mapValues { ServiceAddress(address: $0, port: 80) },
                                         meta: randomMap(&g), port: Int.random(in: -5...70_000, using: &g),
                                         weights: ServiceWeights(passing: Int.random(in: 0...10, using: &g), warning: 1),
                                         enableTagOverride: Bool.random(using: &g))
            }
            let checks = (0..<Int.random(in: 0...2, using: &g)).map { _ in
                CatalogCheck(node: nodeName, checkID: randomString(&g), name: randomString(&g),
                             status: [CatalogCheckStatus.passing, CatalogCheckStatus.critical, ""].randomElement(using: &g)!,
                             output: randomString(&g), serviceID: randomString(&g), serviceTags: [randomString(&g)],
                             definition: randomString(&g), createIndex: g.next())
            }
            return .register(CatalogRegistration(node: node, skipNodeUpdate: Bool.random(using: &g), service: service, checks: checks))
        }
    }

    private func randomString(_ g: inout SeededGenerator) -> String {
        let alphabet: [Character] = ["a", "b", "-", "é", "🔑", "0", " "]
        return String((0..<Int.random(in: 0...8, using: &g)).map { _ in alphabet.randomElement(using: &g)! })
    }

    private func randomMap(_ g: inout SeededGenerator) -> [String: String] {
        var map: [String: String] = [:]
        for _ in 0..<Int.random(in: 0...3, using: &g) { map[randomString(&g)] = randomString(&g) }
        return map
    }

    private func mutate(_ valid: [UInt8], _ g: inout SeededGenerator) -> [UInt8] {
        var bytes = valid
        for _ in 0..<Int.random(in: 1...3, using: &g) {
            switch Int.random(in: 0..<5, using: &g) {
            case 0 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &g)] = UInt8.random(in: 0...255, using: &g)
            case 1 where !bytes.isEmpty:
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &g))
            case 2:
                bytes.append(UInt8.random(in: 0...255, using: &g))
            case 3 where bytes.count > 1:
                let at = Int.random(in: 1..<bytes.count, using: &g)
                bytes.replaceSubrange(at..<at + 1, with: [0xff, 0xff, 0xff, 0xff, 0x7f])
            case 4 where !bytes.isEmpty:
                bytes.remove(at: Int.random(in: 0..<bytes.count, using: &g))
            default:
                break
            }
        }
        return bytes
    }
}

/// Stored records are decoded totally too: random bytes give a record or `corrupt`.
@Suite struct CatalogRecordDecodingTests {
    @Test func storedRecordsRoundTrip() throws {
        guard case let .register(registration) = CatalogCommandCodingTests.examples[1] else { return }
        #expect(try CatalogNode(stored: registration.node.stored()) == registration.node)
        let service = try #require(registration.service)
        #expect(try CatalogService(stored: service.stored()) == service)
        for check in registration.checks { #expect(try CatalogCheck(stored: check.stored()) == check) }
    }

    @Test func storedRecordsRejectJunkWithCorrupt() {
        var generator = SeededGenerator(seed: 7)
        for round in 0..<3_000 {
            var input = (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if !input.isEmpty && round % 2 == 0 { input[0] = 1 }  // the current record version
            for kind in 0..<3 {
                do throws(StateStoreError) {
                    switch kind {
                    case 0: _ = try CatalogNode(stored: input)
                    case 1: _ = try CatalogService(stored: input)
                    default: _ = try CatalogCheck(stored: input)
                    }
                } catch {
                    if case .corrupt = error {} else { Issue.record("unexpected \(error)") }
                }
            }
        }
    }
}
