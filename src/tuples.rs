//! Columns of the rows triggers are handed, found by name once per row instead of through
//! pgrx's `get_by_name` (which converts every column's name on each lookup): on the insert
//! path of `usage_events`, which runs for every event.
use std::ffi::CStr;
use std::num::NonZeroUsize;

use pgrx::pg_sys;

use crate::errors;

/// The (1-based) number of the column `name` of `tupdesc`; an internal error when missing.
///
/// # Safety
/// `tupdesc` is a valid tuple descriptor.
pub unsafe fn column_number(tupdesc: pg_sys::TupleDesc, name: &CStr) -> NonZeroUsize {
    // SAFETY: as the function's contract says.
    unsafe {
        for i in 0..(*tupdesc).natts as usize {
            let attribute = (*tupdesc).attrs.as_ptr().add(i);
            if !(*attribute).attisdropped
                && CStr::from_ptr((*attribute).attname.data.as_ptr()) == name
            {
                return NonZeroUsize::MIN.saturating_add(i);
            }
        }
    }
    errors::internal(
        "reading a row",
        format!("no column {}", name.to_string_lossy()),
    )
}
