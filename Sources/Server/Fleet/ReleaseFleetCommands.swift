import Fleet
import Foundation
import Primitives
import Releases

/// The releases API over MQTT: the `release-*` command actions and the `releases` section of the device's status.
///
/// - `release-start` with `slot` and `release` (the body of `POST /v1/slots/{slot}/release`); its result comes once the
///   candidate is up and taking traffic, or refused (the golden-set gate, a failed load) — the outcome as
///   `GET .../release` shows it.
/// - `release-promote`, `release-pause`, `release-resume`, `release-abort` with `slot`; `release-status` reads it.
///
/// Each runs through `ControlPlane` with the command's principal (`mqtt:<client id>`), so it is checked, serialized and
/// audited as over HTTP. Thread-safety: stateless.
struct ReleaseFleetCommand: FleetCommandHandler {
    let action: String
    var fields: Set<String>? { action == "start" ? ["slot", "release"] : ["slot"] }

    /// Every release action, by name, for `FleetAgent(handlers:)`.
    static var handlers: [String: any FleetCommandHandler] {
        Dictionary(uniqueKeysWithValues: ["start", "promote", "pause", "resume", "abort", "status"].map {
            ("release-\($0)", ReleaseFleetCommand(action: $0) as any FleetCommandHandler)
        })
    }

    /// The `releases` status section: each slot's current or last release, its phase and the candidate's share.
    static func status(_ control: ControlPlane) -> FleetStatusContributor {
        { @Sendable in
            let releases = control.manager.slotNames.compactMap { name -> (String, FleetJSON)? in
                guard let status = try? control.releaseStatus(slot: name) else { return nil }
                return (name, .object([
                    "id": .string(status.record.id), "phase": .string(status.record.phase.rawValue),
                    "strategy": .string(status.record.spec.strategy.rawValue),
                    "candidate_percent": .number(status.candidate_percent),
                    "candidate_sha256": status.record.candidate.map { .string($0.sha256) } ?? .null,
                ]))
            }
            return releases.isEmpty ? nil : .object(Dictionary(uniqueKeysWithValues: releases))
        }
    }

    /// The `release` object of a `release-start` payload (the payload's other fields are `FleetCommand`'s), decoded
    /// as the HTTP body is: unknown keys refused.
    private static func releaseSpec(in payload: [UInt8]) throws -> ReleaseSpec {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
              let release = object["release"], release is [String: Any],
              let data = try? JSONSerialization.data(withJSONObject: release) else {
            throw FleetRefusal(.malformed, "release-start needs a release object (the body of POST .../release)")
        }
        do { return try StrictJSON.decode(ReleaseSpec.self, from: data) } catch let unknown as StrictJSON.UnknownKeys {
            throw FleetRefusal(.malformed, "release: \(unknown)")
        } catch {
            throw FleetRefusal(.malformed, "release: not a release object (the body of POST .../release)")
        }
    }

    func run(_ command: FleetCommand, payload: [UInt8], by principal: Principal, control: ControlPlane) async throws
        -> FleetJSON?
    {
        guard let slot = command.slot else { throw FleetRefusal(.malformed, "release-\(action) needs a slot") }
        let status: ReleaseStatus
        switch action {
        case "start":
            let spec = try Self.releaseSpec(in: payload)
            let run = try await control.startRelease(slot: slot, spec: spec, by: principal, from: nil)
            await run.bringUp.withLock({ $0 })?.value
            // This release's own status (the slot's may be another's by now); a start succeeded only when its release
            // takes traffic — one aborted while loading, or left loading by a shutdown, did not.
            status = run.engine.status(energy: run.energy.reading())
            switch status.record.phase {
            case .running, .paused, .promoting, .promoted: break
            default:
                throw ReleaseError.refused(status.record.reason
                    ?? "the release is \(status.record.phase.rawValue), not taking traffic")
            }
            return FleetJSON.from(ReleaseDTO(status, disagreements: run.disagreements.ids,
                repository: control.repository))
        case "promote": status = try await control.promoteRelease(slot: slot, by: principal, from: nil)
        case "abort": status = try await control.abortRelease(slot: slot, by: principal, from: nil)
        case "pause", "resume":
            status = try await control.pauseRelease(slot: slot, by: principal, from: nil, pause: action == "pause")
        default: status = try control.releaseStatus(slot: slot)
        }
        let run = control.releaseRun(slot)
        return FleetJSON.from(ReleaseDTO(status, disagreements: run?.disagreements.ids ?? [],
            repository: control.repository))
    }
}
