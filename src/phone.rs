//! `PhoneNumber`: a WhatsApp number as the digits of its E.164 form, parsed at the boundary.
//! Property tests check that whatever parses is 6 to 15 digits.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Digits only, 6 to 15 of them, no leading zero (E.164 without the `+`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

/// Why a string is not a phone number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a phone number is 6 to 15 digits in international form, like 447123456789 or +447123456789")]
pub struct InvalidPhoneNumber;

impl PhoneNumber {
    /// Accepts `+447123456789`, `447123456789` and the common spaced or dashed forms.
    pub fn parse(input: &str) -> Result<Self, InvalidPhoneNumber> {
        let trimmed = input.trim();
        let without_plus = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let mut digits = String::with_capacity(without_plus.len());
        for c in without_plus.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '(' | ')' | '.' => {}
                _ => return Err(InvalidPhoneNumber),
            }
        }
        if !(6..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(InvalidPhoneNumber);
        }
        Ok(Self(digits))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = InvalidPhoneNumber;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_common_forms() {
        for s in ["447123456789", "+447123456789", "+44 7123-456789", "(1) 555 0123456"] {
            assert!(PhoneNumber::parse(s).is_ok(), "{s}");
        }
        assert_eq!(PhoneNumber::parse("+44 7123 456789").unwrap().as_str(), "447123456789");
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "",
            "12345",
            "0447123456789",
            "44712345678901234",
            "44abc",
            "+",
            "4471234567 89x",
        ] {
            assert!(PhoneNumber::parse(s).is_err(), "{s}");
        }
    }

    proptest! {
        #[test]
        fn parsed_numbers_are_digits_only(s in ".{0,40}") {
            if let Ok(n) = PhoneNumber::parse(&s) {
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_digit()));
                prop_assert!((6..=15).contains(&n.as_str().len()));
            }
        }

        #[test]
        fn any_valid_number_round_trips(n in "[1-9][0-9]{5,14}") {
            prop_assert_eq!(PhoneNumber::parse(&n).unwrap().to_string(), n.clone());
            let plus = format!("+{n}");
            prop_assert_eq!(PhoneNumber::parse(&plus).unwrap().to_string(), n);
        }
    }
}
