extension String {
    /// Whether a part of this path, split at each "/" byte, is `..`. Split by bytes: as Characters, a "/" followed by a
    /// combining mark is one character, which hides the `..` after it ("../\u{301}x" has no ".." Character part).
    public var hasParentPart: Bool {
        utf8.split(separator: UInt8(ascii: "/")).contains { $0.elementsEqual("..".utf8) }
    }
}
