//! Shared test support.

pub(crate) mod oracle;
