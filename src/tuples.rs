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

/// A trigger's row, deformed once: its columns read by name without walking the tuple again
/// for each (a column after a variable-length one is otherwise found from the start).
pub struct Row {
    tupdesc: pg_sys::TupleDesc,
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Row {
    /// # Safety
    /// `tuple` is a valid tuple of `tupdesc`, alive as long as the values read from the row.
    pub unsafe fn deform(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc) -> Row {
        // SAFETY: as the function's contract says.
        unsafe {
            let natts = (*tupdesc).natts as usize;
            let mut values = vec![pg_sys::Datum::from(0); natts];
            let mut nulls = vec![true; natts];
            pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            Row {
                tupdesc,
                values,
                nulls,
            }
        }
    }

    /// The column's datum, None when null (pointing into the tuple for by-reference types).
    pub fn datum(&self, name: &CStr) -> Option<pg_sys::Datum> {
        // SAFETY: the descriptor the row was deformed with.
        let at = unsafe { column_number(self.tupdesc, name) }.get() - 1;
        (!self.nulls[at]).then_some(self.values[at])
    }

    /// The column's value, converted (copied for text).
    pub fn get<T: pgrx::FromDatum>(&self, name: &CStr) -> Option<T> {
        // SAFETY: the descriptor the row was deformed with.
        let at = unsafe { column_number(self.tupdesc, name) }.get() - 1;
        // SAFETY: the datum is of the column's type, from a tuple alive as long as the row.
        unsafe {
            let type_oid = (*(*self.tupdesc).attrs.as_ptr().add(at)).atttypid;
            T::from_polymorphic_datum(self.values[at], self.nulls[at], type_oid)
        }
    }
}
