import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OpenInference
import Primitives

/// The HTTP framing of v2 inference: a JSON request, or — with the binary tensor data extension — a JSON header of
/// `Inference-Header-Content-Length` bytes followed by the inputs' raw bytes, each input's size in its
/// `binary_data_size` parameter, in the order of the inputs. Answers the same way: outputs asked for as binary data
/// (request parameter `binary_data_output`, or an output's `binary_data`) follow the JSON header.
///
/// Everything here reads untrusted bytes: every length is checked against the body before it is used.
enum V2InferCodec {
    static let headerLength = HTTPField.Name("Inference-Header-Content-Length")!

    /// A parsed request and which outputs go back as binary data.
    struct Parsed: Sendable {
        var request: InferRequest
        var binaryByDefault: Bool
    }

    /// Parses a request body.
    /// - Throws: `InferError.invalidArgument` (HTTP 400) for a bad header length, bad JSON, sizes that do not add up.
    static func parse(body: [UInt8], headers: HTTPFields) throws(InferError) -> Parsed {
        var jsonLength = body.count
        if let text = headers[headerLength] {
            guard let n = Int(text.trimmingCharacters(in: .whitespaces)), n >= 0, n <= body.count else {
                throw .invalid("Inference-Header-Content-Length must be an integer in 0...\(body.count) (the body's "
                    + "size), got '\(text.prefix(utf8Bytes: 64))'")
            }
            jsonLength = n
        }
        let json: V2InferRequestJSON
        do { json = try JSONNumbers.decode(V2InferRequestJSON.self, from: Data(body[0..<jsonLength])) } catch {
            throw .invalid("invalid inference request JSON: \(Problem.describe(error))")
        }
        // As gRPC's wire bounds: a 20 MiB body names a million outputs, each inserted into a set on the pool later and
        // the whole request held while it waits for a worker.
        for (what, count, limit) in [("inputs", json.inputs.count, InferRequest.maxInputs),
                                     ("outputs", json.outputs?.count ?? 0, InferRequest.maxOutputs),
                                     ("parameters", json.parameters?.count ?? 0, InferRequest.maxParameters)]
            where count > limit {
            throw .invalid("\(count) \(what): at most \(limit) are accepted")
        }
        let named = json.inputs.map { ("input", $0.name, $0.parameters?.count ?? 0) }
            + (json.outputs ?? []).map { ("output", $0.name, $0.parameters?.count ?? 0) }
        if let (kind, name, count) = named.first(where: { $0.2 > InferRequest.maxParameters }) {
            throw .invalid("\(kind) '\(name.prefix(64))': \(count) parameters, at most \(InferRequest.maxParameters) "
                + "are accepted")
        }
        var offset = jsonLength
        var inputs: [InferTensor] = []
        for input in json.inputs {
            guard let datatype = InferDataType(rawValue: input.datatype) else {
                throw .invalid("input '\(input.name)': unknown datatype '\(input.datatype)'")
            }
            let raw: [UInt8]
            if let size = input.parameters?["binary_data_size"] {
                guard case .int(let n) = size, n >= 0, n <= Int64(body.count - offset) else {
                    throw .invalid("input '\(input.name)': binary_data_size \(size) does not fit the \(body.count - offset) "
                        + "bytes left in the body")
                }
                raw = Array(body[offset..<offset + Int(n)])
                offset += Int(n)
            } else if let data = input.data {
                let count = try InferTensor.elementCount(input.shape, name: input.name)
                guard data.elements.count == count else {
                    throw .invalid("input '\(input.name)': shape \(input.shape) has \(count) elements, data has "
                        + "\(data.elements.count)")
                }
                raw = try data.raw(datatype, name: input.name)
            } else {
                throw .invalid("input '\(input.name)' has neither data nor a binary_data_size parameter")
            }
            inputs.append(try InferTensor(name: input.name, datatype: datatype, shape: input.shape, raw: raw))
        }
        guard offset == body.count else {
            throw .invalid("\(body.count - offset) bytes follow the inputs' binary data: the sizes do not add up")
        }
        let outputs = (json.outputs ?? []).map {
            InferRequest.RequestedOutput(name: $0.name, parameters: ($0.parameters ?? [:]).mapValues(\.parameter))
        }
        let parameters = (json.parameters ?? [:]).mapValues(\.parameter)
        return Parsed(
            request: InferRequest(id: json.id, inputs: inputs, outputs: outputs, parameters: parameters),
            binaryByDefault: parameters["binary_data_output"]?.flag ?? false)
    }

    /// Whether `output` goes into the answer as binary data (asked for by name, else the request's default).
    private static func isBinary(_ output: InferTensor, for parsed: Parsed) -> Bool {
        let asked = parsed.request.outputs.first { $0.name == output.name }
        return asked?.parameters["binary_data"]?.flag ?? parsed.binaryByDefault
    }

    /// Bytes of the outputs the answer carries as JSON numbers (not as binary data): what encoding it costs.
    static func jsonOutputBytes(_ response: InferResponse, for parsed: Parsed) -> Int {
        response.outputs.reduce(0) { $0 + (isBinary($1, for: parsed) ? 0 : $1.raw.count) }
    }

    /// The HTTP answer to a request.
    static func response(_ response: InferResponse, for parsed: Parsed) throws -> Response {
        var binary: [UInt8] = []
        var outputs: [[String: Any]] = []
        for output in response.outputs {
            var entry: [String: Any] = ["name": output.name, "datatype": output.datatype.rawValue,
                "shape": output.shape]
            if isBinary(output, for: parsed) {
                entry["parameters"] = ["binary_data_size": output.raw.count]
                binary += output.raw
            } else {
                let elements = output.jsonElements
                if elements.contains(where: { ($0 as? Double)?.isFinite == false }) {
                    throw Problem(.internalServerError, "Internal Server Error", detail: "output '\(output.name)' "
                        + "holds NaN or infinity, which JSON cannot carry: ask for it as binary data (binary_data)")
                }
                entry["data"] = elements
            }
            outputs.append(entry)
        }
        var object: [String: Any] = [
            "model_name": response.modelName, "model_version": response.modelVersion, "outputs": outputs,
            "parameters": Dictionary(response.parameters.map { ($0.key, $0.value.json) }, uniquingKeysWith: { a, _ in a }),
        ]
        if let id = response.id { object["id"] = id }
        let header = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        guard !binary.isEmpty || outputs.contains(where: { $0["parameters"] != nil }) else {
            return Response(status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: header)))
        }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(header.count + binary.count)
        buffer.writeBytes(header)
        buffer.writeBytes(binary)
        return Response(status: .ok,
            headers: [.contentType: "application/octet-stream", headerLength: String(header.count)],
            body: .init(byteBuffer: buffer))
    }
}

extension InferParameter {
    /// The value as JSON.
    var json: Any {
        switch self {
        case .bool(let v): v
        case .int(let v): Int(v)
        case .double(let v): v
        case .string(let v): v
        }
    }
}
