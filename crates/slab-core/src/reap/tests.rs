use super::*;

fn array_with(limit: u32, avail: u32, touched: bool) -> ArrayCache {
    let mut ac = ArrayCache::new(limit, 1).unwrap();
    for n in 1..=avail {
        ac.push((n as usize * 64) as *mut u8);
    }
    ac.set_touched(touched);
    ac
}

#[test]
fn a_touched_array_is_spared_once() {
    let mut ac = array_with(120, 50, true);
    assert_eq!(objects_to_drain(&mut ac, Drain::ReaperShare), 0);
    assert!(!ac.touched(), "sparing clears touched");
    assert_eq!(objects_to_drain(&mut ac, Drain::ReaperShare), 24, "(limit + 4) / 5");
}

#[test]
fn a_nearly_empty_array_gives_half() {
    let mut ac = array_with(120, 5, false);
    assert_eq!(
        objects_to_drain(&mut ac, Drain::ReaperShare),
        3,
        "(avail + 1) / 2 when a fifth of limit exceeds avail"
    );
}

#[test]
fn draining_everything_takes_everything_even_when_touched() {
    let mut ac = array_with(10, 7, true);
    assert_eq!(objects_to_drain(&mut ac, Drain::Everything), 7);
    let mut empty = array_with(10, 0, false);
    assert_eq!(objects_to_drain(&mut empty, Drain::Everything), 0);
}
