//! slab-core integration tests: a property test against a model, a multi-threaded
//! hotplug stress test on the seed box, and misuse of the raw API in debug mode.

mod allowed_mems;
mod misuse;
mod model;
mod stress;
mod validate;
