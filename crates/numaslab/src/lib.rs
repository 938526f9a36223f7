//! numaslab: a NUMA-aware, CPU-hotplug-aware slab allocator. This facade re-exports the
//! crates it wires together.

pub use topology;
