import CLinux
import Glibc

/// The optional io_uring techniques a ring uses, resolved from the config switches (auto | on |
/// off) and what the kernel offers. Every one has a fallback that runs on 5.19: a switch that is
/// off, or a kernel without the feature, leaves the plain path (docs/architecture.md,
/// "io_uring techniques"; their measured worth: docs/performance.md, same title).
struct UringTechniques: Equatable {
    /// Multishot receive with IORING_RECVSEND_BUNDLE: one completion covers consecutive buffers.
    var recvBundle = false
    /// Provided-buffer ring registered with IOU_PBUF_RING_INC: the kernel consumes a buffer
    /// piecewise, so a 40-byte message uses 40 bytes of it, not the whole buffer.
    var bufIncremental = false
    /// Slots in the ring's sparse fixed-file table (0: none). `register`: a connection in
    /// reactor slot i < this has its socket registered at index i, and keeps its fd for what
    /// needs one. Every operation names the index with IOSQE_FIXED_FILE and skips fget/fput
    /// (docs/architecture.md).
    var fixedFiles = 0
    /// Sockets are accepted straight into the table (IORING_FILE_INDEX_ALLOC) instead of being
    /// registered after a normal accept: a connection has no fd unless it needs one.
    var acceptDirect = false

    /// What `auto` turns on where the kernel offers it: the techniques the A/B measurements kept.
    static let keptByMeasurement = UringTechniques(recvBundle: true, bufIncremental: true, fixedFiles: 1)
    /// `uring_direct_descriptors = auto`: the variant the A/B measurements kept.
    static let keptDescriptors = UringDescriptorSetting.accept

    static let bundleBit = CLINUX_FEATURE_RECV_BUNDLE
    static let incrementalBit = CLINUX_FEATURE_BUF_INCREMENTAL
    static let fixedFilesBit = CLINUX_FEATURE_FIXED_FILES
    static let fdInstallBit = CLINUX_FEATURE_FD_INSTALL

    /// CLINUX_FEATURE_* bits of this kernel, probed once on a scratch ring.
    static let offered: Int32 = clinux_uring_features()

    init(recvBundle: Bool, bufIncremental: Bool, fixedFiles: Int = 0, acceptDirect: Bool = false) {
        self.recvBundle = recvBundle
        self.bufIncremental = bufIncremental
        self.fixedFiles = fixedFiles
        self.acceptDirect = acceptDirect
    }

    /// `reactors`: how many rings share the process's open-file limit.
    init(_ config: ServerConfig, reactors: Int = 1, offered: Int32 = UringTechniques.offered) {
        let kept = Self.keptByMeasurement
        recvBundle = Self.resolve(config.uringRecvBundle, kept: kept.recvBundle,
                                  offered: offered & CLINUX_FEATURE_RECV_BUNDLE != 0)
        bufIncremental = Self.resolve(config.uringBufIncremental, kept: kept.bufIncremental,
                                      offered: offered & CLINUX_FEATURE_BUF_INCREMENTAL != 0)
        let variant = Self.descriptors(config.uringDirectDescriptors, offered: offered)
        fixedFiles = variant == .off ? 0 : Self.tableSize(config, reactors: reactors)
        acceptDirect = variant == .accept
    }

    /// The descriptor variant used: `accept` needs IORING_OP_FIXED_FD_INSTALL (6.8) for the
    /// sockets that need a real fd, and falls back to `register` without it.
    static func descriptors(_ s: UringDescriptorSetting, offered: Int32) -> UringDescriptorSetting {
        guard offered & CLINUX_FEATURE_FIXED_FILES != 0 else { return .off }
        let wanted = s == .auto ? keptDescriptors : s
        if wanted == .accept && offered & CLINUX_FEATURE_FD_INSTALL == 0 { return .register }
        return wanted
    }

    /// The kernel refuses a table larger than RLIMIT_NOFILE (per ring). Every registered socket
    /// is also an open fd, so all reactors together never need more than the fds the process
    /// may hold, nor more than max_connections; twice the even share leaves room for the uneven
    /// spread of SO_REUSEPORT (a reactor's connections past its table use plain fds).
    static func tableSize(_ config: ServerConfig, reactors: Int) -> Int {
        var lim = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        let cap = Int(min(lim.rlim_cur, 1 << 20))
        if config.uringFixedFiles > 0 { return min(config.uringFixedFiles, cap) }
        let share = 2 * min(cap, config.maxConnections) / max(1, reactors)
        return min(cap, max(64, share))
    }

    private static func resolve(_ s: UringFeatureSetting, kept: Bool, offered: Bool) -> Bool {
        switch s {
        case .off: false
        case .on: offered
        case .auto: offered && kept
        }
    }

    /// One log field per technique: "on", "off", "off (auto)" or "off (kernel lacks it)".
    static func describe(_ config: ServerConfig, offered: Int32 = UringTechniques.offered)
        -> (recvBundle: String, bufIncremental: String, directDescriptors: String) {
        let used = UringTechniques(config, offered: offered)
        func note(_ s: UringFeatureSetting, _ on: Bool, _ bit: Int32) -> String {
            if on { return "on" }
            if s == .off { return "off" }
            if offered & bit == 0 { return "off (kernel lacks it)" }
            return "off (auto)"
        }
        let d = descriptors(config.uringDirectDescriptors, offered: offered)
        var direct = d.rawValue
        if d == .off && config.uringDirectDescriptors != .off { direct = "off (kernel lacks it)" }
        if d == .register && config.uringDirectDescriptors == .accept { direct = "register (kernel lacks FIXED_FD_INSTALL)" }
        return (note(config.uringRecvBundle, used.recvBundle, CLINUX_FEATURE_RECV_BUNDLE),
                note(config.uringBufIncremental, used.bufIncremental, CLINUX_FEATURE_BUF_INCREMENTAL),
                direct)
    }
}
