"""Real local servers and helpers shared by the tests (Hub resolve protocol, S3, stand-ins)."""
