//! The test kit for users' objects (`dosim_scenarios::testing`): its planted bugs are found and their twins
//! pass; its checks catch what they claim; a user's test is a few lines.

mod checks;
mod explore;
mod host_test;
mod planted;
mod properties;
mod scenarios;
mod shrink;
mod snapshots;
