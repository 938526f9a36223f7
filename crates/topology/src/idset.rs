//! [`IdSet`]: a bounded set of CPU or node ids with the kernel's two text forms.
//!
//! The kernel prints id sets either as a list (`0-3,8-11`, `bitmap_print_to_pagebuf`
//! with `list = true`) or as a hex mask of comma-separated 32-bit words, most significant
//! word first (`ff,ffffffff`). Both are parsed here, with the quirks real machines write:
//! a trailing newline, a trailing `"\n\0"`, leading zero words.

use std::fmt;

use crate::error::ParseError;

/// The largest id any set may hold, exclusive. The kernel's `NR_CPUS` tops out at 8192
/// on x86 and `MAX_NUMNODES` at 1024; 65536 leaves room for any machine while keeping a
/// set at most 8 KiB, so that `0-4294967295` is refused instead of allocating 512 MiB.
pub const ID_LIMIT: u32 = 1 << 16;

/// A set of CPU ids.
pub type CpuSet = IdSet;
/// A set of NUMA node ids.
pub type NodeSet = IdSet;

/// A set of small integer ids (CPUs or nodes), stored as a bitmap.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct IdSet {
    /// Bit `i % 64` of word `i / 64` is set when `i` is in the set. Trailing zero words
    /// are trimmed so that equal sets compare equal.
    words: Vec<u64>,
}

impl IdSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { words: Vec::new() }
    }

    /// The set `0..n`.
    ///
    /// # Panics
    /// If `n > ID_LIMIT`.
    pub fn first_n(n: u32) -> Self {
        (0..n).collect()
    }

    /// Adds `id`; returns whether it was absent.
    ///
    /// # Panics
    /// If `id >= ID_LIMIT`; use [`IdSet::try_insert`] for ids from outside the program.
    pub fn insert(&mut self, id: u32) -> bool {
        match self.try_insert(id) {
            Ok(added) => added,
            Err(error) => panic!("{error}"),
        }
    }

    /// Adds `id`, refusing ids at or beyond [`ID_LIMIT`]; returns whether it was absent.
    pub fn try_insert(&mut self, id: u32) -> Result<bool, ParseError> {
        if id >= ID_LIMIT {
            return Err(ParseError {
                text: id.to_string(),
                reason: format!("id {id} is beyond the limit of {ID_LIMIT} ids"),
            });
        }
        let (word, bit) = (id as usize / 64, id % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let absent = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        Ok(absent)
    }

    /// Removes `id`; returns whether it was present.
    pub fn remove(&mut self, id: u32) -> bool {
        let (word, bit) = (id as usize / 64, id % 64);
        let Some(w) = self.words.get_mut(word) else { return false };
        let present = *w & (1 << bit) != 0;
        *w &= !(1 << bit);
        self.trim();
        present
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u32) -> bool {
        self.words.get(id as usize / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The number of ids in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The smallest id, if any.
    pub fn first(&self) -> Option<u32> {
        self.iter().next()
    }

    /// The largest id, if any.
    pub fn last(&self) -> Option<u32> {
        let top = self.words.len().checked_sub(1)?;
        Some(top as u32 * 64 + 63 - self.words[top].leading_zeros())
    }

    /// The largest id plus one, 0 for the empty set: the length of a table indexed by id.
    pub fn id_bound(&self) -> usize {
        self.last().map_or(0, |last| last as usize + 1)
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { words: &self.words, index: 0, current: self.words.first().copied().unwrap_or(0) }
    }

    /// The ids in either set.
    pub fn union(&self, other: &Self) -> Self {
        let (long, short) = if self.words.len() >= other.words.len() { (self, other) } else { (other, self) };
        let mut words = long.words.clone();
        words.iter_mut().zip(&short.words).for_each(|(a, b)| *a |= b);
        Self::from_words(words)
    }

    /// The ids in both sets.
    pub fn intersection(&self, other: &Self) -> Self {
        Self::from_words(self.words.iter().zip(&other.words).map(|(a, b)| a & b).collect())
    }

    /// The ids in `self` but not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let words = self
            .words
            .iter()
            .enumerate()
            .map(|(i, a)| a & !other.words.get(i).copied().unwrap_or(0))
            .collect();
        Self::from_words(words)
    }

    /// Whether every id of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.difference(other).is_empty()
    }

    /// Parses the list form (`0-3,8-11`), as in `cpulist`, `online`, `possible`.
    ///
    /// Accepts an empty list, surrounding whitespace and a trailing `"\n\0"`. Refuses
    /// reversed ranges, ids at or beyond `limit` (itself capped at [`ID_LIMIT`]) and
    /// anything that is not digits, commas and dashes.
    pub fn parse_list(text: &str, limit: u32) -> Result<Self, ParseError> {
        let limit = limit.min(ID_LIMIT);
        let fail = |reason: String| ParseError { text: text.to_owned(), reason };
        let body = trim_kernel_text(text);
        let mut set = Self::new();
        if body.is_empty() {
            return Ok(set);
        }
        for part in body.split(',') {
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (parse_id(low, text, limit)?, parse_id(high, text, limit)?),
                None => {
                    let id = parse_id(part, text, limit)?;
                    (id, id)
                }
            };
            if low > high {
                return Err(fail(format!("range {part:?} runs backwards")));
            }
            for id in low..=high {
                set.try_insert(id).map_err(|e| fail(e.reason))?;
            }
        }
        Ok(set)
    }

    /// Parses the hex mask form (`ff,ffffffff`), as in `cpumap`: 32-bit words separated
    /// by commas, most significant first. Leading zero words of any length are accepted;
    /// a set bit at or beyond `limit` (capped at [`ID_LIMIT`]) is refused.
    pub fn parse_mask(text: &str, limit: u32) -> Result<Self, ParseError> {
        let limit = limit.min(ID_LIMIT);
        let fail = |reason: String| ParseError { text: text.to_owned(), reason };
        let body = trim_kernel_text(text);
        if body.is_empty() {
            return Err(fail("empty mask".into()));
        }
        let mut set = Self::new();
        for (index_from_right, chunk) in body.rsplit(',').enumerate() {
            if chunk.is_empty() || chunk.len() > 8 {
                return Err(fail(format!("mask word {chunk:?} is not 1 to 8 hex digits")));
            }
            let word = u32::from_str_radix(chunk, 16)
                .map_err(|_| fail(format!("mask word {chunk:?} is not hexadecimal")))?;
            if chunk.starts_with('+') {
                return Err(fail(format!("mask word {chunk:?} is not hexadecimal")));
            }
            for bit in 0..32u64 {
                if word & (1 << bit) == 0 {
                    continue;
                }
                let id = index_from_right as u64 * 32 + bit;
                if id >= u64::from(limit) {
                    return Err(fail(format!("bit {id} is beyond the limit of {limit} ids")));
                }
                set.insert(id as u32);
            }
        }
        Ok(set)
    }

    /// The list form: `0-3,8-11`; the empty set prints as an empty string.
    pub fn to_list_string(&self) -> String {
        self.to_string()
    }

    /// The hex mask form, as the kernel prints it: 32-bit words, most significant first,
    /// each of 8 digits but the first; the empty set prints as `0`.
    pub fn to_mask_string(&self) -> String {
        let Some(last) = self.last() else { return "0".to_owned() };
        let words32 = last as usize / 32 + 1;
        let word = |i: usize| (self.words[i / 2] >> ((i % 2) * 32)) as u32;
        let mut out = format!("{:x}", word(words32 - 1));
        for i in (0..words32 - 1).rev() {
            out.push_str(&format!(",{:08x}", word(i)));
        }
        out
    }

    fn from_words(words: Vec<u64>) -> Self {
        let mut set = Self { words };
        set.trim();
        set
    }

    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }
}

/// Strips what the kernel and captures put around a value: whitespace, `\n`, `\0`.
pub(crate) fn trim_kernel_text(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

fn parse_id(digits: &str, text: &str, limit: u32) -> Result<u32, ParseError> {
    let fail = |reason: String| ParseError { text: text.to_owned(), reason };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(format!("{digits:?} is not a decimal id")));
    }
    match digits.parse::<u64>() {
        Ok(id) if id < u64::from(limit) => Ok(id as u32),
        _ => Err(fail(format!("id {digits} is beyond the limit of {limit} ids"))),
    }
}

impl fmt::Display for IdSet {
    /// The list form, `0-3,8-11`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut iter = self.iter().peekable();
        let mut first = true;
        while let Some(low) = iter.next() {
            let mut high = low;
            while iter.peek() == Some(&(high + 1)) {
                high = iter.next().unwrap_or(high);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if low == high {
                write!(f, "{low}")?;
            } else {
                write!(f, "{low}-{high}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdSet({self})")
    }
}

impl std::str::FromStr for IdSet {
    type Err = ParseError;

    /// Parses the list form, bounded by [`ID_LIMIT`].
    fn from_str(text: &str) -> Result<Self, ParseError> {
        Self::parse_list(text, ID_LIMIT)
    }
}

impl FromIterator<u32> for IdSet {
    /// # Panics
    /// If an id is at or beyond [`ID_LIMIT`].
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut set = Self::new();
        iter.into_iter().for_each(|id| {
            set.insert(id);
        });
        set
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = u32;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for IdSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_list_string())
    }
}

/// The ids of an [`IdSet`] in ascending order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    words: &'a [u64],
    index: usize,
    current: u64,
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while self.current == 0 {
            self.index += 1;
            self.current = *self.words.get(self.index)?;
        }
        let bit = self.current.trailing_zeros();
        self.current &= self.current - 1;
        Some(self.index as u32 * 64 + bit)
    }
}

#[cfg(test)]
mod tests;
