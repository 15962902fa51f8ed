import Glibc
import Primitives

// Compressed output: each message is compressed at most once per codec, whatever the number
// of recipients asking for it.

extension Reactor {
    /// Compresses the current message once per codec and frames the shared bytes for `c`.
    func appendCompressedFrame(_ body: UnsafeRawBufferPointer, codec: CompressionCodec, to c: Connection) {
        switch codec {
        case .lz4:
            compressOnce(.lz4, body, into: &compressedLZ4, generation: &lz4Generation)
            appendCompressed(compressedLZ4.readable, codec: codec, block: &lz4Block, blockGeneration: &lz4BlockGeneration, to: c)
        case .zstd:
            compressOnce(.zstd, body, into: &compressedZstd, generation: &zstdGeneration)
            appendCompressed(compressedZstd.readable, codec: codec, block: &zstdBlock, blockGeneration: &zstdBlockGeneration, to: c)
        case .raw:
            appendFrameHeader(count: body.count, codec: 0, to: c)
            c.output.out.appendReserved(body)
        }
    }

    /// Frames this message's compressed bytes for `c`: a header in its own bytes and, at or
    /// over `shared_block_threshold`, a reference to one shared block per message and codec
    /// (made on first use, kept until the next message) instead of a copy per member.
    func appendCompressed(_ compressed: UnsafeRawBufferPointer, codec: CompressionCodec,
                                  block: inout MessageBlock?, blockGeneration: inout UInt64, to c: Connection) {
        let n = compressed.count
        let threshold = config.sharedBlockThreshold
        guard threshold > 0 && n >= threshold else {
            appendFrameHeader(count: n, codec: codec.rawValue, to: c)
            c.output.out.appendReserved(compressed)
            return
        }
        if blockGeneration != renderGeneration || block == nil {
            block?.release(to: pool)
            block = MessageBlock.make(copying: compressed, pool: pool)
            blockGeneration = renderGeneration
        }
        appendFrameHeader(count: n, codec: codec.rawValue, reserveBody: false, to: c)
        queueBlock(block!, length: n, to: c)
    }

    /// Fills `buffer` with `body` compressed by `codec` unless it already holds this message.
    func compressOnce(_ codec: CompressionCodec, _ body: UnsafeRawBufferPointer,
                              into buffer: inout ByteBuffer, generation: inout UInt64) {
        if generation == renderGeneration { return }
        buffer.removeAll()
        compression.compress(codec, body, into: &buffer)
        generation = renderGeneration
    }
}
