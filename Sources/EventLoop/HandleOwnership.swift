// How every libuv handle in this module is owned: the handle is heap-allocated, its `data` holds a
// retained reference to the Swift object that owns it, and the one close callback below releases
// that reference and frees the memory. Loop shutdown finds every handle through `uv_walk`.
import CLibUV

/// A Swift object that owns one or more libuv handles through their `data` pointer.
protocol LoopHandleOwner: AnyObject {
    /// Close the owned handles now (loop shutdown). Must call `uv_close` on each handle that is
    /// not closing yet, through `closeHandle`.
    func closeForShutdown()
    /// Runs in the close callback of each owned handle, before its memory is freed.
    func handleDidClose(_ handle: UnsafeMutablePointer<uv_handle_t>)
}

/// Views any libuv handle struct as the `uv_handle_t` it starts with.
@inline(__always)
func asHandle<T>(_ pointer: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutablePointer<uv_handle_t>(OpaquePointer(pointer))
}

/// Views a `uv_tcp_t` as the `uv_stream_t` it starts with.
@inline(__always)
func asStream(_ pointer: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutablePointer<uv_stream_t>(OpaquePointer(pointer))
}

/// Stores a retained reference to `owner` in the handle's `data`; released by `handleCloseCallback`.
func attach<T>(_ owner: some LoopHandleOwner, to handle: UnsafeMutablePointer<T>) {
    asHandle(handle).pointee.data = Unmanaged.passRetained(owner as AnyObject).toOpaque()
}

/// The owner stored in `data`, typed as the caller knows it to be.
@inline(__always)
func owner<Owner: AnyObject>(of handle: UnsafeMutablePointer<uv_handle_t>, as _: Owner.Type) -> Owner {
    Unmanaged<Owner>.fromOpaque(handle.pointee.data).takeUnretainedValue()
}

/// Closes a handle owned through `attach`; its owner hears about it in `handleDidClose`.
func closeHandle<T>(_ handle: UnsafeMutablePointer<T>) {
    uv_close(asHandle(handle), handleCloseCallback)
}

/// The only close callback in the module: tell the owner, drop its reference, free the handle.
let handleCloseCallback: uv_close_cb = { handle in
    guard let handle else { return }
    if let data = handle.pointee.data {
        handle.pointee.data = nil
        let reference = Unmanaged<AnyObject>.fromOpaque(data)
        (reference.takeUnretainedValue() as? LoopHandleOwner)?.handleDidClose(handle)
        reference.release()
    }
    UnsafeMutableRawPointer(handle).deallocate()
}

/// Asks the owner of every open handle on `uvLoop` to close it. Safe to call repeatedly.
func closeAllHandles(_ uvLoop: UnsafeMutablePointer<uv_loop_t>) {
    uv_walk(uvLoop, { handle, _ in
        guard let handle, uv_is_closing(handle) == 0 else { return }
        if let data = handle.pointee.data,
           let owner = Unmanaged<AnyObject>.fromOpaque(data).takeUnretainedValue() as? LoopHandleOwner {
            owner.closeForShutdown()
            assert(uv_is_closing(handle) != 0, "\(type(of: owner)).closeForShutdown left a handle open")
        } else {
            // Not ours (no owner): close it so uv_loop_close can succeed. Its memory is not ours to free.
            uv_close(handle, nil)
        }
    }, nil)
}
