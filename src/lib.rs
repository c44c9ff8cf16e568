//! msghub: a self-hosted unified messaging hub with a JUMS-compatible API.
//!
//! See `ARCHITECTURE.md` for the map. The binary (`main.rs`) only parses the command line and
//! calls [`startup::Application`] or the simulator.

pub mod accept;
pub mod adapters;
pub mod bounces;
pub mod callbacks;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod pulls;
pub mod retract;
pub mod settings;
pub mod startup;
pub mod storage;
pub mod telemetry;
