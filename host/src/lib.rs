//! relocd's host side as a library: the binary (`main.rs`) is a thin
//! command-line front end over these modules, and `relocd-tests` drives
//! them directly.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod check_host;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod demo;
pub mod devices;
pub mod docs;
pub mod engine;
pub mod inspect;
pub mod journal;
pub mod lock;
pub mod peer;
pub mod residency;
pub mod session;
pub mod settings;
pub mod tls;
pub mod units;
pub mod version;
