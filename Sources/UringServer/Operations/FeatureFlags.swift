import Synchronization

/// A run-time switch with percentage rollout and a beta list.
///
/// Evaluation (`FeatureGate.isEnabled`) is a few relaxed atomic loads of rarely-written words
/// and a hash the connection computed once at hello: no allocation, no lock.
public final class FeatureFlag: Sendable {
    public let name: String
    /// Critical flags are never shed by the performance monitor.
    public let critical: Bool
    /// Operator's switch (config or POST /admin/features/<name>).
    let enabledByOperator: Atomic<Bool>
    /// 0…100: share of users (by stable hash) that see the feature.
    let percent: Atomic<Int>
    /// Set by the performance monitor while it sheds this (non-critical) flag.
    let shed = Atomic<Bool>(false)
    /// Hashes of users who always see the feature (while it is on and not shed).
    let betaHashes: [UInt64]

    init(name: String, critical: Bool, enabled: Bool = true, percent: Int = 100, betaUsers: [String] = []) {
        self.name = name
        self.critical = critical
        enabledByOperator = Atomic(enabled)
        self.percent = Atomic(percent)
        betaHashes = betaUsers.map { FeatureGate.userHash($0) }
    }

    public var isOn: Bool { enabledByOperator.load(ordering: .relaxed) && !shed.load(ordering: .relaxed) }
    public var rolloutPercent: Int { percent.load(ordering: .relaxed) }
    public var isShed: Bool { shed.load(ordering: .relaxed) }

    public func setEnabled(_ on: Bool) { enabledByOperator.store(on, ordering: .relaxed) }
    public func setPercent(_ p: Int) { percent.store(max(0, min(100, p)), ordering: .relaxed) }
}

public enum FeatureGate {
    /// FNV-1a 64 of the user name: stable across runs and machines, so a user stays in or out
    /// of a rollout as the percentage grows (in while hash % 100 < percent).
    public static func userHash(_ user: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in user.utf8 {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01b3
        }
        return h
    }

    /// For a connection: its user's hash is computed only when the rollout is under 100 %.
    @inline(__always)
    public static func isEnabled(_ flag: FeatureFlag, for c: Connection) -> Bool {
        guard flag.isOn else { return false }
        if flag.percent.load(ordering: .relaxed) >= 100 { return true }
        return isEnabled(flag, userHash: c.userHash)
    }

    @inline(__always)
    public static func isEnabled(_ flag: FeatureFlag, userHash: UInt64) -> Bool {
        guard flag.isOn else { return false }
        let p = flag.percent.load(ordering: .relaxed)
        if p >= 100 { return true }
        if !flag.betaHashes.isEmpty && flag.betaHashes.contains(userHash) { return true }
        return Int(userHash % 100) < p
    }
}

/// The declared flags. The set is fixed at start; states change at run time.
public final class FeatureFlags: Sendable {
    public let all: [FeatureFlag]

    init(_ flags: [FeatureFlag]) { all = flags }

    public subscript(name: String) -> FeatureFlag? { all.first { $0.name == name } }

    /// Built from config: `flags` declares names (`name` or `name:critical`), `flag_<name>`
    /// sets on/off or a rollout percentage, `beta_<name>` lists users always in.
    package static func from(_ config: ServerConfig) -> FeatureFlags {
        FeatureFlags(config.flagDeclarations.map { d in
            FeatureFlag(name: d.name, critical: d.critical, enabled: d.enabled, percent: d.percent,
                        betaUsers: d.betaUsers)
        })
    }
}

/// One flag as configured.
public struct FlagDeclaration: Sendable, Equatable {
    public var name: String
    public var critical: Bool
    public var enabled = true
    public var percent = 100
    public var betaUsers: [String] = []
}
