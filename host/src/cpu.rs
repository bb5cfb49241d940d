//! The CPU features this build was compiled to assume (`.cargo/config.toml`: AES-NI and
//! PCLMULQDQ; more with `-C target-cpu`), checked against the CPU it starts on. A build for a
//! newer CPU than the one it runs on would otherwise die of SIGILL at the first instruction it
//! lacks (NTS's first AES round, or any loop the compiler vectorised); stratumd and
//! stratum-bench say which features are missing and exit instead.
//! A build without those flags (`RUSTFLAGS="-C target-cpu=x86-64"`) assumes nothing and passes.

/// The compile-time features this build assumes that the running CPU lacks (empty when it can run).
pub fn missing_features() -> Vec<&'static str> {
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($feature:tt),*) => {$(
                if cfg!(target_feature = $feature) && !std::arch::is_x86_feature_detected!($feature) {
                    missing.push($feature);
                }
            )*};
        }
        // Features whose detection and `cfg` are stable since long before the workspace's
        // rust-version; a build for a CPU with more (AVX-512) is checked for these only.
        check!(
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "aes",
            "pclmulqdq",
            "avx",
            "avx2",
            "bmi1",
            "bmi2",
            "lzcnt",
            "fma"
        );
    }
    missing
}

/// One line for the operator when [`missing_features`] is not empty; `program` names the binary.
pub fn check(program: &str) -> Result<(), String> {
    let missing = missing_features();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{program}: this build is for CPUs with {}, which this CPU lacks; rebuild it for this machine with RUSTFLAGS=\"-C target-cpu=native\" (or \"-C target-cpu=x86-64\" for any x86-64 CPU)",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_that_built_this_can_run_it() {
        // The test binary is built with the same flags as stratumd: on the build machine itself
        // nothing may be missing, and the check names what is.
        assert_eq!(super::missing_features(), Vec::<&str>::new());
        assert!(super::check("stratumd").is_ok());
    }
}
