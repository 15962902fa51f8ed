// An independent client: scripts/ws_interop.py (Python's `websockets` package) against an
// in-process server in both io modes — chat among two WebSocket clients and a JSON-lines one,
// fragments, ping payloads, close 1009 and 1000. `make deps` installs the package.

import Foundation
import Testing
import UringServer

@Suite("WebSocket: Python websockets interop")
struct WebSocketInteropTests {

    @Test("scripts/ws_interop.py passes", .timeLimit(.minutes(2)), arguments: allIOModes)
    func interop(mode: IOModeSetting) throws {
        let script = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/ws_interop.py").path
        try withServer(mode) { port in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", script, "--port", String(port)]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(text)")
            #expect(text.contains("ws_interop: OK"), "\(text)")
        }
    }
}
