import StateStore

/// What a committed command produced: its log index and the state machine's answer.
public struct CommitOutcome: Sendable, Equatable {
    public var index: UInt64
    public var result: ApplyResult
}
