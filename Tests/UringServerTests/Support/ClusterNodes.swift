import Foundation
import UringServer

/// A tcpserver node in cluster mode on the Redis (or Redis Cluster node) at `redisPort`:
/// two reactors, no log file, presence off (the cluster suites count messages, not notices).
func startClusterNode(redisPort: Int, id: String, mode: IOModeSetting, historySize: Int = 100) throws -> Server {
    var c = ServerConfig()
    c.port = 0
    c.io = mode
    c.threads = 2
    c.logFile = ""
    c.presence = false
    c.cluster = "redis"
    c.redisPort = redisPort
    c.nodeId = id
    c.historySize = historySize
    let s = Server(config: c)
    try s.start()
    return s
}
