//! The gateway's engine-agnostic suite: every route of API.md's datastore table,
//! bad input, concurrency, durability, metrics and tracing. `TEST_DATABASE_URL`
//! picks the engine (see `helpers`).

mod bad_input;
mod concurrency;
mod crud;
mod durability;
mod helpers;
mod load_and_auth;
mod observability;
mod outage;
mod properties;
