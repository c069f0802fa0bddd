//! The live page of one replica: CPU, memory, throughput and health every second, and
//! the CPU-load buttons. Everything inline: no external assets.

pub const PAGE: &str = include_str!("page.html");
