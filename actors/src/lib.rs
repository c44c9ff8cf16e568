//! msghub's dispatch topology: planners, shard workers and channel actors.
//!
//! This crate reaches storage and providers only through the port traits in [`provider`] and
//! [`store`]; it never imports actix-web or sea-orm.

pub mod batcher;
pub mod channel;
pub mod direct;
pub mod filters;
pub mod local_time;
pub mod mask;
pub mod plan;
pub mod planner;
pub mod provider;
pub mod registry;
pub mod retract;
pub mod retry;
pub mod schedule;
pub mod shard;
pub mod store;
pub mod threads;
pub mod timers;
pub mod topology;

pub use topology::{Dispatch, TopologyConfig};
