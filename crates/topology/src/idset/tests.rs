use proptest::prelude::*;

use super::*;

#[test]
fn list_round_trips_and_tolerates_kernel_quirks() {
    let set = IdSet::parse_list("0-3,8-11\n\0", ID_LIMIT).unwrap();
    assert_eq!(set.len(), 8);
    assert_eq!(set.to_list_string(), "0-3,8-11");
    assert_eq!(IdSet::parse_list("\n", ID_LIMIT).unwrap(), IdSet::new());
    assert_eq!("5".parse::<IdSet>().unwrap().iter().collect::<Vec<_>>(), vec![5]);
}

#[test]
fn mask_round_trips_and_accepts_leading_zero_words() {
    let set = IdSet::parse_mask("ff,ffffffff\n", ID_LIMIT).unwrap();
    assert_eq!(set.to_list_string(), "0-39");
    assert_eq!(set.to_mask_string(), "ff,ffffffff");
    let sparse = IdSet::parse_mask("00000000,00000000,00000001,00000000", ID_LIMIT).unwrap();
    assert_eq!(sparse.to_list_string(), "32");
    assert_eq!(IdSet::new().to_mask_string(), "0");
    assert_eq!(IdSet::parse_mask("0\n", ID_LIMIT).unwrap(), IdSet::new());
}

#[test]
fn absurd_and_malformed_input_is_refused_with_the_text() {
    let error = IdSet::parse_list("0-4294967295", ID_LIMIT).unwrap_err();
    assert_eq!(error.text, "0-4294967295");
    assert!(error.reason.contains("beyond the limit"), "{error}");
    assert!(IdSet::parse_list("3-1", ID_LIMIT).unwrap_err().reason.contains("backwards"));
    assert!(IdSet::parse_list("1,,2", ID_LIMIT).is_err());
    assert!(IdSet::parse_list("a-b", ID_LIMIT).is_err());
    assert!(IdSet::parse_list("-1", ID_LIMIT).is_err());
    assert!(IdSet::parse_list("4", 4).is_err());
    assert!(IdSet::parse_mask("xyz", ID_LIMIT).is_err());
    assert!(IdSet::parse_mask("123456789", ID_LIMIT).is_err());
    assert!(IdSet::parse_mask("", ID_LIMIT).is_err());
    assert!(IdSet::parse_mask("+f", ID_LIMIT).is_err());
    assert!(IdSet::parse_mask("10", 4).is_err());
    assert!(IdSet::new().try_insert(ID_LIMIT).is_err());
}

#[test]
fn set_operations() {
    let a: IdSet = "0-7".parse().unwrap();
    let b: IdSet = "4-11".parse().unwrap();
    assert_eq!(a.union(&b).to_string(), "0-11");
    assert_eq!(a.intersection(&b).to_string(), "4-7");
    assert_eq!(a.difference(&b).to_string(), "0-3");
    assert!(a.intersection(&b).is_subset(&a));
    assert!(!a.is_subset(&b));
    assert_eq!(b.first(), Some(4));
    assert_eq!(b.last(), Some(11));
    let mut c = a.clone();
    assert!(c.remove(7));
    assert!(!c.remove(7));
    assert_eq!(c.last(), Some(6));
    // Removing the top id trims the bitmap so equal sets compare equal.
    let mut d: IdSet = "1,200".parse().unwrap();
    d.remove(200);
    assert_eq!(d, "1".parse().unwrap());
}

fn arbitrary_set() -> impl Strategy<Value = IdSet> {
    proptest::collection::vec(0u32..2048, 0..64).prop_map(|ids| ids.into_iter().collect())
}

proptest! {
    #[test]
    fn list_form_round_trips(set in arbitrary_set()) {
        let text = set.to_list_string();
        prop_assert_eq!(IdSet::parse_list(&text, ID_LIMIT).unwrap(), set);
    }

    #[test]
    fn mask_form_round_trips(set in arbitrary_set()) {
        let text = set.to_mask_string();
        prop_assert_eq!(IdSet::parse_mask(&text, ID_LIMIT).unwrap(), set);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_text(text in "\\PC{0,40}") {
        let _ = IdSet::parse_list(&text, ID_LIMIT);
        let _ = IdSet::parse_mask(&text, ID_LIMIT);
    }

    #[test]
    fn parsed_kernel_like_text_round_trips(text in "[0-9a-f,\\-\n\0]{0,40}") {
        if let Ok(set) = IdSet::parse_list(&text, ID_LIMIT) {
            prop_assert_eq!(IdSet::parse_list(&set.to_list_string(), ID_LIMIT).unwrap(), set);
        }
        if let Ok(set) = IdSet::parse_mask(&text, ID_LIMIT) {
            prop_assert_eq!(IdSet::parse_mask(&set.to_mask_string(), ID_LIMIT).unwrap(), set);
        }
    }

    #[test]
    fn operations_agree_with_a_btreeset(a in arbitrary_set(), b in arbitrary_set()) {
        use std::collections::BTreeSet;
        let sa: BTreeSet<u32> = a.iter().collect();
        let sb: BTreeSet<u32> = b.iter().collect();
        prop_assert_eq!(a.union(&b).iter().collect::<BTreeSet<_>>(), &sa | &sb);
        prop_assert_eq!(a.intersection(&b).iter().collect::<BTreeSet<_>>(), &sa & &sb);
        prop_assert_eq!(a.difference(&b).iter().collect::<BTreeSet<_>>(), &sa - &sb);
        prop_assert_eq!(a.len(), sa.len());
    }
}
