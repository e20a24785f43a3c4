//! Embeds the git commit in the build (logged at VM start / module load); links the native
//! module with immediate binding. With the `limits` feature, also generates the gRPC glue of
//! Envoy's rate limit service for `src/limits/proto.rs`.
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
    println!("cargo:rerun-if-changed=build.rs");
    // The native module binds every Envoy callback when it is loaded (not at first call): an
    // Envoy without one of them refuses the module with "undefined symbol" instead of
    // crashing later, mid-request.
    if std::env::var_os("CARGO_FEATURE_NATIVE").is_some()
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
    {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
    }
    #[cfg(feature = "limits")]
    rate_limit_service();
}

/// `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over the prost messages
/// written by hand in `src/limits/proto.rs` (tonic-build's manual mode: no protoc, no .proto
/// files at build time). Writes `$OUT_DIR/envoy.service.ratelimit.v3.RateLimitService.rs`.
#[cfg(feature = "limits")]
fn rate_limit_service() {
    use tonic_build::manual::{Builder, Method, Service};
    let method = Method::builder()
        .name("should_rate_limit")
        .route_name("ShouldRateLimit")
        .input_type("crate::limits::proto::RateLimitRequest")
        .output_type("crate::limits::proto::RateLimitResponse")
        .codec_path("tonic_prost::ProstCodec")
        .build();
    let service = Service::builder()
        .name("RateLimitService")
        .package("envoy.service.ratelimit.v3")
        .method(method)
        .build();
    Builder::new().compile(&[service]);
}
