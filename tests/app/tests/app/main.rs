//! The CMPT 756 app end to end: the real gateway (SQLite), user, music and playlist
//! binaries on free ports, spoken to over HTTP only.

mod auth;
mod concurrency;
mod errors;
mod flows;
mod hardening;
mod openapi;
mod platform;
mod properties;
mod tracing;
mod versions;
