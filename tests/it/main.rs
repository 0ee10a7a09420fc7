//! Integration tests: one binary, one module per area. They spawn the real binary or drive the
//! library, against real databases and fake servers that speak the real protocols.

mod support;

mod alert;
mod alert_bench;
mod alert_secrets;
mod alert_shared;
mod classify;
mod cli;
mod dashboard;
mod docs;
mod engine;
mod external;
mod layers;
mod leases;
mod limits;
mod policy;
mod report;
mod serve;
mod serve_process;
mod storage;
mod store;
