"""Authentication, authorization and per-client limits (docs/security.md)."""
