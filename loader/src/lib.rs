//! `loader`'s library: the binary (`main.rs`) is its command line. The modules are
//! public so the fuzz targets (`fuzz/`) and tests can reach the parsers: the HTTP/1
//! answer reader ([`conn`]), the course CSVs ([`data`]) and scenario files
//! ([`run::scenario`]).

pub mod conn;
pub mod data;
pub mod run;
pub mod sweep;
pub mod text;
