import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
@testable import Server
import Testing

/// What an error answer may say: nothing of the server's file system or of Swift's error dumps.
@Suite("Problem details")
struct ProblemTests {
    struct Secret: Error { let path = "/srv/yoloswap/private/state.sqlite" }
    struct Body: Decodable { let model: String }

    @Test("an error no layer describes answers 500 with the request id; its text goes to the log, not the client")
    func internalErrors() async throws {
        let router = Router()
        router.add(middleware: ProblemMiddleware())
        router.get("/boom") { _, _ -> String in throw Secret() }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/boom", method: .get) { response in
                #expect(response.status == .internalServerError)
                let body = String(buffer: response.body)
                #expect(!body.contains("/srv/yoloswap"), "\(body)")
                #expect(!body.contains("Secret"), "\(body)")
                #expect(body.contains("(request "), "\(body)")
            }
        }
    }

    @Test("a JSON decoding error names the field, without the decoder's context dump", arguments: [
        (#"{"modl": "x"}"#, "missing field 'model'"),
        (#"{"model": 1}"#, "wrong type at 'model'"),
    ])
    func decodingErrors(json: String, expected: String) throws {
        let error = #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(Body.self, from: Data(json.utf8))
        }
        let problem = Problem.from(try #require(error))
        #expect(problem.status == .badRequest)
        #expect(problem.detail.contains(expected), "\(problem.detail)")
        #expect(!problem.detail.contains("CodingKeys"), "\(problem.detail)")
        #expect(!problem.detail.contains("Context("), "\(problem.detail)")
    }

    @Test("a cancelled request (its caller gave up) is 499, not a failure of the service")
    func cancelled() {
        let problem = Problem.from(CancellationError())
        #expect(problem.status.code == 499 && problem.title == "Cancelled", "\(problem)")
    }
}
