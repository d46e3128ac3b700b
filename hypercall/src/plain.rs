//! [`PlainData`]: the marker for structures whose bytes can be handed to Xen
//! and read back without any check.

use core::mem::size_of;

/// A type that is nothing but bytes: `#[repr(C)]` plain data.
///
/// Argument structures passed to Xen implement it, so that they can be
/// zero-initialised, viewed as bytes (to copy them into and out of hypercall
/// buffers) and rebuilt from any bytes Xen writes back.
///
/// # Safety
///
/// An implementor promises that:
/// - the type is `#[repr(C)]` (or `#[repr(transparent)]`) and has **no padding
///   bytes**: every byte belongs to a field (explicit `_pad` fields stand in
///   for C's implicit padding);
/// - it holds no references, pointers with a lifetime, `bool`s, `char`s,
///   enums or anything else with invalid bit patterns: **every bit pattern of
///   every field is valid**, including all zeroes;
/// - it has no `Drop` glue (it is `Copy`).
pub unsafe trait PlainData: Copy + Sized + 'static {
    /// A value with every byte zero.
    fn zeroed() -> Self {
        // SAFETY: the trait's contract says all-zero bytes are a valid value.
        unsafe { core::mem::zeroed() }
    }

    /// The value's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `self` is a valid reference to `size_of::<Self>()` bytes, and
        // the type has no padding, so every byte is initialised; u8 has
        // alignment 1; the slice borrows `self` immutably.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// The value's bytes, writable: any bytes written form a valid value.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and every bit pattern is a valid `Self`, so
        // whatever the caller writes leaves `self` valid; the slice borrows
        // `self` mutably, so nothing else aliases it.
        unsafe {
            core::slice::from_raw_parts_mut((self as *mut Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// Rebuilds a value from the first `size_of::<Self>()` bytes of `bytes`,
    /// or `None` when `bytes` is shorter. Any alignment is accepted.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        let mut v = Self::zeroed();
        let src = bytes.get(..size_of::<Self>())?;
        v.as_bytes_mut().copy_from_slice(src);
        Some(v)
    }

    /// Writes the value's bytes to the start of `bytes`; `None` (and nothing
    /// written) when `bytes` is shorter than `size_of::<Self>()`.
    fn write_to(&self, bytes: &mut [u8]) -> Option<()> {
        bytes
            .get_mut(..size_of::<Self>())?
            .copy_from_slice(self.as_bytes());
        Some(())
    }
}

/// The bytes of a slice of plain data.
pub fn slice_as_bytes<T: PlainData>(s: &[T]) -> &[u8] {
    // SAFETY: `s` covers `len * size_of::<T>()` initialised bytes (no padding,
    // per `PlainData`); the result borrows `s`.
    unsafe { core::slice::from_raw_parts(s.as_ptr().cast::<u8>(), core::mem::size_of_val(s)) }
}

/// The writable bytes of a slice of plain data: any bytes written leave every
/// element valid.
pub fn slice_as_bytes_mut<T: PlainData>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `slice_as_bytes`; every bit pattern is a valid `T`, and
    // the result borrows `s` mutably, so nothing else aliases it.
    unsafe {
        core::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), core::mem::size_of_val(s))
    }
}

// SAFETY: integers have no padding and every bit pattern is valid.
unsafe impl PlainData for u8 {}
// SAFETY: as for u8.
unsafe impl PlainData for u16 {}
// SAFETY: as for u8.
unsafe impl PlainData for u32 {}
// SAFETY: as for u8.
unsafe impl PlainData for u64 {}
// SAFETY: as for u8.
unsafe impl PlainData for i32 {}
// SAFETY: as for u8.
unsafe impl PlainData for i64 {}
// SAFETY: an array of plain data has no padding between elements (its stride
// is the element's size) and is valid for any bytes that make valid elements.
unsafe impl<T: PlainData, const N: usize> PlainData for [T; N] {}

/// Declares `unsafe impl PlainData` for `#[repr(C)]` structures and pins the
/// claim "no padding" at compile time: the size must equal the sum of the
/// field sizes.
macro_rules! plain_data {
    ($($ty:ty { $($field:ident),* $(,)? })*) => {$(
        // SAFETY: `$ty` is `#[repr(C)]`, made only of integers, arrays of
        // integers and other `PlainData` structures (so every bit pattern is
        // valid and there is no Drop glue); the assertion below proves it has
        // no padding, since its size is the sum of its fields' sizes.
        unsafe impl $crate::plain::PlainData for $ty {}
        const _: () = assert!(
            ::core::mem::size_of::<$ty>() == 0 $(+ $crate::plain::field_size(|v: &$ty| &v.$field))*,
            concat!(stringify!($ty), " has padding")
        );
    )*};
}
pub(crate) use plain_data;

/// The size of the field a projection returns; usable in constant contexts.
pub(crate) const fn field_size<S, F>(_proj: fn(&S) -> &F) -> usize {
    size_of::<F>()
}
