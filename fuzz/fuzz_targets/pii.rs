//! The PII detectors on arbitrary text: matches are in order, do not overlap and cut the
//! text on character boundaries; masking then restoring gives the text back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollgate::security::detect::{Detector, Detectors, BUILTIN};
use tollgate::security::pii::{Masking, Pii, PiiAction};

fn pii() -> &'static Pii {
    static PII: OnceLock<Pii> = OnceLock::new();
    PII.get_or_init(|| Pii {
        detectors: Detectors {
            list: BUILTIN
                .iter()
                .filter_map(|(name, _)| Detector::builtin(name))
                .collect(),
        },
        action: PiiAction::Mask,
        restore: true,
    })
}

fuzz_target!(|data: &[u8]| {
    let pii = pii();
    let text = String::from_utf8_lossy(data);
    let found = pii.detectors.find(&text);
    let mut last_end = 0;
    for f in &found {
        assert!(f.start >= last_end && f.start < f.end && f.end <= text.len());
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        last_end = f.end;
    }
    let mut m = Masking::default();
    if let Ok(Some(masked)) = m.apply(pii, &text) {
        assert_eq!(m.restore(&masked), text);
    }
});
