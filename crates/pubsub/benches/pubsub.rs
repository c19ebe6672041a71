//! Pubsub benchmarks (filled in below).
fn main() {}
