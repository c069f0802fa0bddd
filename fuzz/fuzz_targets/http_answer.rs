//! The loader's HTTP/1 answer reader on whatever a server might send: it never
//! panics, reads the same answers whatever the bytes' split into reads, and never
//! counts more body than was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::conn::read_answers;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, bytes)) = input.split_first() else {
        return;
    };
    let head_only = flags & 0x80 != 0;
    let piece = usize::from(flags & 0x7f).max(1);
    let whole = read_answers(bytes, bytes.len(), head_only);
    let split = read_answers(bytes, piece, head_only);
    assert_eq!(whole, split, "the answers depend on how the bytes arrived");
    let bodies: usize = whole.iter().flatten().map(|a| a.body_len).sum();
    assert!(
        bodies <= bytes.len(),
        "{bodies} body bytes of {}",
        bytes.len()
    );
    for answer in whole.iter().flatten() {
        assert!(answer.status <= 999, "status {}", answer.status);
    }
    // Reading stops at the first error.
    if let Some(i) = whole.iter().position(Result::is_err) {
        assert_eq!(i, whole.len() - 1);
    }
});
