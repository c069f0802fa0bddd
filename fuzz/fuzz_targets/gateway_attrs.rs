//! The gateway's check of what it stores (`domain::check_attrs`) on any JSON body:
//! never a panic, and an accepted body holds no NUL and no reserved or empty field
//! name.
#![no_main]

use database_gateway::domain::{Attrs, RESERVED_PREFIX, check_attrs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(attrs) = serde_json::from_slice::<Attrs>(input) else {
        return;
    };
    if check_attrs(&attrs).is_ok() {
        for name in attrs.keys() {
            assert!(
                !name.is_empty() && !name.starts_with(RESERVED_PREFIX),
                "{name:?}"
            );
        }
        let text = serde_json::to_string(&attrs).expect("json");
        assert!(!text.contains("\\u0000"), "{text}");
    }
});
