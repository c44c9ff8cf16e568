//! The integration suite: the real server and the provider simulator, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alipay;
mod bounces;
mod callbacks;
mod crash;
mod delivery;
mod dingtalk;
mod feishu;
mod filters;
mod helpers;
mod hostile;
mod management;
mod miniprogram;
mod priority;
mod refusals;
mod retries;
mod schedule;
mod strategies;
mod suppressions;
mod wecom;
