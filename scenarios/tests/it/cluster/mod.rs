//! The cluster under simulation: the directory on the simulated etcd.

mod directory;
