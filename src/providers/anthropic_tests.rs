#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]
use super::*;
#[test]
fn smoke() {
    assert_eq!(API_VERSION, "2023-06-01");
}
