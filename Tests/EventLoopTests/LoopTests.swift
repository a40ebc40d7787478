// The loop thread itself: execute, timers, shutdown and its guarantees.
import Dispatch
import Foundation
import Testing
@testable import EventLoop

@Suite struct LoopTests {
    @Test func executeRunsWorkOnTheLoopThreadInFIFOOrderFromManyThreads() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        #expect(!loop.isInLoopThread)
        let threads = 8
        let itemsPerThread = 2_000
        let seen = Locked<[(thread: Int, sequence: Int)]>([])
        let offLoop = Locked(0)
        let all = Expectation()
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for sequence in 0..<itemsPerThread {
                loop.execute {
                    if !loop.isInLoopThread { offLoop.mutate { $0 += 1 } }
                    seen.mutate { $0.append((thread, sequence)) }
                    all.fulfill()
                }
            }
        }
        try all.wait(count: threads * itemsPerThread, "every work item")
        #expect(offLoop.value == 0)
        let order = seen.value
        #expect(order.count == threads * itemsPerThread)
        for thread in 0..<threads {
            let sequences = order.filter { $0.thread == thread }.map(\.sequence)
            #expect(sequences == Array(0..<itemsPerThread), "thread \(thread) out of order")
        }
    }

    @Test func workSubmittedFromTheLoopThreadRunsAfterTheCurrentItem() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let order = Locked<[String]>([])
        let done = Expectation()
        loop.execute {
            loop.execute { order.mutate { $0.append("inner") }; done.fulfill() }
            order.mutate { $0.append("outer") }
        }
        try done.wait("inner work")
        #expect(order.value == ["outer", "inner"])
    }

    @Test func oneShotTimerFiresOnceAfterItsDelay() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let fired = Expectation()
        let fires = Locked(0)
        let elapsed = Locked<UInt64>(0)
        try onLoop(loop) {
            let start = loop.nowMilliseconds
            let timer = LoopTimer(loop: loop)
            timer.start(afterMilliseconds: 20) {
                fires.mutate { $0 += 1 }
                elapsed.mutate { $0 = loop.nowMilliseconds - start }
                fired.fulfill()
            }
            // A later timer proves the first did not fire again in between.
            LoopTimer(loop: loop).start(afterMilliseconds: 80) { fired.fulfill() }
        }
        try fired.wait(count: 2, "both timers")
        #expect(fires.value == 1)
        #expect(elapsed.value >= 19)
    }

    @Test func repeatingTimerFiresUntilStopped() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let fires = Locked(0)
        let stopped = Expectation()
        let later = Expectation()
        try onLoop(loop) {
            let timer = LoopTimer(loop: loop)
            timer.start(afterMilliseconds: 1, repeatMilliseconds: 2) {
                let count = fires.mutate { $0 += 1; return $0 }
                if count == 5 {
                    timer.stop()
                    stopped.fulfill()
                    // Ten more periods: a timer that kept running would fire again before this.
                    LoopTimer(loop: loop).start(afterMilliseconds: 20) { later.fulfill() }
                }
            }
        }
        try stopped.wait("five fires")
        try later.wait("the check timer")
        #expect(fires.value == 5)
    }

    @Test func timerCanBeRestartedFromItsOwnCallback() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let fires = Locked(0)
        let done = Expectation()
        try onLoop(loop) {
            let timer = LoopTimer(loop: loop)
            func arm() {
                timer.start(afterMilliseconds: 1) {
                    let count = fires.mutate { $0 += 1; return $0 }
                    if count < 3 { arm() } else { timer.close(); done.fulfill() }
                }
            }
            arm()
        }
        try done.wait("three fires")
        #expect(fires.value == 3)
    }

    @Test func shutdownWithOpenHandlesClosesEverythingAndIsIdempotent() throws {
        let loop = try startedLoop()
        let pair = try ConnectedPair.make(on: loop)
        let closes = Locked<[String]>([])
        let hookRan = Locked(false)
        let timerFires = Locked(0)
        try onLoop(loop) {
            pair.server.value!.onClose = { error in closes.mutate { $0.append("server \(String(describing: error))") } }
            pair.client.value!.onClose = { error in closes.mutate { $0.append("client \(String(describing: error))") } }
            pair.server.value!.startReading()
            pair.client.value!.write(Array(repeating: 7, count: 100))  // queued, never flushed
            LoopTimer(loop: loop).start(afterMilliseconds: 60_000) { timerFires.mutate { $0 += 1 } }
            _ = LoopTimer(loop: loop)  // initialised, never started
            _ = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { _, _ in }
            _ = LoopMailbox<Int>(loop: loop) { _ in }
            _ = try SignalWatcher(loop: loop, signal: SIGUSR2) {}
            loop.addShutdownHook {
                hookRan.mutate { $0 = true }
                pair.listener.value!.close()  // an owner closing its own things first
            }
        }
        loop.shutdown()
        #expect(loop.loopCloseStatus == 0)
        #expect(hookRan.value)
        #expect(closes.value.sorted() == ["client nil", "server nil"])
        #expect(timerFires.value == 0)
        loop.shutdown()
        loop.waitUntilStopped()
        loop.execute { Issue.record("work after shutdown must not run") }
        #expect(loop.loopCloseStatus == 0)
    }

    @Test func shutdownFromTheLoopThreadDoesNotWaitForItself() throws {
        let loop = try startedLoop()
        let hookRan = Locked(false)
        loop.execute {
            loop.addShutdownHook { hookRan.mutate { $0 = true } }
            loop.shutdown()
            loop.shutdown()
        }
        loop.waitUntilStopped()
        #expect(hookRan.value)
        #expect(loop.loopCloseStatus == 0)
    }

    @Test func shutdownFromManyThreadsAtOnceReturnsInEveryThread() throws {
        let loop = try startedLoop()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in loop.shutdown() }
        #expect(loop.loopCloseStatus == 0)
    }

    @Test func workQueuedBeforeShutdownRunsBeforeTheLoopStops() throws {
        let loop = try startedLoop()
        let ran = Locked(0)
        for _ in 0..<100 {
            loop.execute { ran.mutate { $0 += 1 } }
        }
        loop.shutdown()
        #expect(ran.value == 100)
    }

    @Test func aLoopThatNeverStartedShutsDownAndDeinitialisesCleanly() throws {
        let loop = try Loop(name: "never-started")
        loop.execute { Issue.record("a loop that never started runs no work") }
        loop.shutdown()
        loop.waitUntilStopped()
        #expect(loop.loopCloseStatus == 0)
        _ = try Loop(name: "dropped")
    }

    @Test func signalWatcherRunsItsCallbackOnTheLoopThread() throws {
        let loop = try startedLoop()
        defer { loop.shutdown() }
        let received = Expectation()
        let onLoopThread = Locked(false)
        try onLoop(loop) {
            _ = try SignalWatcher(loop: loop, signal: SIGUSR1) {
                onLoopThread.mutate { $0 = loop.isInLoopThread }
                received.fulfill()
            }
        }
        kill(getpid(), SIGUSR1)  // process-directed: test threads may block signals
        try received.wait("SIGUSR1")
        #expect(onLoopThread.value)
    }

    @Test func loopErrorDescribesTheOperationAndTheCause() {
        let error = LoopError(code: -98, operation: "listen 127.0.0.1:8500")
        #expect(error.description == "listen 127.0.0.1:8500: address already in use")
        #expect(error.name == "EADDRINUSE")
    }

    @Test func manyLoopsWithEveryKindOfHandleOpenAndCloseCleanly() throws {
        for cycle in 0..<200 {
            let loop = try startedLoop("cycle-\(cycle)")
            let pair = try ConnectedPair.make(on: loop) { server in
                server.onRead = { [unowned server] bytes in server.write(bytes) }
                server.startReading()
            }
            let echoed = Expectation()
            let delivered = Expectation()
            let mailbox = try onLoop(loop) {
                let client = pair.client.value!
                client.onRead = { _ in echoed.fulfill() }
                client.startReading()
                client.write([1, 2, 3])
                LoopTimer(loop: loop).start(afterMilliseconds: 1, repeatMilliseconds: 1) {}
                _ = try UDPSocket.bind(on: loop, host: "127.0.0.1", port: 0) { _, _ in }
                return LoopMailbox<Int>(loop: loop) { _ in delivered.fulfill() }
            }
            mailbox.send(cycle)
            try echoed.wait("echo in cycle \(cycle)")
            try delivered.wait("mailbox in cycle \(cycle)")
            loop.shutdown()
            #expect(loop.loopCloseStatus == 0, "cycle \(cycle)")
        }
    }
}
