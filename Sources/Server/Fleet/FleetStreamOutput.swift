import Fleet
import MQTT
import Primitives
import Streams

/// The MQTT fleet connection as a video stream's `mqtt` output: results and events go to the device's stream topics
/// (`FleetTopics.streamResults` / `streamEvents`) with QoS 1, over the fleet agent's client while it runs.
///
/// Thread-safety: all members may be used from any task; the client is swapped under a lock.
public final class FleetStreamOutput: StreamPublisher {
    private let topics: FleetTopics
    private let device: String
    private let client = Locked<MQTTClient?>(nil)

    init(topics: FleetTopics, device: String) {
        self.topics = topics
        self.device = device
    }

    /// The client messages go through from now on (nil: the agent has stopped).
    func attach(_ client: MQTTClient?) { self.client.withLock { $0 = client } }

    public func topic(stream: String, events: Bool) -> String {
        events ? topics.streamEvents(device: device, stream: stream) : topics.streamResults(device: device, stream: stream)
    }

    /// Returns on the broker's acknowledgement; while the client is away the message waits in the client.
    public func publish(_ topic: String, payload: [UInt8]) async throws {
        guard let client = client.value else {
            throw MQTTError(.stopped, operation: "publish to \(topic)", reason: "the MQTT fleet agent is not running")
        }
        try await client.publish(topic, payload: payload, qos: .atLeastOnce)
    }
}
