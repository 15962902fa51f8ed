// The top-level fields of one object as `JSONReader.parse` records them: byte ranges into the
// caller's buffer, in a fixed inline table (no heap).

public enum JSONValueKind: UInt8, Sendable {
    case string, number, bool, null, object, array
}

public struct JSONField: Equatable, Sendable {
    // The Ints come first so the three one-byte fields pack into one tail word (stride 40).

    /// Raw key bytes inside the quotes.
    public var keyStart: Int, keyEnd: Int
    /// String: raw bytes inside the quotes (still escaped). Other kinds: the raw token, or the
    /// whole nested object/array text including its brackets.
    public var valueStart: Int, valueEnd: Int
    /// The key contains a backslash escape.
    public var keyEscaped: Bool
    public var kind: JSONValueKind
    /// The string value contains a backslash escape.
    public var valueEscaped: Bool

    public init(keyStart: Int, keyEnd: Int, keyEscaped: Bool,
                valueStart: Int, valueEnd: Int, kind: JSONValueKind, valueEscaped: Bool) {
        self.keyStart = keyStart
        self.keyEnd = keyEnd
        self.keyEscaped = keyEscaped
        self.valueStart = valueStart
        self.valueEnd = valueEnd
        self.kind = kind
        self.valueEscaped = valueEscaped
    }

    static let empty = JSONField(keyStart: 0, keyEnd: 0, keyEscaped: false,
                                 valueStart: 0, valueEnd: 0, kind: .null, valueEscaped: false)
}

/// The top-level fields of one parsed object: fixed capacity 16, stored inline (no heap).
public struct JSONFieldTable: Sendable {
    public static let capacity = 16

    // A tuple rather than an Array (heap) or an InlineArray: reading an InlineArray element
    // from a non-mutable struct copies the whole 640-byte storage to the stack first, while a
    // tuple element read through `switch` is a direct load.
    private typealias Storage = (JSONField, JSONField, JSONField, JSONField,
                                 JSONField, JSONField, JSONField, JSONField,
                                 JSONField, JSONField, JSONField, JSONField,
                                 JSONField, JSONField, JSONField, JSONField)
    private var storage: Storage

    public private(set) var count: Int

    public init() {
        let e = JSONField.empty
        storage = (e, e, e, e, e, e, e, e, e, e, e, e, e, e, e, e)
        count = 0
    }

    public subscript(i: Int) -> JSONField {
        precondition(i >= 0 && i < count, "JSONFieldTable index out of range")
        return field(i)
    }

    @inline(__always)
    private func field(_ i: Int) -> JSONField {
        switch i {
        case 0: return storage.0
        case 1: return storage.1
        case 2: return storage.2
        case 3: return storage.3
        case 4: return storage.4
        case 5: return storage.5
        case 6: return storage.6
        case 7: return storage.7
        case 8: return storage.8
        case 9: return storage.9
        case 10: return storage.10
        case 11: return storage.11
        case 12: return storage.12
        case 13: return storage.13
        case 14: return storage.14
        default: return storage.15
        }
    }

    mutating func removeAll() { count = 0 }

    /// Appends a field; false when the table is full.
    @inline(__always)
    mutating func append(_ f: JSONField) -> Bool {
        let i = count
        guard i < JSONFieldTable.capacity else { return false }
        withUnsafeMutableBytes(of: &storage) {
            $0.baseAddress.unsafelyUnwrapped.assumingMemoryBound(to: JSONField.self)[i] = f
        }
        count = i &+ 1
        return true
    }

    /// The top-level field whose (unescaped) key equals `key`; the last one wins on duplicates.
    public func find(_ key: StaticString, in bytes: UnsafeRawBufferPointer) -> JSONField? {
        withUnsafePointer(to: self) { JSONFieldTable.find(key, in: bytes, table: $0) }
    }

    /// `find` on a table in place, for the message path. Going through `field(i)` or
    /// `withUnsafeBytes(of: storage)` makes the compiler copy the whole 640-byte table to the
    /// stack on every call (measurements in docs/performance.md, "Protocol" and "Request
    /// path"); through a pointer the fields are read where they are.
    @inline(__always)
    public static func find(_ key: StaticString, in bytes: UnsafeRawBufferPointer,
                            table: UnsafePointer<JSONFieldTable>) -> JSONField? {
        let k = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        var i = table.pointee.count
        // `storage` is the first stored property: the fields start at the table's address.
        let fields = UnsafeRawPointer(table).assumingMemoryBound(to: JSONField.self)
        while i > 0 {
            i &-= 1
            let f = fields[i]
            if JSONReader.rawStringEquals(start: f.keyStart, end: f.keyEnd, escaped: f.keyEscaped,
                                          literal: k, in: bytes) {
                return f
            }
        }
        return nil
    }

    /// Whether `storage` sits at offset 0 (what `find(_:in:table:)` relies on; checked when a reactor starts).
    static var storageIsFirst: Bool { MemoryLayout<JSONFieldTable>.offset(of: \JSONFieldTable.storage) == 0 }
}
