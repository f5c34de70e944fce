//! End-to-end tests of botlinkd: a real server (in-process on port 0, or the real binary
//! as a child process), real HTTP receivers, a fresh SQLite database per test.

mod bad_input;
mod brokers;
mod cluster;
mod connections;
mod dead;
mod delivery;
mod destinations;
mod endpoint_health;
mod event_history;
mod example_bot;
mod faults;
mod feed;
mod graph_stub;
mod harness;
mod history;
mod inbound;
mod listen;
mod meta;
mod operations;
mod process;
mod security;
mod sending;
mod stream;
mod webhooks;
