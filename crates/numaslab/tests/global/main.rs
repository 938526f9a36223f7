//! The workspace's tests once more, with numaslab as this process's allocator: every
//! `Box`, `Vec`, `String` and `HashMap` of the test harness, of the tests, and of
//! numaslab's own metadata comes from `NumaSlabAlloc`'s kmalloc caches.
//!
//! The other crates' integration tests are compiled in from their files (slab-core's
//! model, stress and misuse tests; hotplug's watchers, fixtures, forged uevents, lost
//! descriptors, model and opt-in real hotplug; topology's live-machine and bad-input tests); `process.rs` holds
//! the tests of the global allocator itself: bring-up, the seed's metadata hazard, the
//! registry growing under its own slabs' growth, threads starting and exiting, and
//! (opt-in) real hotplug of the CPU the allocator runs on; `follow.rs` those of
//! `NumaSlabAlloc::follow_hotplug`.

#[global_allocator]
static GLOBAL: numaslab::NumaSlabAlloc = numaslab::NumaSlabAlloc::new();

mod follow;
mod process;

// slab-core's integration tests.
#[path = "../../../slab-core/tests/it/misuse.rs"]
mod misuse;
#[path = "../../../slab-core/tests/it/model.rs"]
mod model;
#[path = "../../../slab-core/tests/it/stress.rs"]
mod stress;

// hotplug's integration tests (`support` is theirs, at the root where they look for it).
#[path = "../../../hotplug/tests/it/descriptors.rs"]
mod descriptors;
#[path = "../../../hotplug/tests/it/fake_watch.rs"]
mod fake_watch;
#[path = "../../../hotplug/tests/it/fixture.rs"]
mod fixture;
#[path = "../../../hotplug/tests/it/forged.rs"]
mod forged;
#[path = "../../../hotplug/tests/it/model.rs"]
mod hotplug_model;
#[path = "../../../hotplug/tests/it/real_linux.rs"]
mod real_linux;
#[path = "../../../hotplug/tests/it/support.rs"]
mod support;

// topology's tests that need no helper of its test crate.
#[path = "../../../topology/tests/it/bad_input.rs"]
mod bad_input;
#[path = "../../../topology/tests/it/live.rs"]
mod live;
