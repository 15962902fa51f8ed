// Which processor takes a message type, remembered for the last type seen (Dispatch.swift).

/// A route: an index into the reactor's `plugins`, or one of these.
enum Route {
    static let core = -1
    static let unsupported = -2
}

/// The last message type routed: its raw bytes (up to 16, zero-padded into two words), its
/// String and its route. Types are a handful of short ASCII words and clients send runs of
/// one type, so one entry catches most messages; compared as two words, no String is built.
/// Valid because the chain is fixed when the reactor starts and `canHandle` answers by the
/// type alone (MessageProcessor's contract).
struct RouteCache {
    static let maxBytes = 16
    private var key: (UInt64, UInt64) = (0, 0)
    private var length = -1
    private var type = ""
    private var route = Route.unsupported

    @inline(__always)
    private static func words(_ raw: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        var k: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &k) { $0.copyMemory(from: raw) }
        return k
    }

    @inline(__always)
    func lookup(_ raw: UnsafeRawBufferPointer) -> (String, Int)? {
        guard raw.count == length else { return nil }
        let k = RouteCache.words(raw)
        return k.0 == key.0 && k.1 == key.1 ? (type, route) : nil
    }

    mutating func store(_ raw: UnsafeRawBufferPointer, _ type: String, _ route: Int) {
        key = RouteCache.words(raw)
        length = raw.count
        self.type = type
        self.route = route
    }
}
