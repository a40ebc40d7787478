// Command-line flags with Go's `flag` package rules, which Consul's CLI follows:
// `-name value`, `-name=value`, `--name`, booleans as `-name` or `-name=false`, and
// parsing stops at the first argument that is not a flag (or after `--`).

struct FlagError: Error, CustomStringConvertible {
    let description: String
}

final class FlagSet {
    enum Kind { case bool, string, int, stringList }

    private struct Definition {
        var kind: Kind
        var usage: String
        var placeholder: String
    }

    let command: String
    private var definitions: [String: Definition] = [:]
    private var order: [String] = []
    private(set) var strings: [String: String] = [:]
    private(set) var lists: [String: [String]] = [:]
    private(set) var bools: [String: Bool] = [:]

    init(command: String) { self.command = command }

    func bool(_ name: String, _ usage: String) { define(name, .bool, usage, "") }
    func string(_ name: String, _ usage: String, placeholder: String = "string") { define(name, .string, usage, placeholder) }
    func int(_ name: String, _ usage: String) { define(name, .int, usage, "int") }
    func stringList(_ name: String, _ usage: String) { define(name, .stringList, usage, "string") }

    private func define(_ name: String, _ kind: Kind, _ usage: String, _ placeholder: String) {
        precondition(definitions[name] == nil, "flag -\(name) defined twice")
        definitions[name] = Definition(kind: kind, usage: usage, placeholder: placeholder)
        order.append(name)
    }

    /// Parses flags and returns the remaining positional arguments.
    func parse(_ arguments: [String]) throws(FlagError) -> [String] {
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            if argument == "--" { return Array(arguments[(i + 1)...]) }
            guard argument.hasPrefix("-"), argument != "-" else { return Array(arguments[i...]) }
            var body = argument.dropFirst()
            if body.hasPrefix("-") { body = body.dropFirst() }
            guard !body.isEmpty, !body.hasPrefix("-"), !body.hasPrefix("=") else {
                throw FlagError(description: "bad flag syntax: \(argument)")
            }
            let name: String
            var inlineValue: String?
            if let eq = body.firstIndex(of: "=") {
                name = String(body[..<eq])
                inlineValue = String(body[body.index(after: eq)...])
            } else {
                name = String(body)
            }
            if name == "h" || name == "help" { throw FlagError(description: usage()) }
            guard let definition = definitions[name] else {
                throw FlagError(description: "flag provided but not defined: -\(name)")
            }
            i += 1
            switch definition.kind {
            case .bool:
                if let inlineValue {
                    switch inlineValue.lowercased() {
                    case "1", "t", "true": bools[name] = true
                    case "0", "f", "false": bools[name] = false
                    default: throw FlagError(description: "invalid boolean value \"\(inlineValue)\" for -\(name)")
                    }
                } else {
                    bools[name] = true
                }
            case .string, .int, .stringList:
                let value: String
                if let inlineValue {
                    value = inlineValue
                } else {
                    guard i < arguments.count else { throw FlagError(description: "flag needs an argument: -\(name)") }
                    value = arguments[i]
                    i += 1
                }
                if definition.kind == .int, Int(value) == nil {
                    throw FlagError(description: "invalid value \"\(value)\" for flag -\(name): parse error")
                }
                if definition.kind == .stringList {
                    lists[name, default: []].append(value)
                } else {
                    strings[name] = value
                }
            }
        }
        return []
    }

    func isSet(_ name: String) -> Bool { strings[name] != nil || bools[name] != nil || lists[name] != nil }
    func string(_ name: String) -> String? { strings[name] }
    func int(_ name: String) -> Int? { strings[name].flatMap { Int($0) } }
    func flag(_ name: String) -> Bool { bools[name] ?? false }
    func list(_ name: String) -> [String] { lists[name] ?? [] }

    func usage() -> String {
        var lines = ["Usage: conclave \(command) [options]", "", "Options:", ""]
        for name in order.sorted() {
            guard let definition = definitions[name] else { continue }
            let head = definition.kind == .bool ? "  -\(name)" : "  -\(name)=<\(definition.placeholder)>"
            lines.append(head)
            lines.append("      \(definition.usage)")
            lines.append("")
        }
        return lines.joined(separator: "\n")
    }
}
