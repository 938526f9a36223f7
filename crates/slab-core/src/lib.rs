//! The NUMA slab allocator. Its allocator is specified in SPEC section 4 and is built in issue 3.
