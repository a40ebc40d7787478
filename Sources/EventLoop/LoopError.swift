// EventLoop's one error type: a libuv status code plus the operation that produced it.
// Every failure that leaves this module is a LoopError; callers never see a raw C errno.
import CLibUV

public struct LoopError: Error, CustomStringConvertible, Sendable, Hashable {
    /// The negative libuv status code (for example `UV_EADDRINUSE`).
    public let code: Int32
    /// What was being done, with its target: "listen 127.0.0.1:8500", "connect 10.0.0.2:8300".
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    /// "listen 127.0.0.1:8500: address already in use"
    public var description: String {
        "\(operation): \(String(cString: uv_strerror(code)))"
    }

    /// The symbolic libuv name of `code`, e.g. "EADDRINUSE".
    public var name: String {
        String(cString: uv_err_name(code))
    }

    init(_ errno: uv_errno_t, operation: String) {
        self.init(code: errno.rawValue, operation: operation)
    }

    /// True when the operation was cut short by a local close or the loop shutting down.
    public var isCancellation: Bool { code == UV_ECANCELED.rawValue }
}
