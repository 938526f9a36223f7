use std::time::Duration;

use super::*;

#[test]
fn durations_with_units_and_plain_numbers() {
    assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(duration("3s"), Ok(Duration::from_secs(3)));
    assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
    assert_eq!(duration("0.25"), Ok(Duration::from_millis(250)));
    assert_eq!(duration_in("20", PlainUnit::Milliseconds, Zero::Allowed), Ok(Duration::from_millis(20)));
    assert_eq!(duration_in("0", PlainUnit::Milliseconds, Zero::Allowed), Ok(Duration::ZERO));
    assert_eq!(duration_in("1s", PlainUnit::Milliseconds, Zero::Allowed), Ok(Duration::from_secs(1)));
}

#[test]
fn bad_durations_say_why() {
    for (text, reason) in [
        ("-1", "negative"),
        ("-2s", "negative"),
        ("1e30", "too long"),
        ("400d", "too long"),
        ("99999999999999999999999s", "give a number"),
        ("inf", "not a finite"),
        ("NaN", "not a finite"),
        ("0", "more than zero"),
        ("0s", "more than zero"),
        ("3 parsecs", "give a number"),
        ("", "give a number"),
    ] {
        let error = duration(text).expect_err(text);
        assert!(error.contains(reason), "{text:?}: {error}");
    }
}

#[test]
fn whole_numbers_in_range() {
    assert_eq!(whole_number::<u32>("42", 0, 100), Ok(42));
    assert_eq!(whole_number::<u32>(" 7 ", 1, 9), Ok(7));
    for (text, reason) in [
        ("150", "too large"),
        ("0", "too small"),
        ("-3", "negative"),
        ("abc", "not a whole number"),
        ("1.5", "not a whole number"),
        ("", "not a whole number"),
        ("99999999999999999999999", "too large"),
    ] {
        let error = whole_number::<u32>(text, 1, 100).expect_err(text);
        assert!(error.contains(reason) && error.contains("from 1 to 100"), "{text:?}: {error}");
    }
}
