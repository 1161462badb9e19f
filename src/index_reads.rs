//! Reading a few rows through a btree index directly, without planning or running a query.
//!
//! The per-request readers (`current_user_org_ids`, `check_feature_access`,
//! `get_usage_summary`) fetch a handful of rows by key on every call; going through SPI costs
//! an executor start-up, a plan check and a result set each time, more than the rows
//! themselves. A probe opens the table and the index (the locks stay until the transaction
//! ends, as a query's would), scans with equality keys on the index's leading columns and
//! hands each visible row's columns to the caller. Access is the caller's decision: a probe
//! bypasses privileges and RLS, so every caller checks who is asking first or returns only
//! what the caller may read anyway.
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::Uuid;

use crate::errors;

/// An equality key on one of the index's leading columns, in index column order.
pub enum Key<'a> {
    Uuid(Uuid),
    Text(&'a str),
    Timestamptz(pg_sys::TimestampTz),
}

/// Which rows a probe sees.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// The running statement's snapshot, as a query in a STABLE function sees.
    Statement,
    /// What a new statement would see now, as a query in a VOLATILE function sees (after
    /// its own writes and, in READ COMMITTED, other transactions' commits so far).
    NextStatement,
}

/// A table read through one of its indexes, both named in `schema`.
pub struct Probe<'a> {
    pub table: &'static CStr,
    pub index: &'static CStr,
    pub keys: &'a [Key<'a>],
    /// The table columns handed to the row callback, in this order.
    pub columns: &'a [&'static CStr],
}

/// The most columns a probe reads.
const MAX_COLUMNS: usize = 4;

/// Calls `row` with the columns of each row matching the probe's keys, visible as `visibility`
/// says. A datum points into a pinned buffer: `row` copies or converts what it keeps.
pub fn scan(
    schema: pg_sys::Oid,
    probe: &Probe<'_>,
    visibility: Visibility,
    mut row: impl FnMut(&[Option<pg_sys::Datum>]),
) {
    let what = "reading by index";
    if probe.columns.len() > MAX_COLUMNS {
        errors::internal(what, "too many columns for one probe");
    }
    // SAFETY: called inside a transaction (from a SQL function); the relations are opened
    // and locked before use, scan state is freed before return, and datums are handed out
    // only while the scan holds their buffer pinned.
    unsafe {
        let table_oid = pg_sys::get_relname_relid(probe.table.as_ptr(), schema);
        let index_oid = pg_sys::get_relname_relid(probe.index.as_ptr(), schema);
        if table_oid == pg_sys::InvalidOid || index_oid == pg_sys::InvalidOid {
            errors::internal(
                what,
                format!(
                    "{} or its index {} is missing",
                    probe.table.to_string_lossy(),
                    probe.index.to_string_lossy()
                ),
            );
        }
        let mut attnums = [0i32; MAX_COLUMNS];
        for (i, name) in probe.columns.iter().enumerate() {
            let attnum = pg_sys::get_attnum(table_oid, name.as_ptr());
            if attnum <= 0 {
                errors::internal(
                    what,
                    format!(
                        "{} has no column {}",
                        probe.table.to_string_lossy(),
                        name.to_string_lossy()
                    ),
                );
            }
            attnums[i] = attnum as i32;
        }
        let attnums = &attnums[..probe.columns.len()];
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let table = pg_sys::table_open(table_oid, lock);
        let index = pg_sys::index_open(index_oid, lock);
        if probe.keys.len() > (*(*index).rd_index).indnkeyatts as usize {
            errors::internal(what, "more keys than the index has columns");
        }
        let mut keys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(probe.keys.len());
        for (i, key) in probe.keys.iter().enumerate() {
            let (procedure, argument) = match key {
                Key::Uuid(u) => {
                    let bytes = pg_sys::palloc(16) as *mut u8;
                    std::ptr::copy_nonoverlapping(u.as_bytes().as_ptr(), bytes, 16);
                    (pg_sys::F_UUID_EQ, pg_sys::Datum::from(bytes))
                }
                Key::Text(s) => (
                    pg_sys::F_TEXTEQ,
                    pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                        s.as_ptr().cast(),
                        s.len() as i32,
                    )),
                ),
                Key::Timestamptz(t) => (pg_sys::F_TIMESTAMPTZ_EQ, pg_sys::Datum::from(*t)),
            };
            let mut k: pg_sys::ScanKeyData = std::mem::zeroed();
            pg_sys::ScanKeyEntryInitialize(
                &mut k,
                0,
                (i + 1) as pg_sys::AttrNumber,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::InvalidOid,
                // The index column's collation: text keys compare as the index does.
                *(*index).rd_indcollation.add(i),
                pg_sys::Oid::from(procedure),
                argument,
            );
            keys.push(k);
        }

        let pushed = match visibility {
            Visibility::Statement if pg_sys::ActiveSnapshotSet() => false,
            Visibility::Statement => {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
                true
            }
            Visibility::NextStatement => {
                // What SPI does before each statement of a VOLATILE function.
                pg_sys::CommandCounterIncrement();
                pg_sys::PushCopiedSnapshot(pg_sys::GetTransactionSnapshot());
                pg_sys::UpdateActiveSnapshotCommandId();
                true
            }
        };
        let scan = pg_sys::index_beginscan(
            table,
            index,
            pg_sys::GetActiveSnapshot(),
            keys.len() as i32,
            0,
        );
        pg_sys::index_rescan(
            scan,
            keys.as_mut_ptr(),
            keys.len() as i32,
            std::ptr::null_mut(),
            0,
        );
        let slot = pg_sys::table_slot_create(table, std::ptr::null_mut());
        let wanted = attnums.iter().copied().max().unwrap_or(0);
        let mut columns = [None; MAX_COLUMNS];
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            if ((*slot).tts_nvalid as i32) < wanted {
                pg_sys::slot_getsomeattrs_int(slot, wanted);
            }
            for (i, attnum) in attnums.iter().enumerate() {
                let at = (*attnum - 1) as usize;
                columns[i] =
                    (!*(*slot).tts_isnull.add(at)).then(|| (*slot).tts_values.add(at).read());
            }
            row(&columns[..attnums.len()]);
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        if pushed {
            pg_sys::PopActiveSnapshot();
        }
        // The locks stay until the transaction ends, as a query's would.
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(table, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
}

/// A text column's value, copied.
pub fn text(datum: Option<pg_sys::Datum>) -> Option<String> {
    // SAFETY: the datum is a text column's value of a row the caller holds pinned.
    datum.map(|d| unsafe {
        let s = pg_sys::text_to_cstring(d.cast_mut_ptr());
        let owned = CStr::from_ptr(s).to_string_lossy().into_owned();
        pg_sys::pfree(s.cast());
        owned
    })
}
