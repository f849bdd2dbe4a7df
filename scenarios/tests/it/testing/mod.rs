//! The test kit for users' objects (`dosim_scenarios::testing`): its planted bugs are found and their twins
//! pass; its checks catch what they claim; a user's test is a few lines.

mod explore;
mod planted;
mod scenarios;
