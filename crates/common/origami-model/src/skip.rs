//! For tests that need what a machine may lack (an NVIDIA GPU, the Fashion-MNIST dataset): they
//! skip with a message, or fail where the environment says the thing must be there —
//! `ORIGAMI_REQUIRE_GPU=1` (set by `scripts/gpu-check.sh` on the GPU machine) and
//! `ORIGAMI_REQUIRE_DATA=1` (set by `.ci/run`, which installs the dataset).

/// Set to 1 where a GPU must be found: GPU tests fail instead of skipping.
pub const REQUIRE_GPU: &str = "ORIGAMI_REQUIRE_GPU";
/// Set to 1 where the datasets must be found: dataset tests fail instead of skipping.
pub const REQUIRE_DATA: &str = "ORIGAMI_REQUIRE_DATA";

/// Whether the environment variable `var` is 1.
pub fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// Reports that `what` is missing: panics when `var` is 1, else prints `SKIPPED: what` and
/// returns, for the caller to skip its test.
pub fn missing(var: &str, what: &str) {
    if required(var) {
        panic!("{what}, and {var}=1 requires it");
    }
    eprintln!("SKIPPED: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_panics_only_when_required() {
        let var = "ORIGAMI_SKIP_SELF_TEST";
        std::env::remove_var(var);
        missing(var, "a thing");
        std::env::set_var(var, "1");
        let r = std::panic::catch_unwind(|| missing(var, "a thing"));
        std::env::remove_var(var);
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(msg.contains("a thing") && msg.contains(var), "{msg}");
    }
}
