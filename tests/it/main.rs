//! One integration-test binary (one link step): the real hookrelay binary against real HTTP.

mod api;
mod cli;
mod crash;
mod delivery;
mod faults;
mod frontdoor;
mod harness;
mod ingest;
mod metrics;
mod operate;
mod outbound;
mod providers;
mod reload;
mod robustness;
mod tidy;
mod tls;
