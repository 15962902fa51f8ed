import Glibc

/// Builds a ServerConfig from `.env` (or --config FILE), the environment and the command line.
public enum ConfigLoader {
    public enum Outcome {
        case run(ServerConfig)
        case help(String)
        case version
    }

    /// Flags that are short names for config keys.
    static let aliases = ["host": "tcp_host", "port": "tcp_port"]

    public static func load(arguments: [String], environment: [String: String],
                            readFile: (String) -> String?) throws(ConfigError) -> Outcome {
        // 1. Which file: --config FILE, else ./.env (optional).
        var configPath: String?
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--config" {
                guard i + 1 < arguments.count else { throw ConfigError("--config needs a file path") }
                configPath = arguments[i + 1]
            } else if a.hasPrefix("--config=") {
                configPath = String(a.dropFirst("--config=".count))
            }
            i += 1
        }
        var config = ServerConfig()
        if let path = configPath {
            guard let text = readFile(path) else { throw ConfigError("cannot read config file '\(path)'") }
            try applyDotEnv(text, source: path, to: &config)
        } else if let text = readFile(".env") {
            try applyDotEnv(text, source: ".env", to: &config)
        }

        // 2. Environment: upper-case key names.
        for key in ServerConfig.keys {
            if let v = environment[key.name.uppercased()] {
                do { try config.set(key.name, v) } catch {
                    throw ConfigError("environment \(key.name.uppercased()): \(error.description)")
                }
            }
        }

        // 3. Flags.
        i = 0
        while i < arguments.count {
            let a = arguments[i]
            i += 1
            if a == "--help" || a == "-h" { return .help(usage()) }
            if a == "--version" { return .version }
            guard a.hasPrefix("--") else { throw ConfigError("unexpected argument '\(a)' (see --help)") }
            var name = String(a.dropFirst(2))
            var value: String
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            } else {
                guard i < arguments.count else { throw ConfigError("flag --\(name) needs a value") }
                value = arguments[i]
                i += 1
            }
            if name == "config" { continue }
            try config.set(aliases[name] ?? name, value)
        }
        return .run(config)
    }

    /// `.env` lines: `key=value`, `# comments`, blank lines, optional quotes, optional `export `.
    static func applyDotEnv(_ text: String, source: String, to config: inout ServerConfig) throws(ConfigError) {
        var lineNo = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            var line = String(raw).trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingSpaces() }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError("\(source):\(lineNo): expected key=value")
            }
            let key = String(line[..<eq]).trimmingSpaces()
            var value = String(line[line.index(after: eq)...]).trimmingSpaces()
            if value.count >= 2, let f = value.first, f == "\"" || f == "'", value.last == f {
                value = String(value.dropFirst().dropLast())
            }
            // Keys this server does not know (other tools share .env files) are skipped, but a
            // known key with a bad value is an error.
            guard ServerConfig.isKnownKey(key) else { continue }
            do { try config.set(key, value) } catch {
                throw ConfigError("\(source):\(lineNo): \(error.description)")
            }
        }
    }

    public static func usage() -> String {
        var s = """
        usage: tcpserver [--config FILE] [--host ADDR] [--port N] [--io auto|uring|epoll] [--threads N] [--KEY VALUE]...

        Configuration comes from .env in the working directory (or --config FILE), then the
        environment (upper-case keys, e.g. TCP_PORT=4000), then flags; later sources win.

        keys:

        """
        for k in ServerConfig.keys {
            let flag = "--" + k.name.replacingUnderscores()
            s += "  " + flag + String(repeating: " ", count: max(1, 22 - flag.count)) + k.help + "\n"
        }
        return s
    }
}

extension String {
    func replacingUnderscores() -> String { String(map { $0 == "_" ? "-" : $0 }) }
}
