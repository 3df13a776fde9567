import Foundation

/// The permission bits of the file or folder at `path`, e.g. `0o600`; a final symbolic link is not followed.
public func permissions(of path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    guard let mode = attributes[.posixPermissions] as? Int else {
        throw CocoaError(.fileReadUnknown, userInfo: [NSFilePathErrorKey: path])
    }
    return mode & 0o777
}

/// Each entry of the folder at `path` (by name) with its permission bits, for tests of what a component creates.
public func permissionsOfEntries(in path: String) throws -> [String: Int] {
    var modes: [String: Int] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: path) {
        modes[name] = try permissions(of: path + "/" + name)
    }
    return modes
}
