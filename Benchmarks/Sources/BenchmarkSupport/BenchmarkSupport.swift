// What both benchmark suites share: the fixture holder, the 256-byte value every write uses,
// and the per-second rate reported as a custom metric next to the harness's own figures.

/// The value size of every write benchmark (a typical small Consul KV value).
public let value256 = [UInt8](repeating: 0x61, count: 256)

/// Holds one benchmark's fixture from its setup to its teardown, whose release removes the
/// fixture's temporary directory. The harness runs setup, iterations and teardown one after
/// another on its own task, never at once, hence `@unchecked Sendable`.
public final class FixtureSlot<Fixture>: @unchecked Sendable {
    public var value: Fixture?

    public init() {}

    public var fixture: Fixture {
        guard let value else { preconditionFailure("benchmark ran without its setup") }
        return value
    }
}

/// `count` operations in `elapsed`, per second (0 for an empty interval).
public func perSecond(_ count: Int, _ elapsed: Duration) -> Int {
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    return seconds > 0 ? Int(Double(count) / seconds) : 0
}
