/// The directories inside a data dir. The log and the state are separate LMDB environments:
/// the log is synced on every commit; the state store commits without fsync (MDB_NOSYNC) and is
/// checkpointed every `stateCheckpointIntervalMilliseconds`, because the log covers anything a
/// crash undoes (EnvironmentCheckpoint rolls the state back to its checkpoint, the log replays).
public enum DataLayout {
    public static func logDirectory(_ dataDir: String) -> String { dataDir + "/raft" }
    public static func stateDirectory(_ dataDir: String) -> String { dataDir + "/state" }
    /// Temporary files of Raft snapshot streams (emptied at start).
    public static func snapshotTempDirectory(_ dataDir: String) -> String { dataDir + "/raft-snapshot-tmp" }
}
