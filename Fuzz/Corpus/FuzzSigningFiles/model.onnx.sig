{
  "format" : "yoloswap-signature-v1",
  "key_id" : "b600306cfa76723f",
  "model_sha256" : "abababababababababababababababababababababababababababababababab",
  "signature" : "/LF9cwtbeCFrl9vJgO/G6VSOQFhwInx0MCC+4s+3SXcjuoPbOcBqqpOFTxEMhYzjUkL7lDV7uUQ+0MTPeu7+Cw==",
  "signed_at" : "2027-01-15T08:00:00Z",
  "version" : "1.0"
}
