// /v1/operator/keyring (Consul): GET lists the gossip keys across the LAN pool; POST
// installs, PUT makes primary, DELETE removes a key, each body `{"Key": "<base64>"}`.
import Foundation
import HTTP

extension HTTPAPI {
    func handleOperatorKeyring(_ responder: HTTPResponder) {
        guard allow(responder, ["GET", "POST", "PUT", "DELETE"]) else { return }
        let request = responder.request
        let operation: KeyringOperation
        switch request.method {
        case "POST": operation = .install
        case "PUT": operation = .use
        case "DELETE": operation = .remove
        default: operation = .list
        }
        var key: String?
        if operation != .list {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any],
                  let text = object["Key"] as? String, !text.isEmpty else {
                responder.respond(.text(status: 400, "Request decode failed: the body must be {\"Key\": \"<base64 key>\"}"))
                return
            }
            key = text
        }
        guard let gossip else {
            responder.respond(.text(status: 500, "gossip is not running"))
            return
        }
        gossip.keyring(operation, key: key) { [weak self] outcome in
            guard let self else { return }
            switch outcome {
            case .failure(let error):
                responder.respond(.text(status: 500, "\(error)"))
            case .success(let result) where operation == .list:
                let entry: [String: Any] = [
                    "WAN": false, "Datacenter": self.config.datacenter, "Segment": "", "Partition": "",
                    "Keys": result.keys, "PrimaryKeys": result.primaryKeys, "NumNodes": result.numNodes,
                    "Messages": result.failures,
                ]
                responder.respond(.json(status: 200, self.jsonBytes([entry])))
            case .success(let result):
                if result.succeeded {
                    responder.respond(HTTPResponse(status: 200))
                    return
                }
                var lines = result.failures.keys.sorted().map { "\t* \($0): \(result.failures[$0]!)" }
                if result.answers.count < result.numNodes {
                    lines.append("\t* \(result.numNodes - result.answers.count) of \(result.numNodes) nodes did not answer in time")
                }
                responder.respond(.text(status: 500, "\(lines.count) error(s) occurred:\n" + lines.joined(separator: "\n")))
            }
        }
    }
}
