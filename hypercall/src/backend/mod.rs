//! The doorways into Xen, one file each (as Xen's own
//! `tools/libs/call/{linux,freebsd,minios}.c`).

#[cfg(feature = "page")]
pub mod hypercall_page;
#[cfg(all(feature = "privcmd", target_os = "linux"))]
pub mod privcmd;
