//! Drover: multi-region disaster recovery for Kubernetes on AWS.

pub mod api;
pub mod approve;
pub mod automatic;
pub mod aws;
pub mod check;
pub mod cli;
pub mod clusters;
pub mod conditions;
pub mod config;
pub mod context;
pub mod controller;
pub mod drill;
pub mod engine;
pub mod error;
pub mod fencing;
pub mod http;
pub mod leader;
pub mod leadership;
pub mod member;
pub mod metrics;
pub mod old_volume;
pub mod probes;
pub mod ratelimit;
pub mod reprotect;
pub mod runner;
pub mod shared_aws;
#[cfg(test)]
mod sim;
pub mod store;
pub mod telemetry;
pub mod validate;
pub mod views;
