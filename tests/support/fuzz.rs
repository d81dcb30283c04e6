//! A time-boxed driver for the property-based fuzz targets
//! (`tests/fuzz_*.rs`). Nightly Rust, and so `cargo fuzz`, is not
//! available where this crate is built, so the targets are proptest
//! properties on stable: random and structured inputs, with shrinking to
//! a minimal failing case.
//!
//! Each target runs in batches until `FUZZ_SECS` seconds (default 2, so
//! CI stays short) or `FUZZ_CASES` cases (default unlimited) are spent,
//! then prints how many cases it ran. `FUZZ_SEED` fixes the seed of the
//! first batch (default: from the clock, printed); a failure names the
//! seed of its batch, so the run can be repeated.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `test` on inputs drawn from `strategy` for the configured time.
pub fn fuzz<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let budget = Duration::from_secs_f64(env("FUZZ_SECS").unwrap_or(2.0));
    let max_cases: u64 = env("FUZZ_CASES").unwrap_or(u64::MAX);
    let first_seed: u64 = env("FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let started = Instant::now();
    let mut cases = 0u64;
    let mut batch = 0u64;
    while cases == 0 || (started.elapsed() < budget && cases < max_cases) {
        let seed = first_seed.wrapping_add(batch);
        let size = 256.min(max_cases - cases) as u32;
        let config = Config {
            cases: size,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(seed),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                panic!("{target}: seed {seed} (FUZZ_SEED={seed}): {why}\nminimal input: {input:?}")
            }
            Err(TestError::Abort(why)) => panic!("{target}: seed {seed}: aborted: {why}"),
        }
        cases += u64::from(size);
        batch += 1;
    }
    println!(
        "fuzz {target}: {cases} cases in {:.1}s (first seed {first_seed}), no failure",
        started.elapsed().as_secs_f64()
    );
}
