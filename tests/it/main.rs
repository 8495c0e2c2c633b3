//! One test binary (matklad's "one integration test crate"): every module
//! shares the helpers below and the build is linked once.

mod cluster;
mod examples;
mod exec;
mod exec_file;
mod fork;
mod isolated;
mod issue_10;
mod issue_11;
mod issue_13;
mod issue_14;
mod issue_16;
mod issue_17;
mod regression;
mod reliability;
mod signals;
mod spawn;
mod support;
mod tidy;
#[cfg(feature = "tracing")]
mod tracing;
