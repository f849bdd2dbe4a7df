//! Oracle conformance of both backends: operation sequences replayed through [`super::Storage`] and compared
//! with what Cloudflare's runtime returned (the oracle data is copied into `runtime/tests/data/`).

mod kv_backend;
mod oracle;
mod storage;
