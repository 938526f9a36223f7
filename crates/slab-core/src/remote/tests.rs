use super::*;

/// Word-aligned, word-sized "objects" the queue may link through.
fn objects(count: usize) -> Vec<*mut u8> {
    (0..count).map(|_| Box::into_raw(Box::new(0usize)).cast::<u8>()).collect()
}

fn release(objects: &[*mut u8]) {
    for &obj in objects {
        // SAFETY: made by `objects` and no longer queued.
        drop(unsafe { Box::from_raw(obj.cast::<usize>()) });
    }
}

fn drained(list: ObjectList) -> Vec<*mut u8> {
    let mut all = Vec::new();
    assert!(list.drain(usize::MAX, |objects| all.extend_from_slice(objects)));
    all
}

#[test]
fn take_all_gets_every_object_pushed_once() {
    let queue = RemoteFrees::new();
    let first = objects(12);
    let second = objects(40);
    assert!(queue.is_empty());
    // SAFETY: the objects are ours, given once each.
    unsafe {
        queue.push_batch(&first);
        queue.push_batch(&second);
        queue.push_batch(&[]);
    }
    assert!(!queue.is_empty());
    let mut walked = 0;
    // SAFETY: this thread is the only one to take or walk.
    assert!(unsafe {
        queue.walk(usize::MAX, |_| {
            walked += 1;
            true
        })
    });
    assert_eq!(walked, 52);
    // SAFETY: as above.
    let all = drained(unsafe { queue.take_all() });
    assert!(queue.is_empty());
    let mut expected = second.clone();
    expected.extend_from_slice(&first);
    assert_eq!(all, expected, "newest batch first, each in its order");
    // SAFETY: as above.
    assert!(unsafe { queue.take_all() }.is_empty(), "taken once");
    release(&all);
}

#[test]
fn walks_and_drains_stop_at_their_bound_and_at_a_refusal() {
    let queue = RemoteFrees::new();
    let first = objects(3);
    let second = objects(3);
    // SAFETY: ours, once each.
    unsafe {
        queue.push_batch(&first);
        queue.push_batch(&second);
    }
    let mut seen = Vec::new();
    // SAFETY: this thread is the only one to take or walk.
    let complete = unsafe {
        queue.walk(4, |obj| {
            seen.push(obj);
            true
        })
    };
    assert!(!complete, "six queued, bound four");
    assert_eq!(seen.len(), 4);
    // SAFETY: as above.
    assert!(!unsafe { queue.walk(usize::MAX, |obj| obj != second[1]) }, "refused");
    // The same object pushed again (a double free) makes the list circular.
    // SAFETY: deliberately breaks the once-each rule to check the bound.
    unsafe { queue.push_batch(&first[..1]) };
    let mut count = 0;
    // SAFETY: as above.
    let list = unsafe { queue.take_all() };
    assert!(!list.drain(100, |objects| count += objects.len()), "a loop ends at the bound");
    assert_eq!(count, 100);
    release(&first);
    release(&second);
}

#[test]
fn concurrent_pushes_lose_nothing() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 200;
    let all = objects(THREADS * ROUNDS * 12);
    let addresses: Vec<usize> = all.iter().map(|&obj| obj as usize).collect();
    let queue = std::sync::Arc::new(RemoteFrees::new());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let queue = std::sync::Arc::clone(&queue);
            let mine: Vec<usize> = addresses[t * ROUNDS * 12..(t + 1) * ROUNDS * 12].to_vec();
            std::thread::spawn(move || {
                for batch in mine.chunks(12) {
                    let batch: Vec<*mut u8> = batch.iter().map(|&a| a as *mut u8).collect();
                    // SAFETY: this thread's own objects, given once each.
                    unsafe { queue.push_batch(&batch) };
                }
            })
        })
        .collect();
    let mut taken = Vec::new();
    while threads.iter().any(|t| !t.is_finished()) {
        // SAFETY: this thread is the only one to take or walk.
        taken.extend(drained(unsafe { queue.take_all() }));
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
    // SAFETY: as above.
    taken.extend(drained(unsafe { queue.take_all() }));
    let mut sorted: Vec<usize> = taken.iter().map(|&obj| obj as usize).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), THREADS * ROUNDS * 12, "every object exactly once");
    assert_eq!(taken.len(), sorted.len());
    release(&all);
}
