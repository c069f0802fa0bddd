//! Exact Fibonacci numbers by fast doubling: O(log n) big-number multiplications
//! instead of the course service's recursion (which died past the recursion limit).
//!
//!   F(2k)   = F(k) * (2 F(k+1) - F(k))
//!   F(2k+1) = F(k)^2 + F(k+1)^2

use num_bigint::BigUint;

/// The largest n whose F(n) fits in a u128.
const U128_MAX_N: u64 = 186;

/// F(n) in decimal.
pub fn fibonacci(n: u64) -> String {
    if n <= U128_MAX_N {
        return small(n).to_string();
    }
    big(n).to_string()
}

fn small(n: u64) -> u128 {
    if n == 0 {
        return 0;
    }
    // After k steps b = F(k + 1): stop at F(n) so F(n + 1) never has to fit.
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 1..n {
        (a, b) = (b, a + b);
    }
    b
}

/// `(F(n), F(n+1))` by walking the bits of `n` from the top.
fn big(n: u64) -> BigUint {
    let mut a = BigUint::ZERO; // F(k)
    let mut b = BigUint::from(1u32); // F(k+1)
    for bit in (0..u64::BITS - n.leading_zeros()).rev() {
        let two_b_minus_a = (&b << 1u32) - &a;
        let c = &a * &two_b_minus_a; // F(2k)
        let d = &a * &a + &b * &b; // F(2k+1)
        if (n >> bit) & 1 == 0 {
            (a, b) = (c, d);
        } else {
            b = &c + &d;
            a = d;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_values_and_the_u64_boundary() {
        let expected = ["0", "1", "1", "2", "3", "5", "8", "13", "21", "34", "55"];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(fibonacci(n as u64), *want, "F({n})");
        }
        assert_eq!(fibonacci(20), "6765");
        assert_eq!(fibonacci(93), "12200160415121876738"); // the last that fits a u64
        assert_eq!(fibonacci(94), "19740274219868223167"); // the first that does not
    }

    #[test]
    fn the_small_and_big_paths_agree_at_their_seam() {
        for n in 150..=U128_MAX_N {
            assert_eq!(small(n).to_string(), big(n).to_string(), "F({n})");
        }
        // Past u128: F(187) = F(186) + F(185) by plain addition.
        let sum = BigUint::from(small(186)) + BigUint::from(small(185));
        assert_eq!(fibonacci(187), sum.to_string());
    }
}
