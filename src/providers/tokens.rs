//! Token estimates, for calls whose provider never reports usage (a stream cut short, a
//! `count_tokens` answered by the gateway, embeddings from a provider that counts nothing):
//! about four bytes per token, images by number rather than by the size of their data.

use super::model::{ChatRequest, Part};

/// A rough token estimate from text bytes (about four bytes per token).
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// What one image counts in estimates, whatever its encoded size: about the most a provider
/// charges for one (Anthropic: up to ~1600 tokens at its largest size; OpenAI high detail:
/// 1105 for six tiles; Gemini: 258 per tile).
pub const IMAGE_TOKENS: u64 = 1_600;

/// A token estimate for a request as sent upstream: every byte of its body (messages,
/// system, tools and their schemas, tool calls and results, any other field) at four bytes
/// per token, except `images`, which count [`IMAGE_TOKENS`] each instead of their
/// `image_bytes` (base64 data or URLs in the body).
pub fn estimate_request_tokens(body_bytes: usize, images: usize, image_bytes: usize) -> u64 {
    estimate_tokens(body_bytes.saturating_sub(image_bytes))
        .saturating_add(IMAGE_TOKENS.saturating_mul(images as u64))
}

/// The estimate of `req` sent upstream as a body of `body_bytes`: its inline images and
/// documents counted by number.
pub fn request_estimate(req: &ChatRequest, body_bytes: usize) -> u64 {
    let (images, image_bytes) = req
        .parts()
        .filter_map(Part::inline_data_len)
        .fold((0usize, 0usize), |(n, bytes), len| {
            (n.saturating_add(1), bytes.saturating_add(len))
        });
    estimate_request_tokens(body_bytes, images, image_bytes)
}
