import Foundation
import MultipartKit
import NIOCore

/// Why a `multipart/form-data` request body (RFC 7578) gave no image.
package enum MultipartError: Error, CustomStringConvertible {
    /// The content type has no `boundary` parameter.
    case missingBoundary
    /// The boundary is empty, longer than RFC 2046's 70 characters, or has a character outside its set.
    case invalidBoundary(length: Int)
    /// The parser met bytes that are not a delimiter, a part header or the blank line after the headers.
    case malformed(field: String, from: Int, to: Int)
    /// No part is named `field`.
    case fieldMissing(String)
    /// The part named `field` has no content.
    case fieldEmpty(String)
    /// The part named `field` is not closed by a delimiter before the body ends.
    case fieldUnterminated(String)
    /// A part's headers run past `limit` bytes from `from` (multipart-kit keeps a header whole, and copies it again
    /// at every chunk).
    case headersTooLong(field: String, from: Int, limit: Int)

    package var description: String {
        switch self {
        case .missingBoundary:
            return "multipart/form-data without a boundary"
        case .invalidBoundary(let length):
            return "multipart/form-data with an invalid boundary (\(length) characters): RFC 2046 allows 1 to 70 "
                + "digits, letters and '()+_,-./:=? (a space, but not at the end)"
        case .malformed(let field, let from, let to):
            return "malformed multipart/form-data body (looking for the field '\(field)'): bytes \(from)..<\(to) "
                + "hold something other than a delimiter, 'Name: value' part headers or the blank line after them"
        case .fieldMissing(let field):
            return "multipart/form-data without a non-empty field '\(field)'"
        case .fieldEmpty(let field):
            return "multipart/form-data with an empty field '\(field)': it must hold the image"
        case .fieldUnterminated(let field):
            return "multipart/form-data whose field '\(field)' is not closed by a delimiter: the body is truncated"
        case .headersTooLong(let field, let from, let limit):
            return "multipart/form-data (looking for the field '\(field)') with part headers longer than \(limit) "
                + "bytes, from byte \(from)"
        }
    }
}

/// Takes one field's content out of a `multipart/form-data` body (RFC 7578) as the body streams in.
///
/// Parsing is multipart-kit's `MultipartParser`, a state machine that looks at each byte once whatever the boundary,
/// so a body costs time in proportion to its length. Only the wanted field's bytes are kept; other parts are skipped.
/// The first complete part whose `Content-Disposition` names the field (compared without regard to case) wins, and
/// nothing after it is parsed.
///
/// Thread-safety: none (`MultipartParser` is a mutable class). One request's task creates a reader, feeds it the body
/// in order and then asks for the field.
///
/// `package` (with `init`, `feed` and `content`) for the fuzz target that drives it as the server does.
package final class MultipartFieldReader {
    /// The most bytes parsed between two suspensions, so that one large body buffer does not hold a thread of the
    /// cooperative pool for the whole of its parse.
    static let step = 64 << 10

    let field: String
    private let parser: MultipartParser
    /// The content of the current part while it is the wanted field.
    private var collecting: ByteBuffer?
    private var found: ByteBuffer?
    private var fed = 0
    private var headerNames: HeaderNameGuard

    /// - Parameters:
    ///   - contentType: the request's `Content-Type`, whose `boundary` parameter separates the parts.
    ///   - field: the name of the part to keep.
    /// - Throws: `MultipartError.missingBoundary` or `.invalidBoundary`.
    package init(contentType: String, field: String) throws(MultipartError) {
        guard let boundary = HeaderParameters.value(of: "boundary", in: contentType) else {
            throw .missingBoundary
        }
        guard Self.isValid(boundary: boundary) else { throw .invalidBoundary(length: boundary.count) }
        self.field = field
        parser = MultipartParser(boundary: boundary)
        headerNames = HeaderNameGuard(boundary: boundary)
        let wanted = field.lowercased()
        parser.onHeader = { [unowned self] name, value in
            guard name.lowercased() == "content-disposition" else { return }
            let named = HeaderParameters.value(of: "name", in: value)?.lowercased() == wanted
            collecting = named ? ByteBuffer() : nil
        }
        parser.onBody = { [unowned self] chunk in _ = collecting?.writeBuffer(&chunk) }
        parser.onPartComplete = { [unowned self] in
            if found == nil, let collecting { found = collecting }
            collecting = nil
        }
    }

    /// Parses the next bytes of the body, suspending between steps of ``step`` bytes. Does nothing once the field
    /// has been found.
    /// - Throws: `MultipartError.malformed` with the offsets of the step that failed.
    package func feed(_ chunk: ByteBuffer) async throws(MultipartError) {
        var rest = chunk
        while found == nil, let piece = rest.readSlice(length: min(rest.readableBytes, Self.step)),
            piece.readableBytes > 0
        {
            if let offset = headerNames.firstTrap(in: piece) {
                if headerNames.headersTooLong {
                    throw .headersTooLong(field: field, from: fed + offset - HeaderNameGuard.maxHeaderBytes,
                        limit: HeaderNameGuard.maxHeaderBytes)
                }
                throw .malformed(field: field, from: fed + offset, to: fed + offset + 1)
            }
            do { try parser.execute(piece) } catch {
                throw .malformed(field: field, from: fed, to: fed + piece.readableBytes)
            }
            fed += piece.readableBytes
            if rest.readableBytes > 0 { await Task.yield() }
        }
    }

    /// The field's content, once the whole body has been fed.
    /// - Throws: `MultipartError.fieldMissing`, `.fieldEmpty` or `.fieldUnterminated`.
    package func content() throws(MultipartError) -> [UInt8] {
        guard var found else { throw collecting == nil ? .fieldMissing(field) : .fieldUnterminated(field) }
        guard found.readableBytes > 0 else { throw .fieldEmpty(field) }
        return found.readBytes(length: found.readableBytes) ?? []
    }

    /// RFC 2046's `boundary := 0*69<bchars> bcharsnospace`.
    static func isValid(boundary: String) -> Bool {
        let bytes = Array(boundary.utf8)
        guard (1...70).contains(bytes.count), bytes.last != UInt8(ascii: " ") else { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "A")...UInt8(ascii: "Z"):
                return true
            default:
                return Array("'()+_,-./:=? ".utf8).contains(byte)
            }
        }
    }
}

/// Finds the bytes multipart-kit 4.7.1 would trap on, before it sees them.
///
/// `MultipartParser` looks each byte of a part header's name up in a 128-entry table: a byte of 0x80 or more there is
/// an index out of range, which kills the process. This guard follows the body as the parser may read it and reports
/// the first such byte, so that the body is refused as malformed instead.
///
/// It errs towards looking at more bytes than the parser reads as names, never fewer. It runs as a small
/// nondeterministic automaton: the set of states the parser could be in, among "in a body" (the empty set), "CR then
/// LF expected after a delimiter", "in a header name" (empty or not), "in a value", "LF expected after a value". A
/// header block may begin after every `--boundary` (the parser needs CRLF before it outside the preamble, the guard
/// does not), and the search for the next one runs on every byte, also inside a header block — where the parser reads
/// `--boundary` as bytes of a name or a value, so the block already followed goes on beside the new one. Names are
/// followed as the parser reads them: token bytes until a colon, the value until CR, LF, the next name; CR at the
/// start of a name ends the block; what would make the parser throw ends that path (the parser stops there anyway).
///
/// It also bounds a header block: more than `maxHeaderBytes` bytes in a row during which the parser could be reading
/// headers end the body (multipart-kit keeps a header whole until its end, copying it again at every chunk, and then
/// hands it over as strings in one call, which a 20 MiB header makes a long one).
///
/// Linear: each byte is looked at once, with a Knuth–Morris–Pratt search for the delimiter and at most six states.
/// Thread-safety: none, a value owned by its reader.
struct HeaderNameGuard {
    /// The longest header block (a part's headers, from its delimiter to the blank line) accepted.
    static let maxHeaderBytes = 16 << 10
    /// The states, as bits of a set.
    private enum Bit {
        static let expectCR: UInt8 = 1, expectLF: UInt8 = 2, emptyName: UInt8 = 4, name: UInt8 = 8, value: UInt8 = 16,
            valueLF: UInt8 = 32
    }

    private let delimiter: [UInt8]
    /// KMP failure function of `delimiter`.
    private let fallback: [Int]
    private var matched = 0
    private var states: UInt8 = 0
    /// Bytes in a row with a header path alive (`states` not empty).
    private var headerBytes = 0

    /// Whether the trap reported was a header block over `maxHeaderBytes`.
    var headersTooLong: Bool { headerBytes > Self.maxHeaderBytes }

    init(boundary: String) {
        delimiter = Array("--\(boundary)".utf8)
        var fallback = [Int](repeating: 0, count: delimiter.count)
        var k = 0
        for i in delimiter.indices.dropFirst() {
            while k > 0, delimiter[i] != delimiter[k] { k = fallback[k - 1] }
            if delimiter[i] == delimiter[k] { k += 1 }
            fallback[i] = k
        }
        self.fallback = fallback
    }

    /// The offset in `bytes` of the first byte the parser could trap on, or nil; the state carries over to the next
    /// call, as the parser's does.
    mutating func firstTrap(in bytes: ByteBuffer) -> Int? {
        bytes.withUnsafeReadableBytes { raw in
            for (offset, byte) in raw.enumerated() {
                if advance(byte) { return offset }
                headerBytes = states == 0 ? 0 : headerBytes + 1
                if headersTooLong { return offset }
            }
            return nil
        }
    }

    /// Takes one byte; true when the parser could read it as part of a header name and trap.
    private mutating func advance(_ byte: UInt8) -> Bool {
        var next: UInt8 = 0
        if states != 0 {
            if states & Bit.expectCR != 0, byte == 13 { next |= Bit.expectLF }
            if states & Bit.expectLF != 0, byte == 10 { next |= Bit.emptyName }
            if states & (Bit.emptyName | Bit.name) != 0 {
                if byte >= 0x80 { return true }
                if byte == UInt8(ascii: ":") {
                    if states & Bit.name != 0 { next |= Bit.value }
                } else if Self.isTokenByte(byte) {
                    next |= Bit.name
                }
                // CR: the blank line that ends the headers (or, within a name, a syntax error); anything else: the
                // parser throws. Either way that path ends.
            }
            if states & Bit.value != 0 { next |= byte == 13 ? Bit.valueLF : Bit.value }
            if states & Bit.valueLF != 0, byte == 10 { next |= Bit.emptyName }
        }
        // The delimiter search runs on every byte, whatever the states.
        while matched > 0, byte != delimiter[matched] { matched = fallback[matched - 1] }
        if byte == delimiter[matched] { matched += 1 }
        if matched == delimiter.count {
            matched = fallback[matched - 1]
            next |= Bit.expectCR
        }
        states = next
        return false
    }

    /// RFC 822's token bytes, as multipart-kit's table has them: visible ASCII but `()<>@,;:\"/[]?={}` and DEL.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        byte > 32 && byte < 127 && !separators.contains(byte)
    }

    private static let separators = Set(#"()<>@,;:\"/[]?={}"#.utf8)
}

/// The parameters of a header value such as `form-data; name="image"` or `multipart/form-data; boundary=x`
/// (RFC 9110 section 5.6.6): `;`-separated `name=value` pairs, the value a token or a quoted string.
///
/// Thread-safety: stateless.
enum HeaderParameters {
    /// The value of the parameter `name` (compared without regard to case), unquoted; nil when it is absent.
    static func value(of name: String, in header: String) -> String? {
        var scanner = Substring(header)
        // Skip the leading type ("form-data", "multipart/form-data").
        guard let firstSemicolon = scanner.firstIndex(of: ";") else { return nil }
        scanner = scanner[scanner.index(after: firstSemicolon)...]
        while !scanner.isEmpty {
            scanner = scanner.drop { $0 == " " || $0 == "\t" }
            let key = scanner.prefix { $0 != "=" && $0 != ";" }
            scanner = scanner[key.endIndex...]
            var value = ""
            if scanner.first == "=" {
                scanner = scanner.dropFirst()
                if scanner.first == "\"" {
                    scanner = scanner.dropFirst()
                    while let character = scanner.first, character != "\"" {
                        scanner = scanner.dropFirst()
                        if character == "\\", let escaped = scanner.first {
                            value.append(escaped)
                            scanner = scanner.dropFirst()
                        } else {
                            value.append(character)
                        }
                    }
                    scanner = scanner.dropFirst()
                    scanner = scanner.drop { $0 != ";" }
                } else {
                    let token = scanner.prefix { $0 != ";" }
                    value = token.trimmingCharacters(in: .whitespaces)
                    scanner = scanner[token.endIndex...]
                }
            }
            if key.trimmingCharacters(in: .whitespaces).lowercased() == name.lowercased() { return value }
            scanner = scanner.dropFirst()  // the ";"
        }
        return nil
    }
}
