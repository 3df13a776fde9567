import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import ImageCodecs
import ONNXRuntime
import ORTBackend
import Testing
import YOLO

extension ORTSwapSuite {
    /// Loads through the optimized-model cache: miss then hit, identical outputs, corrupt entries rebuilt, no cache
    /// problem ever failing a load, and bytes re-checked against the verified digest.
    @Suite("Optimized-model cache")
    struct OptimizedModelCacheTests {
        let environment = ortLoader.environment
        let model = Repository.path("models/yolov3-tiny-coco-320.onnx")
        let secret = OptimizedModelCache.Secret.random()

        /// The model's raw output for bus.jpg.
        private func output(_ session: ORTSession) throws -> [Float] {
            let detector = try Detector(backend: ORTInferenceBackend(session: session))
            let (input, _) = detector.preprocess(try ImageDecoder.decode(Fixtures.busJPEG))
            let outputs = try session.run(.float(input.values, shape: input.shape))
            return try outputs[0].floats()
        }

        private func entries(_ directory: URL) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        }

        @Test("first load optimizes and writes the entry, the next loads it; outputs equal a plain session's bit for bit")
        func missThenHit() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let cache = OptimizedModelCache(directory: directory.path, secret: secret)
            let file = try ModelFile(verifying: model)
            let options = SessionOptions(intraOpThreads: 1)

            let (first, firstOutcome) = try cache.session(for: file, environment: environment, options: options,
                label: model)
            #expect(firstOutcome == .miss)
            let names = try entries(directory)
            #expect(names.count == 2 && names.contains { $0.hasSuffix(".onnx") } && names.contains { $0.hasSuffix(".json") })
            let (second, secondOutcome) = try cache.session(for: file, environment: environment, options: options,
                label: model)
            #expect(secondOutcome == .hit)
            #expect(second.metadata.custom["names"] == first.metadata.custom["names"])
            #expect(second.inputs.map(\.shape) == [[1, 3, 320, 320]])

            let plain = try ORTSession(bytes: try file.readVerifiedBytes(), environment: environment, options: options)
            let expected = try output(plain)
            #expect(try output(first) == expected)
            #expect(try output(second) == expected)
        }

        @Test("the cache folder is created 0700 and its entries 0600, whatever the umask lets through")
        func privateModes() throws {
            let parent = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: parent) }
            let directory = parent.appendingPathComponent("state/optimized-models").path
            let cache = OptimizedModelCache(directory: directory, secret: secret)
            let (_, outcome) = try cache.session(for: try ModelFile(verifying: model), environment: environment,
                options: SessionOptions(intraOpThreads: 1), label: model)
            #expect(outcome == .miss)
            #expect(try permissions(of: parent.appendingPathComponent("state").path) == 0o700)
            #expect(try permissions(of: directory) == 0o700)
            let files = try permissionsOfEntries(in: directory)
            #expect(files.count == 2)
            for (name, mode) in files { #expect(mode == 0o600, "\(name) is \(String(mode, radix: 8))") }
        }

        @Test("an entry whose bytes changed is removed and rebuilt from the verified model")
        func corruptEntryRebuilt() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let cache = OptimizedModelCache(directory: directory.path, secret: secret)
            let file = try ModelFile(verifying: model)
            _ = try cache.session(for: file, environment: environment, options: .init(), label: model)
            let entry = directory.appendingPathComponent(try #require(try entries(directory).first { $0.hasSuffix(".onnx") }))
            var bytes = try [UInt8](Data(contentsOf: entry))
            bytes[bytes.count / 2] ^= 0xff
            try Data(bytes).write(to: entry)

            let (_, outcome) = try cache.session(for: file, environment: environment, options: .init(), label: model)
            #expect(outcome == .miss)
            let (_, again) = try cache.session(for: file, environment: environment, options: .init(), label: model)
            #expect(again == .hit)
        }

        /// The entry and manifest file names in `directory`.
        private func entryFiles(_ directory: URL) throws -> (entry: URL, manifest: URL) {
            let name = try #require(try entries(directory).first { $0.hasSuffix(".onnx") })
            let entry = directory.appendingPathComponent(name)
            return (entry, entry.deletingPathExtension().appendingPathExtension("json"))
        }

        @Test("an entry swapped for another model's optimized graph, its manifest rewritten to match, is rebuilt")
        func swappedEntryWithRewrittenManifestRebuilt() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let options = SessionOptions(intraOpThreads: 1)
            let cache = OptimizedModelCache(directory: directory.appendingPathComponent("cache").path, secret: secret)
            let file = try ModelFile(verifying: model)
            _ = try cache.session(for: file, environment: environment, options: options, label: model)
            let (entry, manifest) = try entryFiles(URL(fileURLWithPath: cache.directory))

            // What an attacker who can write the cache folder does: put another valid model's optimized graph in
            // place of the entry, and rewrite the manifest's digest and size of the optimized file to match it.
            let other = OptimizedModelCache(directory: directory.appendingPathComponent("other").path, secret: secret)
            _ = try other.session(for: try ModelFile(verifying: Fixtures.yolov3Tiny416), environment: environment,
                options: options, label: Fixtures.yolov3Tiny416)
            let otherEntry = try entryFiles(URL(fileURLWithPath: other.directory)).entry
            let swapped = try Data(contentsOf: otherEntry)
            try swapped.write(to: entry)
            var fields = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: manifest)) as? [String: Any])
            fields["optimized_sha256"] = try Fixtures.sha256(entry.path)
            if fields["optimized_byte_count"] != nil { fields["optimized_byte_count"] = swapped.count }
            try JSONSerialization.data(withJSONObject: fields).write(to: manifest)

            let (session, outcome) = try cache.session(for: file, environment: environment, options: options,
                label: model)
            #expect(outcome == .miss)
            let plain = try ORTSession(bytes: try file.readVerifiedBytes(), environment: environment, options: options)
            #expect(try output(session) == output(plain))
            #expect(try Fixtures.sha256(entry.path) != Fixtures.sha256(otherEntry.path), "the swapped entry was kept")
            let (_, again) = try cache.session(for: file, environment: environment, options: options, label: model)
            #expect(again == .hit)
        }

        @Test("an entry whose manifest was authenticated with another cache's key is refused and rebuilt")
        func manifestFromAnotherKeyRefused() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let options = SessionOptions(intraOpThreads: 1)
            let file = try ModelFile(verifying: model)
            let foreign = OptimizedModelCache(directory: directory.path, secret: .random())
            let (_, written) = try foreign.session(for: file, environment: environment, options: options, label: model)
            #expect(written == .miss)

            let cache = OptimizedModelCache(directory: directory.path, secret: secret)
            let (session, outcome) = try cache.session(for: file, environment: environment, options: options,
                label: model)
            #expect(outcome == .miss)
            let plain = try ORTSession(bytes: try file.readVerifiedBytes(), environment: environment, options: options)
            #expect(try output(session) == output(plain))
            let (_, again) = try cache.session(for: file, environment: environment, options: options, label: model)
            #expect(again == .hit)
        }

        @Test("the secret file is made 0600 outside the cache, read back as the same key; a malformed one is refused")
        func secretFile() throws {
            let state = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: state) }
            let path = state.appendingPathComponent("optimized-models.key").path
            let first = try OptimizedModelCache.Secret.loadOrCreate(atPath: path)
            #expect(try permissions(of: path) == 0o600)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count == OptimizedModelCache.Secret.byteCount)
            let file = try ModelFile(verifying: model)
            let directory = state.appendingPathComponent("optimized-models").path
            let (_, written) = try OptimizedModelCache(directory: directory, secret: first).session(for: file,
                environment: environment, options: .init(), label: model)
            #expect(written == .miss)
            // Another process (a restart) reads the same key, so the entry is still valid.
            let second = try OptimizedModelCache.Secret.loadOrCreate(atPath: path)
            let (_, reused) = try OptimizedModelCache(directory: directory, secret: second).session(for: file,
                environment: environment, options: .init(), label: model)
            #expect(reused == .hit)

            try Data("short".utf8).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: CacheSecretError.self) {
                _ = try OptimizedModelCache.Secret.loadOrCreate(atPath: path)
            }
            #expect(error?.path == path)
            // Longer than a key (read from the descriptor checked, no further than a byte past the key): refused.
            try Data(repeating: 7, count: 40).write(to: URL(fileURLWithPath: path))
            let long = #expect(throws: CacheSecretError.self) {
                _ = try OptimizedModelCache.Secret.loadOrCreate(atPath: path)
            }
            #expect("\(String(describing: long))".contains("33 bytes"), "\(String(describing: long))")

            // Readable by others (a volume whose group Kubernetes sets again at each start): made 0600 again, and read
            // (it was used as it was). A link to a valid key: refused (it was followed).
            let other = state.appendingPathComponent("other.key").path
            _ = try OptimizedModelCache.Secret.loadOrCreate(atPath: other)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: other))
            chmod(other, 0o660)
            _ = try OptimizedModelCache.Secret.loadOrCreate(atPath: other)
            #expect(try permissions(of: other) == 0o600)
            #expect(try Data(contentsOf: URL(fileURLWithPath: other)) == bytes)
            let link = state.appendingPathComponent("link.key").path
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: other)
            #expect(throws: CacheSecretError.self) { _ = try OptimizedModelCache.Secret.loadOrCreate(atPath: link) }
        }

        @Test("entries are not written when the folder above the cache lets others replace it; those there are read, checked")
        func unsafeParentBypassed() throws {
            let state = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: state) }
            chmod(state.path, 0o700)
            let options = SessionOptions(intraOpThreads: 1)
            let (file, second) = (try ModelFile(verifying: model), try ModelFile(verifying: Fixtures.yolov3Tiny416))
            let cache = OptimizedModelCache(directory: state.appendingPathComponent("optimized-models").path,
                secret: secret)
            #expect(try cache.session(for: file, environment: environment, options: options, label: model).1 == .miss)
            // Group-writable, not sticky: a group member could swap the cache folder while ORT writes in it by path.
            chmod(state.path, 0o775)
            #expect(try cache.session(for: second, environment: environment, options: options, label: model).1
                == .bypassed)
            #expect(cache.whyEntriesCannotBeWritten()?.contains("the folder above the cache") == true)
            // An entry written before is still read (read once into memory, checked against its manifest's code).
            #expect(try cache.session(for: file, environment: environment, options: options, label: model).1 == .hit)
            // Sticky, as /tmp is: others cannot rename or remove this user's folder.
            chmod(state.path, 0o1777)
            #expect(try cache.session(for: second, environment: environment, options: options, label: model).1
                == .miss)
        }

        @Test("temporary files of a writer that is gone are removed; a live writer's, and recent unnamed ones, are kept")
        func abandonedTemporaries() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            // A process that has exited: its pid is free (reuse within this test is unlikely on a 4M pid space).
            let exited = Process()
            exited.executableURL = URL(fileURLWithPath: "/bin/true")
            try exited.run()
            exited.waitUntilExit()
            let dead = exited.processIdentifier, alive = getpid(), key = String(repeating: "ab", count: 32)
            let names = [
                "\(key).onnx.\(dead)-A.tmp", "\(key).onnx.\(dead)-A.source.tmp", "\(key).onnx.\(dead)-A.tmp.stdout",
                "\(key).onnx.\(dead)-A.tmp.stderr", "\(key).json.\(dead)-B.tmp",
                "\(key).onnx.\(alive)-C.tmp", "\(key).onnx.OLD-UNNAMED.tmp", "\(key).onnx.NEW-UNNAMED.tmp",
                "\(key).onnx", "\(key).json",
            ]
            for name in names {
                #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: Data()))
            }
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -7200)],
                ofItemAtPath: directory.appendingPathComponent("\(key).onnx.OLD-UNNAMED.tmp").path)
            let cache = OptimizedModelCache(directory: directory.path, secret: secret)
            cache.removeAbandonedFiles()
            #expect(try entries(directory) == ["\(key).json", "\(key).onnx", "\(key).onnx.\(alive)-C.tmp",
                "\(key).onnx.NEW-UNNAMED.tmp"].sorted())
            // At a start, nothing of this process writes yet: a file under its own id is a previous process's (a
            // container's PID 1 every time), kept for good before.
            cache.removeAbandonedFiles(atStart: true)
            #expect(try entries(directory) == ["\(key).json", "\(key).onnx", "\(key).onnx.NEW-UNNAMED.tmp"].sorted())
        }

        @Test("a cache that cannot be written falls back to a plain load")
        func unwritableBypasses() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            // The cache "directory" is a regular file: nothing can be created in it.
            let blocker = directory.appendingPathComponent("not-a-directory")
            try Data("x".utf8).write(to: blocker)
            let cache = OptimizedModelCache(directory: blocker.path, secret: secret)
            let (session, outcome) = try cache.session(for: try ModelFile(verifying: model), environment: environment,
                options: .init(), label: model)
            #expect(outcome == .bypassed)
            #expect(session.outputs.first?.shape == [1, 1500, 85])
        }

        @Test("a cache folder others may write is not written: a miss is a plain load")
        func sharedFolderBypasses() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            // Whoever may write the folder could replace the copy ORT optimizes, or its output, between our calls.
            try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory.path)
            let cache = OptimizedModelCache(directory: directory.path, secret: secret)
            #expect(cache.whyEntriesCannotBeWritten()?.contains("nobody else may write") == true)
            let (session, outcome) = try cache.session(for: try ModelFile(verifying: model), environment: environment,
                options: .init(), label: model)
            #expect(outcome == .bypassed)
            #expect(session.outputs.first?.shape == [1, 1500, 85])
            #expect(try entries(directory).isEmpty)
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: directory.path)
            #expect(cache.whyEntriesCannotBeWritten() == nil)
            // A folder that cannot be made (its parent is a file) says why.
            let blocked = OptimizedModelCache(directory: directory.appendingPathComponent("model-file/cache").path,
                secret: secret)
            try Data().write(to: directory.appendingPathComponent("model-file"))
            #expect(blocked.whyEntriesCannotBeWritten()?.hasPrefix("cannot create") == true)
            #expect(try cache.session(for: try ModelFile(verifying: model), environment: environment, options: .init(),
                label: model).1 == .miss)
        }

        @Test("entries are per optimization level; a disabled level bypasses the cache")
        func keyedByOptions() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let cache = OptimizedModelCache(directory: directory.path, secret: secret)
            let file = try ModelFile(verifying: model)
            _ = try cache.session(for: file, environment: environment, options: .init(optimization: .all), label: model)
            let (_, basic) = try cache.session(for: file, environment: environment, options: .init(optimization: .basic),
                label: model)
            #expect(basic == .miss)
            #expect(try entries(directory).count == 4)
            let (_, disabled) = try cache.session(for: file, environment: environment,
                options: .init(optimization: .disabled), label: model)
            #expect(disabled == .bypassed)
        }

        @Test("a model file replaced after verification is refused on a miss (digest re-checked on the bytes loaded)")
        func changedAfterVerification() throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let copy = directory.appendingPathComponent("model.onnx")
            try FileManager.default.copyItem(atPath: model, toPath: copy.path)
            let file = try ModelFile(verifying: copy.path)
            try FileManager.default.removeItem(at: copy)
            try FileManager.default.copyItem(atPath: Fixtures.yolov3Tiny416, toPath: copy.path)

            let cache = OptimizedModelCache(directory: directory.appendingPathComponent("cache").path, secret: secret)
            let error = #expect(throws: ModelLoadError.self) {
                _ = try cache.session(for: file, environment: environment, options: .init(), label: copy.path)
            }
            guard case .file(.changedSinceVerification(_, let verified, _)) = error else {
                Issue.record("expected changedSinceVerification, got \(String(describing: error))")
                return
            }
            #expect(verified == file.sha256)
        }

        @Test("through the manager: a swap back to a model loaded before hits the cache")
        func managerHits() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            var loader = ortLoader
            loader.cache = OptimizedModelCache(directory: directory.path, secret: secret)
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: loader)
            let slot = try await manager.createSlot("default")
            func outcome() -> OptimizedModelCache.Outcome? {
                (slot.roles.active?.detector.backend as? ORTInferenceBackend)?.cacheOutcome
            }
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            #expect(outcome() == .miss)
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity320))
            #expect(outcome() == .miss)
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            #expect(outcome() == .hit)
            let result = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(result.model.sha256 == (try Fixtures.sha256(Fixtures.identity416)))
            await manager.shutdown()
        }
    }
}
