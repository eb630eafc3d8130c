//! One integration-test binary (one link step): the service in-process (`Relay::start`) or the
//! real binary as a child (`Relay::child`: kill, signals, `/metrics`, logs) against real HTTP.

#[cfg(feature = "amqp")]
mod amqp;
mod api;
#[cfg(any(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "mqtt"
))]
mod broker_common;
mod bulk;
mod cli;
#[cfg(feature = "postgres")]
mod cluster;
mod command;
mod command_life;
mod console;
mod crash;
#[cfg(feature = "postgres")]
mod database_restart;
#[cfg(feature = "postgres")]
mod database_tls;
mod delivery;
mod faults;
mod frontdoor;
mod hanging;
mod harness;
mod import;
mod ingest;
mod inprocess;
mod jobs;
mod metrics;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "mqtt")]
mod mqtt_limits;
#[cfg(feature = "nats")]
mod nats;
mod notifications;
mod operate;
mod outbound;
mod outcomes;
mod providers;
#[allow(dead_code)] // used by the broker tests, each behind its cargo feature
mod proxy;
mod records;
mod recovery;
#[cfg(feature = "redis")]
mod redis;
mod reload;
#[cfg(feature = "postgres")]
mod replicas;
#[cfg(feature = "postgres")]
mod replicas_breaker;
#[cfg(feature = "postgres")]
mod replicas_latest;
mod robustness;
mod roles;
mod stream;
mod tidy;
mod tls;
