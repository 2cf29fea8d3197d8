//! Integration tests: the daemon started through its library entry point
//! on 127.0.0.1:0, against real in-process SOCKS5 backends and targets.
//! One test binary, one module per topic.

mod support;

mod balancing;
mod boot;
mod browser;
mod cli;
mod curl;
mod docs;
mod errors;
mod fixtures;
mod gateway;
mod health;
mod http;
mod lifecycle;
mod limits;
mod live;
mod modes;
mod multipath;
mod relay;
mod reload;
mod routing;
mod segments;
mod udp;
mod web;
