//! The CPU-hotplug state machine. Specified in SPEC section 5 and built in issue 4.
