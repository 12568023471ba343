//! Exact money: prices as rationals of cents per unit, amounts rounded once.
//!
//! A [`Rate`] is `num / den` cents per unit in lowest terms, held in `u128`. The pricing file
//! limits prices so that `num < 2^60`; with a `u64` quantity, `2 × quantity × num` stays below
//! `2^125`, so the arithmetic below cannot overflow. No floats anywhere.

use std::fmt;

/// Cents per unit, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    num: u128,
    den: u128,
}

/// The largest numerator a rate may have (see the module documentation).
pub const MAX_NUMERATOR: u128 = 1 << 60;

/// The most decimal places a unit amount may need (Stripe accepts 12 in `unit_amount_decimal`).
pub const MAX_DECIMALS: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("{0:?} is not a dollar amount (digits, optionally a point and up to 6 decimals)")]
    NotADecimal(String),
    #[error("`per` must be at least 1")]
    ZeroPer,
    #[error("{price} per {per} is not a whole number of cents per unit within {MAX_DECIMALS} decimal places")]
    NotFinite { price: String, per: u64 },
    #[error("{0:?} is too large")]
    TooLarge(String),
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Parses a non-negative dollar amount such as `"2.00"` into (mantissa, scale): `2.00` → (200, 2).
fn parse_dollars(text: &str) -> Result<(u128, u32), RateError> {
    let bad = || RateError::NotADecimal(text.to_string());
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty()
        || frac.len() > 6
        || (text.contains('.') && frac.is_empty())
        || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || whole.len() > 12
    {
        return Err(bad());
    }
    let digits: u128 = format!("{whole}{frac}").parse().map_err(|_| bad())?;
    Ok((digits, frac.len() as u32))
}

impl Rate {
    pub const ZERO: Rate = Rate { num: 0, den: 1 };

    /// `num / den` cents per unit.
    pub fn new(num: u128, den: u128) -> Rate {
        assert!(den > 0, "a rate's denominator is positive");
        let g = gcd(num, den).max(1);
        Rate { num: num / g, den: den / g }
    }

    /// `dollars` per `per` units, e.g. `"2.00"` per 1,000 traces is 0.2 cents per trace. Refuses
    /// prices whose cents per unit are not a decimal of at most [`MAX_DECIMALS`] places, so every
    /// rate has an exact `unit_amount_decimal`.
    pub fn per_units(dollars: &str, per: u64) -> Result<Rate, RateError> {
        if per == 0 {
            return Err(RateError::ZeroPer);
        }
        let (mantissa, scale) = parse_dollars(dollars)?;
        // dollars × 100 cents = mantissa × 100 / 10^scale
        let rate = Rate::new(mantissa * 100, 10u128.pow(scale) * per as u128);
        if rate.num >= MAX_NUMERATOR {
            return Err(RateError::TooLarge(dollars.to_string()));
        }
        if rate.decimals().is_none() {
            return Err(RateError::NotFinite { price: dollars.to_string(), per });
        }
        Ok(rate)
    }

    /// A whole number of cents (per one unit).
    pub fn cents(cents: u64) -> Rate {
        Rate::new(cents as u128, 1)
    }

    pub fn is_zero(self) -> bool {
        self.num == 0
    }

    /// How many decimal places the rate needs, if it is a finite decimal of at most
    /// [`MAX_DECIMALS`] places.
    fn decimals(self) -> Option<u32> {
        (0..=MAX_DECIMALS).find(|&k| 10u128.pow(k) % self.den == 0)
    }

    /// `quantity × rate`, rounded once to whole cents, half up (0.5 cent → 1 cent). The pricing
    /// file is refused when any usage could make an invoice exceed `i64::MAX` cents, so this
    /// always fits.
    pub fn amount_cents(self, quantity: u64) -> i64 {
        i64::try_from(self.amount_cents_wide(quantity))
            .expect("pricing files keep amounts below 2^63 cents")
    }

    /// [`Rate::amount_cents`] without the narrowing, for the pricing file's checks.
    pub fn amount_cents_wide(self, quantity: u64) -> u128 {
        let exact_twice = 2 * quantity as u128 * self.num;
        (exact_twice + self.den) / (2 * self.den)
    }

    /// `quantity × rate` exactly, as (numerator, denominator) cents; for tests that check the
    /// rounding.
    pub fn exact_cents(self, quantity: u64) -> (u128, u128) {
        let r = Rate::new(quantity as u128 * self.num, self.den);
        (r.num, r.den)
    }
}

/// The exact decimal, e.g. `0.2` or `0.00000005`: the `unit_amount_decimal` of invoices and of
/// Stripe prices.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.decimals().expect("rates are finite decimals (checked when built)");
        let scaled = self.num * (10u128.pow(k) / self.den);
        let whole = scaled / 10u128.pow(k);
        let frac = scaled % 10u128.pow(k);
        if k == 0 {
            write!(f, "{whole}")
        } else {
            write!(f, "{whole}.{frac:0width$}", width = k as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_become_exact_cents_per_unit() {
        assert_eq!(Rate::per_units("2.00", 1_000).unwrap().to_string(), "0.2");
        assert_eq!(Rate::per_units("0.50", 1_000_000_000).unwrap().to_string(), "0.00000005");
        assert_eq!(Rate::per_units("1.80", 1_000).unwrap().to_string(), "0.18");
        assert_eq!(Rate::per_units("0.45", 1_000_000_000).unwrap().to_string(), "0.000000045");
        assert_eq!(Rate::per_units("250.00", 1).unwrap().to_string(), "25000");
        assert_eq!(Rate::per_units("0", 1).unwrap().to_string(), "0");
        assert_eq!(Rate::ZERO.to_string(), "0");
    }

    #[test]
    fn bad_prices_are_refused() {
        for bad in ["", "-1", "1.", ".5", "1,00", "1.0000001", "abc", "1e3"] {
            assert!(matches!(Rate::per_units(bad, 1), Err(RateError::NotADecimal(_))), "{bad}");
        }
        assert_eq!(Rate::per_units("1.00", 0), Err(RateError::ZeroPer));
        assert!(matches!(Rate::per_units("1.00", 3), Err(RateError::NotFinite { .. })));
    }

    #[test]
    fn amounts_round_half_up_once() {
        let r = Rate::per_units("2.00", 1_000).unwrap(); // 0.2 cent
        assert_eq!(r.amount_cents(1_500), 300);
        assert_eq!(r.amount_cents(2), 0); // 0.4 → 0
        assert_eq!(r.amount_cents(3), 1); // 0.6 → 1
        assert_eq!(Rate::new(1, 2).amount_cents(1), 1); // 0.5 → 1
        assert_eq!(Rate::new(1, 2).amount_cents(3), 2); // 1.5 → 2
        let byte = Rate::per_units("0.50", 1_000_000_000).unwrap();
        assert_eq!(byte.exact_cents(1), (1, 20_000_000)); // 0.00000005 cent
        assert_eq!(byte.amount_cents(1), 0);
        assert_eq!(byte.amount_cents(10_000_000), 1); // exactly 0.5 cent → 1
        assert_eq!(byte.amount_cents(9_999_999), 0);
        assert_eq!(byte.amount_cents(u64::MAX), 922_337_203_685); // 922,337,203,685.4775807 cents
    }
}
