//! JWT parsing (`kit::auth::verify`): any token is refused or verified without a
//! panic, a verified token's claims are unexpired, a token `sign` made verifies to the
//! same claims (or is expired), and changing any one character of it is refused.
#![no_main]

use arbitrary::Arbitrary;
use kit::auth::{Claims, TokenError, sign, verify};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    token: String,
    secret: Vec<u8>,
    now: u64,
    user_id: String,
    iat: u64,
    exp: u64,
    jti: String,
    change_at: usize,
    change_to: u8,
}

fuzz_target!(|input: Input| {
    if let Ok(claims) = verify(&input.token, &input.secret, input.now) {
        assert!(claims.exp > input.now);
    }
    let claims = Claims {
        user_id: input.user_id,
        iat: input.iat,
        exp: input.exp,
        jti: input.jti,
    };
    let token = sign(&claims, &input.secret);
    let verified = verify(&token, &input.secret, input.now);
    if claims.exp > input.now {
        assert_eq!(verified, Ok(claims.clone()));
    } else {
        assert_eq!(verified, Err(TokenError::Expired));
    }
    let mut changed = token.into_bytes();
    let at = input.change_at % changed.len();
    let to = input.change_to & 0x7f;
    if changed[at] != to {
        changed[at] = to;
        let changed = String::from_utf8(changed).expect("ascii");
        assert!(
            verify(&changed, &input.secret, 0).is_err(),
            "{changed} verified after a change at {at}"
        );
    }
});
