//! Embeds the git commit in the build (logged at VM start / module load); links the native
//! module with immediate binding.
use std::process::Command;

fn main() {
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TOLLGATE_GIT_HASH={hash}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    // The native module binds every Envoy callback when it is loaded (not at first call): an
    // Envoy without one of them refuses the module with "undefined symbol" instead of
    // crashing later, mid-request.
    if std::env::var_os("CARGO_FEATURE_NATIVE").is_some()
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
    {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
    }
}
