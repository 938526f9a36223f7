//! Value parsers shared by every subcommand's options, so that a bad value is refused by
//! clap (exit status 2) with a message naming the option, the value and the reason,
//! never a panic.
//!
//! Options that take these parsers also set `allow_hyphen_values`, so that `--duration -1`
//! reaches the parser and is called negative, instead of clap reading `-1` as an unknown
//! flag.

use std::time::Duration;

/// The longest duration any option accepts: a year. Longer runs are surely a typo, and
/// the bound keeps `Instant::now() + duration` far from overflowing.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a number without a unit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainUnit {
    Seconds,
    Milliseconds,
}

/// Whether zero is a meaningful value of the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    Allowed,
    Refused,
}

/// Parses a duration with a unit (`500ms`, `3s`, `2m`, `1h 30m`, as `humantime` reads
/// them) or a plain, possibly fractional number in `plain` units.
pub(crate) fn duration_in(text: &str, plain: PlainUnit, zero: Zero) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err("the duration is negative".into());
    }
    let duration = match trimmed.parse::<f64>() {
        Ok(number) if !number.is_finite() => {
            return Err("not a finite duration; give a number of seconds or a duration such as 3s".into())
        }
        Ok(number) => {
            let seconds = match plain {
                PlainUnit::Seconds => number,
                PlainUnit::Milliseconds => number / 1000.0,
            };
            let duration = Duration::try_from_secs_f64(seconds).map_err(|_| too_long())?;
            if number > 0.0 && duration.is_zero() {
                return Err("shorter than a nanosecond, the finest duration there is".into());
            }
            duration
        }
        Err(_) => humantime::parse_duration(trimmed).map_err(|error| {
            format!("{error}; give a number of seconds or a duration such as 500ms, 3s or 2m")
        })?,
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    if zero == Zero::Refused && duration.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(duration)
}

fn too_long() -> String {
    format!("too long: at most {} days", MAX_DURATION.as_secs() / (24 * 3600))
}

/// A positive duration, plain numbers in seconds: `--duration` of every subcommand.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    duration_in(text, PlainUnit::Seconds, Zero::Refused)
}

/// A whole number from `min` to `max`, with a reason when it is not one.
pub(crate) fn whole_number<T>(text: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let range = || format!("give a whole number from {min} to {max}");
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("the value is negative; {}", range()));
    }
    if trimmed.is_empty() || !trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("not a whole number; {}", range()));
    }
    match trimmed.parse::<T>() {
        Ok(value) if value < min => Err(format!("too small; {}", range())),
        Ok(value) if value > max => Err(format!("too large; {}", range())),
        Ok(value) => Ok(value),
        // Only digits, so the number does not fit the type.
        Err(_) => Err(format!("too large; {}", range())),
    }
}

#[cfg(test)]
mod tests;
