//! Fixed-point values in decimal, for line protocol: exactly, as the device sent them,
//! never through binary floating point.

/// `raw / divisor` in decimal, exactly (no binary floating point), without trailing zeros:
/// 82/10 → `8.2`, 3600/1000 → `3.6`, 120/10 → `12`. Divisors are powers of ten.
pub(crate) fn write(out: &mut String, raw: i64, divisor: u32) {
    let a = raw.unsigned_abs();
    // Most fields are tenths: a constant divisor is a multiplication, not a division.
    let (int, mut frac, mut width) = match divisor {
        10 => (a / 10, a % 10, 1),
        _ => (
            a / u64::from(divisor),
            a % u64::from(divisor),
            divisor.ilog10() as usize,
        ),
    };
    if raw < 0 {
        out.push('-');
    }
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(int));
    if frac == 0 {
        return;
    }
    if divisor == 10 {
        // One digit, nothing to strip or pad: written as it is, not formatted and copied
        // (1.7 % of a drain's instructions, docs/PERFORMANCE.md).
        out.push('.');
        out.push(char::from(b'0' + frac as u8));
        return;
    }
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    out.push('.');
    let frac = digits.format(frac);
    for _ in frac.len()..width {
        out.push('0');
    }
    out.push_str(frac);
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Render;

    proptest::proptest! {
        /// Whatever the value and the power of ten, the text reads back as the value:
        /// no digit lost, no trailing zero, no `-0`.
        #[test]
        fn decimals_read_back_exactly(raw in -10_000_000i64..10_000_000, exp in 1u32..4) {
            let div = 10u32.pow(exp);
            let mut s = String::new();
            write(&mut s, raw, div);
            let (neg, digits) = s.strip_prefix('-').map_or((false, s.as_str()), |d| (true, d));
            let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
            proptest::prop_assert!(frac.len() <= exp as usize && !frac.ends_with('0'), "{}", s);
            let scale = 10i64.pow(exp - frac.len() as u32);
            let frac = if frac.is_empty() { 0 } else { frac.parse::<i64>().unwrap() * scale };
            let back = int.parse::<i64>().unwrap() * i64::from(div) + frac;
            proptest::prop_assert_eq!(if neg { -back } else { back }, raw, "{}", s);
            proptest::prop_assert!(!neg || back != 0, "{}", s);
        }
    }

    #[test]
    fn decimals_are_exact() {
        let cases = [
            (82, 10, "8.2"),
            (-35, 10, "-3.5"),
            (555, 1000, "0.555"),
            (3600, 1000, "3.6"),
            (120, 10, "12"),
            (5, 1000, "0.005"),
            (-5, 100, "-0.05"),
            (62, 100, "0.62"),
        ];
        for (raw, div, want) in cases {
            let mut s = String::new();
            write(&mut s, raw, div);
            assert_eq!(s, want, "{raw}/{div}");
        }
        for kind in protocol::Kind::ALL {
            for spec in kind.fields() {
                if let Render::Number { divisor } = spec.render {
                    assert_eq!(
                        10u32.pow(divisor.ilog10()),
                        divisor,
                        "{} divisor is a power of ten",
                        spec.name
                    );
                }
            }
        }
    }
}
