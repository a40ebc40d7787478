// Carries a loop-confined value through `@Sendable` closures (such as `loop.execute`) without
// making it Sendable: the value may only be touched on its loop's thread, checked in debug builds.

/// Confinement: `value` is read and written only on `loop`'s thread (asserted on every access); the
/// wrapper itself may travel between threads. Copies share one box.
public struct LoopBound<Value>: @unchecked Sendable {
    public let loop: Loop
    private let box: Box

    private final class Box {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    /// Must be created on the loop thread.
    public init(_ value: Value, loop: Loop) {
        loop.assertInLoopThread()
        self.loop = loop
        self.box = Box(value)
    }

    /// An empty optional slot, creatable on any thread (there is no value yet to confine); fill it
    /// on the loop thread.
    public init<Wrapped>(emptyOn loop: Loop) where Value == Wrapped? {
        self.loop = loop
        self.box = Box(nil)
    }

    public var value: Value {
        get {
            loop.assertInLoopThread()
            return box.value
        }
        nonmutating set {
            loop.assertInLoopThread()
            box.value = newValue
        }
    }
}
