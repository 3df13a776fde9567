import Foundation
import HotSwap
import OpenInference
import Primitives

/// Triton's model repository extension mapped to slots, for both transports (HTTP here, gRPC in
/// `OpenInferenceGRPC`): the index of every slot's models, a load that switches once the model is ready, an unload.
/// Loads and unloads go through the `ControlPlane`: the same verification, roles and audit as `/v1`.
///
/// Thread-safety: a value over thread-safe references.
package struct OpenInferenceRepository: Sendable {
    let control: ControlPlane
    let configuration: ServerConfiguration

    package init(control: ControlPlane, configuration: ServerConfiguration) {
        self.control = control
        self.configuration = configuration
    }

    /// One entry of the index.
    package struct Entry: Sendable, Encodable {
        package var name: String
        package var version: String?
        /// `READY` or `UNAVAILABLE`.
        package var state: String
        /// The model's role (`active`, `staged`, `standby`), or why the slot has none.
        package var reason: String
    }

    /// Every slot's models (active, staged, standby); a slot without any is `UNAVAILABLE` unless `readyOnly`.
    package func index(readyOnly: Bool) -> [Entry] {
        var entries: [Entry] = []
        for name in control.manager.slotNames {
            guard let roles = control.manager.slot(name)?.roles else { continue }
            let models = [("active", roles.active), ("staged", roles.staged), ("standby", roles.standby)]
                .compactMap { role, model in model.map { (role, $0) } }
            if models.isEmpty, !readyOnly {
                entries.append(Entry(name: name, version: nil, state: "UNAVAILABLE", reason: "the slot has no model"))
            }
            for (role, model) in models {
                entries.append(Entry(name: name, version: model.identity.version, state: "READY", reason: role))
            }
        }
        return entries
    }

    /// Loads a model into a slot and waits until it serves (or the load failed).
    ///
    /// What to load comes from the parameters `model` (a path in the model repository), `version`, `sha256`,
    /// `provider`, `policy`, `activate` (default true: a Triton load serves the model), `allow_schema_change`,
    /// `allow_device_change`; or from the `parameters` of the Triton model configuration passed as the parameter
    /// `config` (what `tritonclient`'s `load_model(config=...)` sends; its `default_model_filename` names the model
    /// too). Without a model: nothing to do when the slot serves, else the slot's configured model is loaded.
    /// - Throws: `Problem` (404 for an unknown slot, 400 for bad parameters or a failed load), what
    ///   `ControlPlane.load` throws.
    package func load(slot: String, parameters: [String: InferParameter], by principal: Principal,
                      from remote: String?) async throws {
        // Checked first: without a `model` parameter an unknown slot would otherwise be "nothing to do". Audited as
        // `ControlPlane.load` audits its refusals.
        let body: LoadBody?
        do {
            guard control.manager.slot(slot) != nil else { throw Problem.notFound("unknown model (slot) '\(slot)'") }
            body = try loadBody(slot: slot, parameters)
        } catch {
            await control.auditRejectedLoad(principal, remote, slot, model: nil, version: nil, sha256: nil,
                reason: Problem.from(error).detail, started: Date())
            throw error
        }
        guard let body else { return }
        let status = try await control.load(slot: slot, body: body, by: principal, from: remote).recordedOutcome()
        guard status.stage == .ready else {
            let reason = status.failure.map { control.repository.hidingRoot($0.description) } ?? status.stage.rawValue
            throw Problem(.badRequest, "Load Failed", detail: "load of '\(body.model)' into '\(slot)' failed: \(reason)")
        }
    }

    /// Unloads a slot's models: see `ControlPlane.unload(slot:force:by:from:)`.
    package func unload(slot: String, force: Bool, by principal: Principal, from remote: String?) async throws {
        _ = try await control.unload(slot: slot, force: force, by: principal, from: remote)
    }

    private func loadBody(slot: String, _ parameters: [String: InferParameter]) throws -> LoadBody? {
        var values = parameters
        if let file = values.keys.first(where: { $0.hasPrefix("file:") }) {
            throw Problem.badRequest("'\(file)': models are not uploaded; load a file of the model repository by its "
                + "path (parameter 'model')")
        }
        if let config = values.removeValue(forKey: "config") {
            guard let text = config.text, let object = try? JSONNumbers.decode(ConfigOverride.self,
                      from: Data(text.utf8))
            else { throw Problem.badRequest("parameter 'config' must be a model configuration in JSON") }
            if let file = object.default_model_filename { values["model"] = .string(file) }
            for (key, value) in object.parameters ?? [:] { values[key] = .string(value.string_value) }
        }
        func string(_ key: String) -> String? {
            values[key].map { value in
                switch value {
                case .string(let s): s
                case .int(let i): String(i)
                case .double(let d): String(d)
                case .bool(let b): String(b)
                }
            }
        }
        let settings = ["version", "sha256", "activate", "allow_schema_change", "provider", "allow_device_change",
                        "policy"].filter { values[$0] != nil }
        guard let model = string("model") ?? configuredModel(slot) else {
            // A serving slot loaded again without a model is left as it is (Triton's load of a loaded model); with
            // settings for a load, that would drop them without a word and answer success.
            guard settings.isEmpty else {
                throw Problem.badRequest("'\(settings.joined(separator: "', '"))' given without 'model': name the model "
                    + "to load with them (slot '\(slot)' " + (control.manager.slot(slot)?.roles.active == nil
                        ? "has no configured model)" : "serves a model already)"))
            }
            return nil
        }
        return LoadBody(model: model, version: string("version"), sha256: string("sha256"),
            activate: values["activate"]?.flag ?? true, allow_schema_change: values["allow_schema_change"]?.flag,
            provider: string("provider"), allow_device_change: values["allow_device_change"]?.flag,
            policy: string("policy"))
    }

    /// The configured model of a slot that serves nothing; nil when the slot serves.
    private func configuredModel(_ slot: String) -> String? {
        guard control.manager.slot(slot)?.roles.active == nil else { return nil }
        return configuration.slots[slot]?.model
    }

    /// The keys of a Triton model configuration a load reads.
    private struct ConfigOverride: Decodable {
        struct Parameter: Decodable { var string_value: String }
        var default_model_filename: String?
        var parameters: [String: Parameter]?
    }
}
