{
  "format" : "yoloswap-signature-v1",
  "key_id" : "b600306cfa76723f",
  "model_sha256" : "abababababababababababababababababababababababababababababababab",
  "signature" : "0UfY1KaK0tAWIczFpz3hTYahvg7Dvq0FePdxKcng07qr6nzKlxZQfYfkMo482lxv6F9HPhbfUqQzrhyh+EfXCw==",
  "signed_at" : "2027-01-15T08:00:00Z",
  "version" : null
}
