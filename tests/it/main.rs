//! Integration tests: one binary, one module per area. They spawn the real binary or drive the
//! library, against real databases and fake servers that speak the real protocols.

mod support;

mod alert;
mod alert_bench;
mod alert_secrets;
mod alert_shared;
mod breakers;
mod classify;
mod cli;
mod cost;
mod coze;
mod dashboard;
mod docs;
mod engine;
mod exporters;
mod external;
mod layers;
mod leases;
mod limits;
mod policy;
mod providers;
mod report;
mod serve;
mod serve_process;
mod storage;
mod store;
