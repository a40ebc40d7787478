// Watchers of blocking queries (Consul's `?index=N&wait=D`): a request parks here until a
// key it reads changes, or its wait ends. Applied batches report the keys they changed.
import EventLoop
import StateStore

enum WatchScope {
    case key(String)
    case prefix(String)   // "" watches everything
    case userEvents       // /v1/event/list
    case catalogTables(CatalogTableSet)  // catalog listings: any change to one of the tables
    case service(String)  // one service name's instances and health (its per-service index)
}

/// Loop-confined. Bounded: past `maxWatchers`, a query answers at once instead of parking.
final class BlockingQueries {
    private struct Watcher {
        var scope: WatchScope
        var timer: LoopTimer
        var wake: () -> Void
    }

    private let loop: Loop
    private let maxWatchers: Int
    private var nextID: UInt64 = 0
    private var watchers: [UInt64: Watcher] = [:]
    private var byKey: [String: Set<UInt64>] = [:]
    private var byPrefix: [String: Set<UInt64>] = [:]
    private var userEventWatchers = Set<UInt64>()
    /// Catalog table watchers by table bit (nodes, services, checks), so a batch costs one
    /// lookup per changed table rather than a pass over every watcher.
    private var byCatalogTable: [UInt8: Set<UInt64>] = [:]
    private var byService: [String: Set<UInt64>] = [:]

    init(loop: Loop, maxWatchers: Int = 65_536) {
        self.loop = loop
        self.maxWatchers = maxWatchers
    }

    var count: Int { watchers.count }

    /// Parks `wake` until a change in `scope` or `timeoutMilliseconds`, whichever is first;
    /// `wake` runs exactly once. Returns false (and does not park) when full.
    func park(scope: WatchScope, timeoutMilliseconds: UInt64, wake: @escaping () -> Void) -> Bool {
        parkCancellable(scope: scope, timeoutMilliseconds: timeoutMilliseconds, wake: wake) != nil
    }

    /// Wakes the watcher `token` now (its client went away); a no-op once it has woken.
    func cancel(_ token: UInt64) { fire(token) }

    /// `park` that returns a token for `cancel` (nil when full).
    func parkCancellable(scope: WatchScope, timeoutMilliseconds: UInt64, wake: @escaping () -> Void) -> UInt64? {
        guard watchers.count < maxWatchers else { return nil }
        nextID += 1
        let id = nextID
        let timer = LoopTimer(loop: loop)
        timer.start(afterMilliseconds: timeoutMilliseconds) { [weak self] in self?.fire(id) }
        watchers[id] = Watcher(scope: scope, timer: timer, wake: wake)
        switch scope {
        case .key(let key): byKey[key, default: []].insert(id)
        case .prefix(let prefix): byPrefix[prefix, default: []].insert(id)
        case .userEvents: userEventWatchers.insert(id)
        case .catalogTables(let tables):
            for bit in Self.bits(tables) { byCatalogTable[bit, default: []].insert(id) }
        case .service(let name): byService[name, default: []].insert(id)
        }
        return id
    }

    /// Wakes every watcher whose scope covers one of `keys`. Cost: one lookup per changed
    /// key, plus one binary search per distinct watched prefix (not per watcher × key), so a
    /// large batch with many parked queries stays cheap on the loop thread.
    func notify(changedKeys keys: [String]) {
        guard !watchers.isEmpty, !keys.isEmpty else { return }
        // "" is never a real key: it says the whole state was replaced (an installed snapshot).
        if keys.contains("") { wakeAll(); return }
        var woken = Set<UInt64>()
        for key in keys {
            if let ids = byKey[key] { woken.formUnion(ids) }
        }
        if !byPrefix.isEmpty {
            // Bytes, not String comparison: the store matches prefixes on UTF-8 bytes, and
            // String ordering follows Unicode canonical equivalence instead.
            let sorted = keys.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
            for (prefix, ids) in byPrefix where Self.anyKey(in: sorted, hasPrefix: Array(prefix.utf8)) {
                woken.formUnion(ids)
            }
        }
        for id in woken { fire(id) }
    }

    /// Wakes the watchers of the catalog tables and service names an applied batch changed.
    func notify(catalogTables tables: CatalogTableSet, serviceNames: [String]) {
        guard !watchers.isEmpty, !tables.isEmpty || !serviceNames.isEmpty else { return }
        var woken = Set<UInt64>()
        for bit in Self.bits(tables) {
            if let ids = byCatalogTable[bit] { woken.formUnion(ids) }
        }
        for name in serviceNames {
            if let ids = byService[name] { woken.formUnion(ids) }
        }
        for id in woken { fire(id) }
    }

    private static func bits(_ tables: CatalogTableSet) -> [UInt8] {
        (0..<8).map { UInt8(1) << $0 }.filter { tables.rawValue & $0 != 0 }
    }

    /// Wakes every /v1/event/list watcher (a user event arrived).
    func notifyUserEvent() {
        for id in userEventWatchers { fire(id) }
    }

    /// Keys with a given prefix sort together, starting at the first key >= prefix.
    static func anyKey(in sorted: [[UInt8]], hasPrefix prefix: [UInt8]) -> Bool {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if sorted[mid].lexicographicallyPrecedes(prefix) { low = mid + 1 } else { high = mid }
        }
        return low < sorted.count && sorted[low].starts(with: prefix)
    }

    private func fire(_ id: UInt64) {
        guard let watcher = watchers.removeValue(forKey: id) else { return }
        watcher.timer.close()
        switch watcher.scope {
        case .key(let key):
            byKey[key]?.remove(id)
            if byKey[key]?.isEmpty == true { byKey.removeValue(forKey: key) }
        case .prefix(let prefix):
            byPrefix[prefix]?.remove(id)
            if byPrefix[prefix]?.isEmpty == true { byPrefix.removeValue(forKey: prefix) }
        case .userEvents:
            userEventWatchers.remove(id)
        case .catalogTables(let tables):
            for bit in Self.bits(tables) {
                byCatalogTable[bit]?.remove(id)
                if byCatalogTable[bit]?.isEmpty == true { byCatalogTable.removeValue(forKey: bit) }
            }
        case .service(let name):
            byService[name]?.remove(id)
            if byService[name]?.isEmpty == true { byService.removeValue(forKey: name) }
        }
        watcher.wake()
    }

    /// Answers every parked query now (used at shutdown).
    func wakeAll() {
        for id in Array(watchers.keys) { fire(id) }
    }
}
