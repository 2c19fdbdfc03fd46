//! The proptest configuration of the property tests: 256 cases by default,
//! `PROPTEST_CASES` overrides. Included with
//! `#[path = "support/proptest_config.rs"] mod proptest_config;` and used as
//! `#![proptest_config(proptest_config::config())]`.

use proptest::prelude::ProptestConfig;

/// 256 cases, or `PROPTEST_CASES` when it is set to a number.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}
