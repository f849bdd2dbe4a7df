//! sc
