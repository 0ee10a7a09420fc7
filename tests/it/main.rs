//! Integration tests: one binary, one module per area. They spawn the real binary or drive the
//! library, against real databases and fake servers that speak the real protocols.

mod support;

mod cli;
mod serve;
mod serve_process;
