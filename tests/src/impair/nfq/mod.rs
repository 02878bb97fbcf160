//! The NFQUEUE delay element: the kernel here has no netem, so packets matched by an
//! `-j NFQUEUE` rule are handed to a userspace thread that holds each one and accepts
//! it when its delay (plus jitter) has passed. [`netlink`] speaks the protocol,
//! [`element`] runs the deadline heap.

pub mod element;
pub mod netlink;

pub use element::{DelaySpec, ElementStats, NfqElement};
