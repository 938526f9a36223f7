use super::*;

#[test]
fn page_size_is_a_power_of_two() {
    assert!(page_size().is_power_of_two());
    assert!(page_size() >= 4096);
}

#[test]
fn page_size_is_the_kernels() {
    // SAFETY: sysconf has no memory-safety preconditions.
    let asked = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert_eq!(page_size() as libc::c_long, asked, "the constant on x86_64 must be what the kernel says");
}

#[test]
fn blocks_are_aligned_to_their_size_and_writable() {
    for order in 0..6 {
        let bytes = page_size() << order;
        let block = map_aligned(bytes).expect("mmap of a small block");
        assert_eq!(block.as_ptr() as usize % bytes, 0, "order {order} block is not aligned");
        // SAFETY: the block is ours, `bytes` long.
        unsafe {
            block.as_ptr().write(0xa5);
            block.as_ptr().add(bytes - 1).write(0x5a);
            assert_eq!(block.as_ptr().read(), 0xa5);
            unmap(block.as_ptr(), bytes);
        }
    }
}

#[test]
fn binding_to_node_zero_is_accepted_or_refused_with_a_reason() {
    let bytes = page_size();
    let block = map_aligned(bytes).unwrap();
    match bind_to_node(block, bytes, 0) {
        Ok(()) => {}
        // Containers without NUMA support or with a seccomp filter refuse mbind.
        Err(error) => {
            let code = error.raw_os_error().unwrap_or(0);
            assert!(
                [libc::ENOSYS, libc::EPERM, libc::EINVAL, libc::EIO].contains(&code),
                "unexpected mbind error {error}"
            );
            println!("mbind refused here ({error}); slab-core would log this and go on");
        }
    }
    // SAFETY: the block is ours.
    unsafe { unmap(block.as_ptr(), bytes) };
}
