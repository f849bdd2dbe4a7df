//! The simulated cluster: the directory's coordination store (madsim's simulated etcd, on a node of its
//! own), and the adapters that point the runtime's cluster traits at it.

pub mod etcd;
pub mod transport;
