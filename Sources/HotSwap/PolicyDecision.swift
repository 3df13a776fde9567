/// One device's memory as the manager compared it when it chose a swap policy: what its models take now, what the
/// new model is estimated to take there, and the budget.
///
/// Codable as `{"device", "in_use_bytes", "estimate_bytes", "budget_bytes"?, "fits"}`.
///
/// Thread-safety: a value.
public struct DeviceMemoryFigures: Sendable, Equatable, Codable {
    enum CodingKeys: String, CodingKey {
        case device, fits
        case inUseBytes = "in_use_bytes"
        case estimateBytes = "estimate_bytes"
        case budgetBytes = "budget_bytes"
    }

    public let device: ComputeDevice
    /// Memory of every model held on the device now, in any slot and role.
    public let inUseBytes: Int
    /// The new model's measured cost on the device, else its estimate.
    public let estimateBytes: Int
    /// The device's budget (nil: none).
    public let budgetBytes: Int?

    /// In use + estimate within the budget (true without one).
    public let fits: Bool

    public init(device: ComputeDevice, inUseBytes: Int, estimateBytes: Int, budgetBytes: Int?) {
        self.device = device
        self.inUseBytes = inUseBytes
        self.estimateBytes = estimateBytes
        self.budgetBytes = budgetBytes
        fits = budgetBytes.map { inUseBytes + estimateBytes <= $0 } ?? true
    }
}

/// The swap policy a load ran with, and why: what an operator reads to tell whether `auto` unloaded the active model
/// first.
///
/// Codable as `{"policy", "requested", "reason", "figures": [DeviceMemoryFigures]}` (`figures` only when `auto`
/// compared them).
///
/// Thread-safety: a value.
public struct PolicyDecision: Sendable, Equatable, Codable {
    /// The policy that ran.
    public var policy: SwapPolicy
    /// The policy asked for (the load's, else the configured one).
    public var requested: SwapPolicy
    public var reason: String
    /// Per device the load's model needs (the host, and its GPU if any), what `auto` compared.
    public var figures: [DeviceMemoryFigures]?

    public init(policy: SwapPolicy, requested: SwapPolicy, reason: String, figures: [DeviceMemoryFigures]? = nil) {
        self.policy = policy
        self.requested = requested
        self.reason = reason
        self.figures = figures
    }
}
