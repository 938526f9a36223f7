use super::*;

fn fake(n: usize) -> *mut u8 {
    (n * 64) as *mut u8
}

fn objects(from: usize, count: usize) -> Vec<*mut u8> {
    (from..from + count).map(fake).collect()
}

fn drained(list: BatchList) -> Vec<*mut u8> {
    let mut all = Vec::new();
    list.drain(|objects| all.extend_from_slice(objects));
    all
}

#[test]
fn take_all_gets_every_object_pushed_once() {
    let queue = RemoteFrees::new();
    assert!(queue.is_empty());
    queue.push_batch(&objects(0, 12)).unwrap();
    queue.push_batch(&objects(100, 3)).unwrap();
    queue.push_batch(&[]).unwrap();
    assert!(!queue.is_empty());
    // SAFETY: this thread is the only one to take or walk.
    assert_eq!(unsafe { queue.count() }, 15);
    // SAFETY: as above.
    let mut all = drained(unsafe { queue.take_all() });
    assert!(queue.is_empty());
    all.sort();
    let mut expected = objects(0, 12);
    expected.extend(objects(100, 3));
    assert_eq!(all, expected);
    // SAFETY: as above.
    assert!(unsafe { queue.take_all() }.is_empty(), "taken once");
}

#[test]
fn a_long_batch_is_split_and_spliced_whole() {
    let queue = RemoteFrees::new();
    queue.push_batch(&objects(0, 2 * REMOTE_BATCH + 5)).unwrap();
    let mut sizes = Vec::new();
    // SAFETY: this thread is the only one to take or walk.
    unsafe { queue.for_each(|objects| sizes.push(objects.len())) };
    assert_eq!(sizes, vec![REMOTE_BATCH, REMOTE_BATCH, 5], "one chain, in order");
    // SAFETY: as above.
    assert_eq!(drained(unsafe { queue.take_all() }), objects(0, 2 * REMOTE_BATCH + 5));
}

#[test]
fn concurrent_pushes_lose_nothing() {
    let queue = std::sync::Arc::new(RemoteFrees::new());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || {
                for round in 0..200 {
                    let start = (t * 1000 + round) * REMOTE_BATCH;
                    let batch: Vec<usize> = (start..start + REMOTE_BATCH).collect();
                    let batch: Vec<*mut u8> = batch.into_iter().map(fake).collect();
                    queue.push_batch(&batch).unwrap();
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
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 4 * 200 * REMOTE_BATCH, "every object exactly once");
}

#[test]
fn dropping_queue_and_list_frees_the_batches() {
    // Miri or a leak checker would see a leak here; the assertion is that neither drop
    // loops or frees twice.
    let queue = RemoteFrees::new();
    queue.push_batch(&objects(0, 30)).unwrap();
    // SAFETY: this thread is the only one to take or walk.
    let list = unsafe { queue.take_all() };
    assert!(!list.is_empty());
    drop(list);
    queue.push_batch(&objects(0, 5)).unwrap();
    drop(queue);
}
