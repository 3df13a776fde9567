import Foundation
import TestSupport
import Testing

/// `deploy/kubernetes` rendered by `kubectl kustomize` and checked against the code: the real server runs the
/// Secret's configuration with the ConfigMap's desired state mounted as kubelet mounts it, the probe paths answer,
/// the ports, paths, flags and selectors agree.
@Suite("Kubernetes base renders and agrees with the code", .serialized, .timeLimit(.minutes(3)))
struct KubernetesManifestTests {
    /// The rendered objects, by kind.
    static func render() throws -> [String: [String: Any]] {
        let rendered = try runProcess("/usr/bin/kubectl", ["kustomize", Repository.path("deploy/kubernetes")])
        try #require(rendered.status == 0, "\(rendered.stderr)")
        let folder = try TemporaryDirectory(prefix: "kustomize")
        try rendered.stdout.write(toFile: folder.file("rendered.yaml"), atomically: true, encoding: .utf8)
        let json = try runProcess(Repo.python, ["-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            folder.file("rendered.yaml")])
        try #require(json.status == 0, "\(json.stderr)")
        let objects = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        var byKind: [String: [String: Any]] = [:]
        for object in objects {
            let kind = try #require(object["kind"] as? String)
            #expect(byKind[kind] == nil, "two objects of kind \(kind)")
            byKind[kind] = object
        }
        return byKind
    }

    @Test("every object is there; the Deployment's flags, mounts, probes, ports and selectors agree with the code")
    func renderedBaseAgreesWithTheCode() async throws {
        let objects = try Self.render()
        #expect(Set(objects.keys) == ["Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"])
        let deployment = try #require(objects["Deployment"])
        let spec = try #require((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])
        let podLabels = try #require((spec["metadata"] as? [String: Any])?["labels"] as? [String: String])
        let pod = try #require(spec["spec"] as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        #expect(container["image"] as? String == "yoloswap:latest")
        #expect(container["command"] == nil)  // the image's entry point is the binary

        // Flags: each is one `yoloswap serve` has.
        let args = try #require(container["args"] as? [String])
        #expect(args.first == "serve")
        let help = try await runProcess(Repo.binary, ["serve", "--help"])
        for flag in args where flag.hasPrefix("--") { #expect(help.stdout.contains(flag), "unknown flag \(flag)") }
        func argument(_ flag: String) throws -> String {
            let index = try #require(args.firstIndex(of: flag))
            return args[index + 1]
        }

        // Mounts: the configuration is the Secret's key, the watched path the ConfigMap's key, through a folder
        // mount (a subPath mount is never updated by kubelet).
        let mounts = try #require(container["volumeMounts"] as? [[String: Any]])
        let volumes = try #require(pod["volumes"] as? [[String: Any]])
        func mount(ofVolumeWith key: String) throws -> [String: Any] {
            let volume = try #require(volumes.first { $0[key] != nil })
            return try #require(mounts.first { $0["name"] as? String == volume["name"] as? String })
        }
        let secret = try #require(objects["Secret"])
        let configMap = try #require(objects["ConfigMap"])
        let configText = try #require((secret["stringData"] as? [String: String])?["config.yaml"])
        let desiredText = try #require((configMap["data"] as? [String: String])?["desired.yaml"])
        let configMount = try mount(ofVolumeWith: "secret")
        #expect(try argument("--config") == configMount["mountPath"] as! String + "/config.yaml")
        let desiredMount = try mount(ofVolumeWith: "configMap")
        #expect(desiredMount["subPath"] == nil)
        #expect(try argument("--desired-state") == desiredMount["mountPath"] as! String + "/desired.yaml")
        #expect(configText.contains("desired_state: \(try argument("--desired-state"))"))
        #expect(container["securityContext"].flatMap { ($0 as? [String: Any])?["readOnlyRootFilesystem"] as? Bool }
            == true)
        #expect((pod["securityContext"] as? [String: Any])?["runAsNonRoot"] as? Bool == true)
        let writable = Set(mounts.filter { $0["readOnly"] as? Bool != true }.compactMap { $0["mountPath"] as? String })
        #expect(writable.contains("/var/lib/yoloswap") && configText.contains("state_dir: /var/lib/yoloswap"))
        #expect(container["resources"] != nil)

        // Ports: the container's port is the configured one; the Service and the ServiceMonitor use it by name.
        let port = try #require((container["ports"] as? [[String: Any]])?.first)
        #expect(configText.contains("port: \(port["containerPort"] as? Int ?? -1)"))
        let service = try #require(objects["Service"]?["spec"] as? [String: Any])
        let servicePort = try #require((service["ports"] as? [[String: Any]])?.first)
        #expect(servicePort["targetPort"] as? String == port["name"] as? String)
        #expect(service["selector"] as? [String: String] == podLabels)
        let monitor = try #require(objects["ServiceMonitor"]?["spec"] as? [String: Any])
        let endpoint = try #require((monitor["endpoints"] as? [[String: Any]])?.first)
        #expect(endpoint["port"] as? String == servicePort["name"] as? String)
        let serviceLabels = try #require((objects["Service"]?["metadata"] as? [String: Any])?["labels"]
            as? [String: String])
        #expect(((monitor["selector"] as? [String: Any])?["matchLabels"] as? [String: String] ?? [:])
            .allSatisfy { serviceLabels[$0.key] == $0.value })
        for kind in ["PodDisruptionBudget", "NetworkPolicy"] {
            let spec = try #require(objects[kind]?["spec"] as? [String: Any])
            let selector = (spec["selector"] ?? spec["podSelector"]) as? [String: Any]
            #expect(selector?["matchLabels"] as? [String: String] == podLabels, "\(kind)")
        }
        let hpa = try #require(objects["HorizontalPodAutoscaler"]?["spec"] as? [String: Any])
        #expect((hpa["scaleTargetRef"] as? [String: Any])?["name"] as? String
            == (deployment["metadata"] as? [String: Any])?["name"] as? String)

        // The real server with the Secret's configuration and the ConfigMap mounted as kubelet mounts it: the probe
        // paths answer on it, the metrics path serves the desired-state generation, the document is accepted.
        let folder = try TemporaryDirectory(prefix: "k8s")
        let volume = ConfigMapVolume(directory: folder.path)
        try volume.publish(desiredText)
        let config = configText.split(separator: "\n").map { line -> String in
            if line.hasPrefix("model_repository:") { return "model_repository: \(Repository.path("models"))" }
            if line.hasPrefix("state_dir:") { return "state_dir: \(folder.file("var"))" }
            if line.hasPrefix("desired_state:") { return "desired_state: \(volume.keyPath)" }
            return line.replacingOccurrences(of: "host: 0.0.0.0", with: "host: 127.0.0.1")
        }.joined(separator: "\n")
        let server = try await ServerProcess(yaml: config)
        defer { server.stop() }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = try #require((container[probe] as? [String: Any])?["httpGet"] as? [String: Any])
            #expect(get["port"] as? String == port["name"] as? String)
            let (status, _) = try await server.request("GET", try #require(get["path"] as? String))
            #expect(status == 200, "\(probe)")
        }
        #expect(await eventuallyAsync {
            let (_, body) = (try? await server.request("GET", endpoint["path"] as? String ?? "/")) ?? (0, Data())
            return String(decoding: body, as: UTF8.self).contains("yoloswap_desired_observed_generation 1")
        })
        let (_, status) = try await server.json("GET", "/v1/desired/status", token: ServerProcess.viewerToken)
        #expect(status["last_rejection"] == nil)
        #expect(status["source"] as? String == "configmap:\(volume.keyPath)@\(status["content_sha256"] ?? "")")
    }
}
