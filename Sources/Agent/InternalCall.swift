// Requests the agent makes of its own HTTP API (anti-entropy syncing local services to the
// catalog, for one): run through HTTPAPI.handle exactly like an HTTP request, so on a server
// they are served locally and on a client agent forwarded to a server like any other.
import HTTP

extension HTTPAPI {
    /// Runs `method pathAndQuery` (raw request-target, e.g. `/v1/catalog/register` or
    /// `/v1/kv/a?cas=3`) with `body`; `completion(status, body)` runs once on the loop thread.
    /// Loop thread only. Pass `internalCall` itself where a
    /// `(String, String, [UInt8], @escaping (Int, [UInt8]) -> Void) -> Void` is wanted.
    func internalCall(method: String, pathAndQuery: String, body: [UInt8],
                      completion: @escaping (Int, [UInt8]) -> Void) {
        loop.assertInLoopThread()
        var headers = HTTPHeaders()
        if !body.isEmpty { headers.add("Content-Type", "application/json") }
        switch HTTPRequest.make(method: method, target: pathAndQuery, headers: headers, body: body) {
        case .success(let request):
            handle(HTTPResponder(request: request) { response in completion(response.status, response.body) })
        case .failure(let error):
            completion(error.status, Array(error.message.utf8))
        }
    }

    /// `internalCall` as a closure, for components that take one (anti-entropy). It does not
    /// keep the API alive; after shutdown it answers 503.
    var internalCaller: (String, String, [UInt8], @escaping (Int, [UInt8]) -> Void) -> Void {
        { [weak self] method, pathAndQuery, body, completion in
            guard let self else { completion(503, Array("agent not running".utf8)); return }
            self.internalCall(method: method, pathAndQuery: pathAndQuery, body: body, completion: completion)
        }
    }

    /// Client agents: a server answers (RPCClient); without one, Consul's answer.
    func forwardToServer(_ responder: HTTPResponder) {
        guard let rpcClient else {
            responder.respond(.text(status: 500, "No known Consul servers"))
            return
        }
        rpcClient.forward(responder)
    }
}
