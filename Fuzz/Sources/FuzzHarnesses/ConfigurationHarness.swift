import Server

/// The YAML configuration file, as `yoloswap serve --config` reads it (`ServerConfiguration.parse`): every value is
/// range-checked, so any document either parses or throws a `ConfigurationError`; none may trap.
public enum ConfigurationHarness {
    public static func run(_ data: UnsafeBufferPointer<UInt8>) {
        _ = try? ServerConfiguration.parse(String(decoding: data, as: UTF8.self), file: "fuzz.yaml", base: "/srv")
    }
}
