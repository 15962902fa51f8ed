// Redis Cluster key → slot mapping and the rooms' hash tags, against the values in Redis'
// cluster specification.

import Testing
@testable import UringServer

@Suite("ClusterSlots")
struct ClusterSlotsTests {
    @Test("CRC16-XMODEM and key slots match the Redis cluster spec")
    func specVectors() {
        #expect(ClusterSlots.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(ClusterSlots.slot(ofKey: "foo") == 12182)
        #expect(ClusterSlots.slot(ofKey: "{user1000}.following") == ClusterSlots.slot(ofKey: "{user1000}.followers"))
        #expect(ClusterSlots.slot(ofKey: "{user1000}.following") == ClusterSlots.slot(ofKey: "user1000"))
        // Only a non-empty tag counts; the first `}` after the first `{` ends it.
        #expect(ClusterSlots.slot(ofKey: "foo{}{bar}") == Int(ClusterSlots.crc16(Array("foo{}{bar}".utf8))) & 16383)
        #expect(ClusterSlots.slot(ofKey: "foo{{bar}}zap") == ClusterSlots.slot(ofKey: "{bar"))
        #expect(ClusterSlots.slot(ofKey: "foo{bar}{zap}") == ClusterSlots.slot(ofKey: "bar"))
    }

    @Test("a room's keys and channel share its slot, whatever braces or percent signs its name holds")
    func roomTags() {
        for room in ["lobby", "}x", "a}b", "{x", "a{b}c", "100%", "%7D", "ünï"] {
            let slot = ClusterSlots.slot(ofRoom: room)
            let tag = ClusterSlots.tag(room)
            #expect(!tag.contains("}"))
            #expect(ClusterSlots.slot(ofKey: "tcpserver:room:{\(tag)}") == slot, "\(room)")
            #expect(ClusterSlots.slot(ofKey: "tcpserver:members:{\(tag)}") == slot, "\(room)")
            let back = Array(tag.utf8).withUnsafeBytes { ClusterSlots.room(fromTag: $0) }
            #expect(back == room)
        }
        #expect(ClusterSlots.tag("lobby") == "lobby")
        #expect(ClusterSlots.tag("a}b%") == "a%7Db%25")
        #expect(ClusterSlots.tag("%7D") != ClusterSlots.tag("}"), "encoded names do not collide")
    }

    @Test("publish commands: PUBLISH on a plain Redis, SPUBLISH on a cluster, tagged channel")
    func publishFormat() {
        var out: [UInt8] = []
        let body: [UInt8] = Array("hi".utf8)
        Array("a}b".utf8).withUnsafeBytes { room in
            body.withUnsafeBytes { b in
                RESP.appendPublish(&out, sharded: true, channelPrefix: Array("P:room:{".utf8), room: room,
                                   origin: Array("n1\n".utf8), body: b)
                RESP.appendPublish(&out, sharded: false, channelPrefix: Array("P:room:{".utf8), room: room,
                                   origin: Array("n1\n".utf8), body: b)
            }
        }
        let text = String(decoding: out, as: UTF8.self)
        #expect(text == "*3\r\n$8\r\nSPUBLISH\r\n$14\r\nP:room:{a%7Db}\r\n$5\r\nn1\nhi\r\n"
                     + "*3\r\n$7\r\nPUBLISH\r\n$14\r\nP:room:{a%7Db}\r\n$5\r\nn1\nhi\r\n")
    }

    @Test("RESP decimals: every width up to 20 digits, and negatives, written as text")
    func respDecimals() {
        for n in [0, 7, 10, 99, 12_345, Int(Int32.max), 1 << 53, Int.max, -1, -42, Int.min + 1] {
            var out: [UInt8] = []
            RESP.appendDecimal(&out, n)
            #expect(String(decoding: out, as: UTF8.self) == String(n))
        }
    }
}
