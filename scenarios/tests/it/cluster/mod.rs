//! The cluster under simulation: the directory on the simulated etcd, calls between nodes on the fabric.

mod code_update;
mod directory;
mod kv;
mod network;
mod objects;
mod rpc;
mod storage;
