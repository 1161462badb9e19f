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
//!
//! The per-event writers use the same access for rows of their own: `update_in_place` writes a
//! new version of rows found by key (counter rows, a lease, a kept answer), `insert_in_place`
//! a new row unless its key is taken (an idempotency key). Each does only what the statement
//! it replaces would do on that table, and answers `NotDone` (the caller runs the statement)
//! whenever the table asks for more.
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::Uuid;

use crate::errors;

/// An equality key on one of the index's leading columns, in index column order.
pub enum Key<'a> {
    Uuid(Uuid),
    Text(&'a str),
    Timestamptz(pg_sys::TimestampTz),
    Int4(i32),
}

/// Which rows a probe sees.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// The active snapshot: the running statement's, as a query in a STABLE function sees,
    /// or the one `with_snapshot` made active for several probes.
    Statement,
    /// What a new statement would see now, as a query in a VOLATILE function sees (after
    /// its own writes and, in READ COMMITTED, other transactions' commits so far).
    NextStatement,
}

impl Visibility {
    /// What a SPI query run here would see: pgrx runs SPI read-only (the statement's
    /// snapshot) until the transaction has written, and as a new statement after.
    pub fn of_spi() -> Visibility {
        // SAFETY: reads the backend's transaction state.
        if unsafe { pg_sys::GetCurrentTransactionIdIfAny() } == pg_sys::InvalidTransactionId {
            Visibility::Statement
        } else {
            Visibility::NextStatement
        }
    }
}

/// Runs `f` with the snapshot `visibility` names as the active one, so that every probe in it
/// (with `Visibility::Statement`) sees one state of the database, as one query's reads of
/// several tables do. A reading taken in parts under separate snapshots could count a row
/// twice or not at all when a transaction (a fold moving counts into the rollups) commits in
/// between.
pub fn with_snapshot<R>(visibility: Visibility, f: impl FnOnce() -> R) -> R {
    // SAFETY: snapshot stack operations of the backend's own transaction; what is pushed
    // here is popped below, or by the transaction's abort if `f` raises.
    let pushed = unsafe {
        match visibility {
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
        }
    };
    let result = f();
    if pushed {
        // SAFETY: pops the snapshot pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    result
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

/// An index scan in progress, under the active snapshot: the relations (locked until the
/// transaction ends), the scan, and the slot rows land in.
struct OpenScan {
    table: pg_sys::Relation,
    index: pg_sys::Relation,
    scan: pg_sys::IndexScanDesc,
    slot: *mut pg_sys::TupleTableSlot,
}

impl OpenScan {
    /// Opens `table` and `index` with `lock` and starts a scan on `nkeys` equality keys
    /// (given by `rescan`); None when either is missing from `schema`.
    ///
    /// # Safety
    /// Inside a transaction, with an active snapshot (`with_snapshot`); `close` must be
    /// called on every path that does not raise.
    unsafe fn open(
        schema: pg_sys::Oid,
        table: &CStr,
        index: &CStr,
        nkeys: usize,
        lock: pg_sys::LOCKMODE,
    ) -> Option<OpenScan> {
        // SAFETY: as the function's contract says.
        unsafe {
            let table_oid = pg_sys::get_relname_relid(table.as_ptr(), schema);
            let index_oid = pg_sys::get_relname_relid(index.as_ptr(), schema);
            if table_oid == pg_sys::InvalidOid || index_oid == pg_sys::InvalidOid {
                return None;
            }
            let table = pg_sys::table_open(table_oid, lock);
            let index = pg_sys::index_open(index_oid, lock);
            if nkeys > (*(*index).rd_index).indnkeyatts as usize {
                errors::internal("reading by index", "more keys than the index has columns");
            }
            let scan =
                pg_sys::index_beginscan(table, index, pg_sys::GetActiveSnapshot(), nkeys as i32, 0);
            let slot = pg_sys::table_slot_create(table, std::ptr::null_mut());
            Some(OpenScan {
                table,
                index,
                scan,
                slot,
            })
        }
    }

    /// (Re)starts the scan on `keys` (as many as `open` was given).
    fn rescan(&mut self, keys: &[Key<'_>]) {
        let mut entries: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(keys.len());
        // SAFETY: the index is open; the arguments are palloc'd in the current context and
        // the scan keeps its own copy of the keys.
        unsafe {
            for (i, key) in keys.iter().enumerate() {
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
                    Key::Int4(n) => (pg_sys::F_INT4EQ, pg_sys::Datum::from(*n)),
                };
                let mut k: pg_sys::ScanKeyData = std::mem::zeroed();
                pg_sys::ScanKeyEntryInitialize(
                    &mut k,
                    0,
                    (i + 1) as pg_sys::AttrNumber,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    pg_sys::InvalidOid,
                    // The index column's collation: text keys compare as the index does.
                    *(*self.index).rd_indcollation.add(i),
                    pg_sys::Oid::from(procedure),
                    argument,
                );
                entries.push(k);
            }
            pg_sys::index_rescan(
                self.scan,
                entries.as_mut_ptr(),
                entries.len() as i32,
                std::ptr::null_mut(),
                0,
            );
        }
    }

    /// The next matching row visible to the scan, in `self.slot`.
    fn next(&mut self) -> bool {
        // SAFETY: the scan and slot are open until `close`.
        unsafe {
            pg_sys::index_getnext_slot(
                self.scan,
                pg_sys::ScanDirection::ForwardScanDirection,
                self.slot,
            )
        }
    }

    /// The row at `tid` in `self.slot`, when that version is visible under the active
    /// snapshot and holds exactly `keys` in the index's key columns (as the scan would have
    /// found it); false otherwise, and the caller scans instead. The page is pruned first, as
    /// the scan's heap fetch does, so that updated rows keep finding room on their page.
    ///
    /// # Safety
    /// The relations are open; `self.slot` is the table's own slot (from `open`).
    unsafe fn fetch_at(&mut self, tid: pg_sys::ItemPointerData, keys: &[Key<'_>]) -> bool {
        // SAFETY: as the function's contract says; the block is read only when it exists.
        unsafe {
            if !std::ptr::eq((*self.slot).tts_ops, &pg_sys::TTSOpsBufferHeapTuple) {
                return false;
            }
            let block = (u32::from(tid.ip_blkid.bi_hi) << 16) | u32::from(tid.ip_blkid.bi_lo);
            let blocks = pg_sys::RelationGetNumberOfBlocksInFork(
                self.table,
                pg_sys::ForkNumber::MAIN_FORKNUM,
            );
            if block >= blocks {
                return false;
            }
            let buffer = pg_sys::ReadBuffer(self.table, block);
            pg_sys::heap_page_prune_opt(self.table, buffer);
            pg_sys::ReleaseBuffer(buffer);
            pg_sys::ExecClearTuple(self.slot);
            let heap_slot = self.slot as *mut pg_sys::BufferHeapTupleTableSlot;
            let tuple = std::ptr::addr_of_mut!((*heap_slot).base.tupdata);
            (*tuple).t_self = tid;
            let mut found_in: pg_sys::Buffer = pg_sys::InvalidBuffer as pg_sys::Buffer;
            if !pg_sys::heap_fetch(
                self.table,
                pg_sys::GetActiveSnapshot(),
                tuple,
                &mut found_in,
                false,
            ) {
                return false;
            }
            pg_sys::ExecStorePinnedBufferHeapTuple(tuple, self.slot, found_in);
            (*self.slot).tts_tableOid = (*self.table).rd_id;
            self.holds(keys)
        }
    }

    /// True when the row in `self.slot` holds `keys`, byte for byte, in the index's key
    /// columns. Equal bytes are equal under any collation; unequal ones only send the caller
    /// to the scan.
    ///
    /// # Safety
    /// The slot holds a row of the open table.
    unsafe fn holds(&self, keys: &[Key<'_>]) -> bool {
        // SAFETY: as the function's contract says; columns are read while the row is pinned.
        unsafe {
            let index = (*self.index).rd_index;
            let columns = (*index)
                .indkey
                .values
                .as_slice((*index).indnkeyatts as usize);
            keys.iter().zip(columns).all(|(key, &attnum)| {
                if attnum <= 0 {
                    return false;
                }
                let mut is_null = false;
                let value = pg_sys::slot_getattr(self.slot, attnum as i32, &mut is_null);
                if is_null {
                    return false;
                }
                match key {
                    Key::Uuid(u) => {
                        std::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), 16) == u.as_bytes()
                    }
                    Key::Text(s) => {
                        let text = pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr());
                        pgrx::varlena::varlena_to_byte_slice(text) == s.as_bytes()
                    }
                    Key::Timestamptz(t) => value.value() as i64 == *t,
                    Key::Int4(n) => value.value() as i32 == *n,
                }
            })
        }
    }

    /// Ends the scan; the locks stay until the transaction ends, as a query's would.
    fn close(self) {
        // SAFETY: frees what `open` created, once.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::index_endscan(self.scan);
            pg_sys::index_close(self.index, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::table_close(self.table, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// The attribute numbers of `columns` in `table`.
fn attnums(table: pg_sys::Relation, name: &CStr, columns: &[&CStr]) -> [i32; MAX_COLUMNS] {
    let what = "reading by index";
    if columns.len() > MAX_COLUMNS {
        errors::internal(what, "too many columns for one probe");
    }
    let mut attnums = [0i32; MAX_COLUMNS];
    for (i, column) in columns.iter().enumerate() {
        // SAFETY: a syscache lookup on an open relation.
        let attnum = unsafe { pg_sys::get_attnum((*table).rd_id, column.as_ptr()) };
        if attnum <= 0 {
            errors::internal(
                what,
                format!(
                    "{} has no column {}",
                    name.to_string_lossy(),
                    column.to_string_lossy()
                ),
            );
        }
        attnums[i] = attnum as i32;
    }
    attnums
}

/// Calls `row` with the columns of each row matching the probe's keys, visible to the active
/// snapshot (the statement's, or the one `with_snapshot` made active). A datum points into a
/// pinned buffer: `row` copies or converts what it keeps.
pub fn scan(schema: pg_sys::Oid, probe: &Probe<'_>, mut row: impl FnMut(&[Option<pg_sys::Datum>])) {
    with_snapshot(Visibility::Statement, || {
        // SAFETY: inside a transaction (from a SQL function) with an active snapshot; the
        // scan is closed below, and datums are handed out only while their buffer is pinned.
        let open = unsafe {
            OpenScan::open(
                schema,
                probe.table,
                probe.index,
                probe.keys.len(),
                pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            )
        };
        let Some(mut open) = open else {
            errors::internal(
                "reading by index",
                format!(
                    "{} or its index {} is missing",
                    probe.table.to_string_lossy(),
                    probe.index.to_string_lossy()
                ),
            )
        };
        open.rescan(probe.keys);
        let attnums = attnums(open.table, probe.table, probe.columns);
        let attnums = &attnums[..probe.columns.len()];
        let wanted = attnums.iter().copied().max().unwrap_or(0);
        let mut columns = [None; MAX_COLUMNS];
        while open.next() {
            // SAFETY: the slot holds the row just fetched; its attributes are deformed first.
            unsafe {
                let slot = open.slot;
                if ((*slot).tts_nvalid as i32) < wanted {
                    pg_sys::slot_getsomeattrs_int(slot, wanted);
                }
                for (i, attnum) in attnums.iter().enumerate() {
                    let at = (*attnum - 1) as usize;
                    columns[i] =
                        (!*(*slot).tts_isnull.add(at)).then(|| (*slot).tts_values.add(at).read());
                }
            }
            row(&columns[..attnums.len()]);
        }
        open.close();
    })
}

/// What `update_in_place` or `insert_in_place` did.
#[derive(Debug, PartialEq, Eq)]
pub enum InPlace {
    Done,
    /// Nothing was written: no row matched (or the table is not where it was looked for),
    /// another transaction changed or removed the row first, `change` declined, the key to
    /// insert is taken (or being taken), or the statement would run more than this does (user
    /// triggers, rules, CHECK constraints or foreign keys the caller does not uphold, indexes
    /// on expressions or with predicates, exclusion constraints, deferred unique checks). The
    /// caller runs its SQL instead.
    NotDone,
}

/// Rows of one table to update in place, each found by keys covering a unique index.
pub struct KeyedRows<'a> {
    pub table: &'static CStr,
    pub index: &'static CStr,
    /// Each row's keys, in index column order (all rows the same number).
    pub rows: &'a [&'a [Key<'a>]],
    /// The table columns handed to the change, in this order.
    pub columns: &'a [&'static CStr],
    /// The table's CHECK constraints the change keeps true (this does not evaluate them); a
    /// table with any other sends the caller to its SQL.
    pub checks_upheld: &'a [&'static CStr],
    /// Whether to remember where each row's new version went (`remembered`), for rows the
    /// caller updates again and again (a backend's own counter rows and lease); a row written
    /// once would only crowd those out.
    pub remember: bool,
}

/// Updates each of `rows` (those found), as a new statement of a READ COMMITTED transaction
/// would see them, with `change` (given the row's position in `rows` and its values, None for
/// null; true to write them). Each new version goes through the table access method like an UPDATE's,
/// without planning or running one: for writers that change rows of their own per event.
/// The rows are found under one snapshot, with the table and index opened once, as one
/// UPDATE statement finds several rows. Answers what was done, row by row.
///
/// When another transaction updated or deleted a row first, it waits for that transaction
/// to end, as an UPDATE would, then writes nothing to that row and answers `NotDone` for it:
/// the caller's SQL (whose ON CONFLICT handles that case) runs instead.
pub fn update_in_place(
    schema: pg_sys::Oid,
    rows: &KeyedRows<'_>,
    change: impl FnMut(usize, &mut [Option<pg_sys::Datum>]) -> bool,
) -> Vec<InPlace> {
    // SAFETY: XactIsoLevel is the backend's own setting.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        // Its snapshot may not see the latest version; SQL raises what it must then.
        return rows.rows.iter().map(|_| InPlace::NotDone).collect();
    }
    with_snapshot(Visibility::NextStatement, || {
        update_found(schema, rows, change)
    })
}

/// `update_in_place` under its new snapshot.
fn update_found(
    schema: pg_sys::Oid,
    rows: &KeyedRows<'_>,
    mut change: impl FnMut(usize, &mut [Option<pg_sys::Datum>]) -> bool,
) -> Vec<InPlace> {
    let nkeys = rows.rows.first().map_or(0, |keys| keys.len());
    if rows.rows.iter().any(|keys| keys.len() != nkeys) {
        errors::internal("updating in place", "rows with different numbers of keys");
    }
    let not_done = || rows.rows.iter().map(|_| InPlace::NotDone).collect();
    // SAFETY: inside a transaction with an active snapshot; the scan is closed on every path
    // below.
    let open = unsafe {
        OpenScan::open(
            schema,
            rows.table,
            rows.index,
            nkeys,
            pg_sys::RowExclusiveLock as pg_sys::LOCKMODE,
        )
    };
    // Not where it was looked for (the schema was dropped and made anew): SQL finds it.
    let Some(mut open) = open else {
        return not_done();
    };
    // SAFETY: both relations are open.
    if !unsafe { plain_update_target(open.table, open.index, rows.checks_upheld) } {
        open.close();
        return not_done();
    }
    let attnums = attnums(open.table, rows.table, rows.columns);
    let attnums = &attnums[..rows.columns.len()];
    // SAFETY: the relation is open.
    let table_oid = unsafe { (*open.table).rd_id };
    // SAFETY: the relation is open; the slot is dropped below.
    let new = unsafe { pg_sys::table_slot_create(open.table, std::ptr::null_mut()) };
    let done = rows
        .rows
        .iter()
        .enumerate()
        .map(|(i, keys)| {
            let remembered = rows
                .remember
                .then(|| remembered::at(table_oid, keys))
                .flatten();
            // SAFETY: the relations are open and the slot is the scan's.
            let found = remembered.is_some_and(|tid| unsafe { open.fetch_at(tid, keys) }) || {
                open.rescan(keys);
                open.next()
            };
            if !found {
                remembered::forget(table_oid, keys);
                return InPlace::NotDone;
            }
            // SAFETY: the old version is in the scan's slot, pinned; the new one is written
            // only if the old one is still the latest (table_tuple_update checks it under
            // the buffer lock).
            let done = unsafe { update_row(&open, new, attnums, |values| change(i, values)) };
            match done {
                // SAFETY: the update left the new version's location in its slot.
                InPlace::Done if rows.remember => {
                    remembered::keep(table_oid, keys, unsafe { (*new).tts_tid })
                }
                InPlace::Done => {}
                InPlace::NotDone => remembered::forget(table_oid, keys),
            }
            done
        })
        .collect();
    // SAFETY: created above, dropped once.
    unsafe { pg_sys::ExecDropSingleTupleTableSlot(new) };
    open.close();
    done
}

/// Writes a new version of the row in `open`'s slot, built in `new` from its values and
/// what `change` makes of the `attnums` columns.
///
/// # Safety
/// `open` holds the row just fetched; `new` is a slot of the same table.
unsafe fn update_row(
    open: &OpenScan,
    new: *mut pg_sys::TupleTableSlot,
    attnums: &[i32],
    change: impl FnOnce(&mut [Option<pg_sys::Datum>]) -> bool,
) -> InPlace {
    // SAFETY: as the function's contract says.
    unsafe {
        let old = open.slot;
        pg_sys::slot_getallattrs(old);
        let natts = (*(*open.table).rd_att).natts as usize;
        pg_sys::ExecClearTuple(new);
        std::ptr::copy_nonoverlapping((*old).tts_values, (*new).tts_values, natts);
        std::ptr::copy_nonoverlapping((*old).tts_isnull, (*new).tts_isnull, natts);
        let mut values = [None; MAX_COLUMNS];
        for (i, attnum) in attnums.iter().enumerate() {
            let at = (*attnum - 1) as usize;
            values[i] = (!*(*old).tts_isnull.add(at)).then(|| (*old).tts_values.add(at).read());
        }
        if !change(&mut values[..attnums.len()]) {
            return InPlace::NotDone;
        }
        let attributes = (*(*open.table).rd_att).attrs.as_ptr();
        for (i, attnum) in attnums.iter().enumerate() {
            let at = (*attnum - 1) as usize;
            // A NOT NULL column left null is for the executor to refuse: SQL does it.
            if values[i].is_none() && (*attributes.add(at)).attnotnull {
                return InPlace::NotDone;
            }
        }
        for (i, attnum) in attnums.iter().enumerate() {
            let at = (*attnum - 1) as usize;
            *(*new).tts_isnull.add(at) = values[i].is_none();
            *(*new).tts_values.add(at) = values[i].unwrap_or(pg_sys::Datum::from(0));
        }
        pg_sys::ExecStoreVirtualTuple(new);
        let mut old_tid = (*old).tts_tid;
        let mut failure: pg_sys::TM_FailureData = std::mem::zeroed();
        let mut lock_mode: pg_sys::LockTupleMode::Type = 0;
        let mut update_indexes = false;
        let outcome = pg_sys::table_tuple_update(
            open.table,
            &mut old_tid,
            new,
            pg_sys::GetCurrentCommandId(true),
            pg_sys::GetActiveSnapshot(),
            std::ptr::null_mut(),
            true,
            &mut failure,
            &mut lock_mode,
            &mut update_indexes,
        );
        if outcome != pg_sys::TM_Result::TM_Ok {
            return InPlace::NotDone;
        }
        if update_indexes {
            insert_index_entries(
                open.table,
                new,
                pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES,
                true,
            );
        }
        InPlace::Done
    }
}

/// A row to insert in place, unless its key in the table's one unique index is taken.
pub struct NewRow<'a> {
    pub table: &'static CStr,
    /// The table's only unique index: a row whose key it holds (or is being given by another
    /// transaction) is left to the caller's `INSERT … ON CONFLICT DO NOTHING`.
    pub index: &'static CStr,
    /// Every column of the table with its value (None for null): column defaults are not
    /// applied, and a table with any other column sends the caller to its SQL.
    pub columns: &'a [(&'static CStr, Option<pg_sys::Datum>)],
    /// The table's CHECK constraints the values satisfy (this does not evaluate them); a
    /// table with any other sends the caller to its SQL.
    pub checks_upheld: &'a [&'static CStr],
    /// The table's foreign keys whose check the caller's transaction makes anyway, before it
    /// commits (this does not check them); a table with any other sends the caller to its SQL.
    pub foreign_keys_upheld: &'a [&'static CStr],
}

/// Inserts `row` as `INSERT … ON CONFLICT DO NOTHING` would, through the table access method
/// without planning or running a statement, and answers `Done`; or writes nothing and answers
/// `NotDone` when the key may be taken or the table asks for more than this does (see
/// `NewRow`; a user who does not own the table, whose privileges and policies SQL checks,
/// also goes to SQL). The row goes in as ON CONFLICT's speculative insertion puts it: a
/// concurrent inserter of the same key waits for this one to settle, and a key found taken
/// (committed or not) withdraws the row at once, leaving the conflict to the caller's SQL.
pub fn insert_in_place(schema: pg_sys::Oid, row: &NewRow<'_>) -> InPlace {
    // SAFETY: inside a transaction; the relations opened here are closed on every path, the
    // slot dropped, and the speculative insertion lock released (an error raised in between
    // aborts the transaction, which releases it).
    unsafe {
        let table_oid = pg_sys::get_relname_relid(row.table.as_ptr(), schema);
        let index_oid = pg_sys::get_relname_relid(row.index.as_ptr(), schema);
        if table_oid == pg_sys::InvalidOid || index_oid == pg_sys::InvalidOid {
            return InPlace::NotDone;
        }
        let table = pg_sys::table_open(table_oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let close = |table| pg_sys::table_close(table, pg_sys::NoLock as pg_sys::LOCKMODE);
        let plain = plain_table(table, row.checks_upheld)
            && !(*(*table).rd_rel).relforcerowsecurity
            && pg_sys::pg_class_ownercheck(table_oid, pg_sys::GetUserId())
            && no_triggers_on(table, pg_sys::TRIGGER_TYPE_INSERT, row.foreign_keys_upheld)
            && plain_indexes(table).is_some_and(|indexes| {
                indexes
                    .iter()
                    .filter(|(_, unique)| *unique)
                    .map(|(oid, _)| *oid)
                    .eq([index_oid])
            });
        if !plain {
            close(table);
            return InPlace::NotDone;
        }
        let slot = pg_sys::table_slot_create(table, std::ptr::null_mut());
        if !fill_new_row(table, slot, row.columns) {
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            close(table);
            return InPlace::NotDone;
        }
        let xid = pg_sys::GetCurrentTransactionId();
        let token = pg_sys::SpeculativeInsertionLockAcquire(xid);
        pg_sys::table_tuple_insert_speculative(
            table,
            slot,
            pg_sys::GetCurrentCommandId(true),
            0,
            std::ptr::null_mut(),
            token,
        );
        let unique = insert_index_entries(
            table,
            slot,
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_PARTIAL,
            false,
        );
        // A key that may be taken withdraws the row (it was never visible to anyone).
        pg_sys::table_tuple_complete_speculative(table, slot, token, unique);
        pg_sys::SpeculativeInsertionLockRelease(xid);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        close(table);
        if unique {
            InPlace::Done
        } else {
            InPlace::NotDone
        }
    }
}

/// Stores `columns` in `slot` as a new row of `table`: false when the table has a column not
/// among them (dropped ones aside) or a NOT NULL column would be null.
///
/// # Safety
/// `slot` is an empty slot of the open `table`.
unsafe fn fill_new_row(
    table: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    columns: &[(&'static CStr, Option<pg_sys::Datum>)],
) -> bool {
    // SAFETY: as the function's contract says.
    unsafe {
        let descriptor = (*table).rd_att;
        let natts = (*descriptor).natts as usize;
        let attributes = (*descriptor).attrs.as_ptr();
        let mut given = 0;
        for at in 0..natts {
            let attribute = attributes.add(at);
            *(*slot).tts_isnull.add(at) = true;
            *(*slot).tts_values.add(at) = pg_sys::Datum::from(0);
            if (*attribute).attisdropped {
                continue;
            }
            let name = CStr::from_ptr((*attribute).attname.data.as_ptr());
            let Some((_, value)) = columns.iter().find(|(column, _)| *column == name) else {
                return false;
            };
            if value.is_none() && (*attribute).attnotnull {
                return false;
            }
            *(*slot).tts_isnull.add(at) = value.is_none();
            *(*slot).tts_values.add(at) = value.unwrap_or(pg_sys::Datum::from(0));
            given += 1;
        }
        if given != columns.len() {
            return false;
        }
        pg_sys::ExecStoreVirtualTuple(slot);
        true
    }
}

/// True when an UPDATE of `table` runs nothing but the heap update and its indexes'
/// maintenance: a plain table, no rules, no user trigger on UPDATE (internal ones, such as
/// foreign-key checks, fire only when their columns change, and these updates leave keys
/// alone), no CHECK constraint but `checks_upheld`, and indexes on plain columns only (no
/// expressions, no predicates), among them `index`.
///
/// # Safety
/// Both relations are open.
unsafe fn plain_update_target(
    table: pg_sys::Relation,
    index: pg_sys::Relation,
    checks_upheld: &[&CStr],
) -> bool {
    // SAFETY: as the function's contract says.
    unsafe {
        plain_table(table, checks_upheld)
            && no_triggers_on(table, pg_sys::TRIGGER_TYPE_UPDATE, &[])
            && plain_indexes(table)
                .is_some_and(|indexes| indexes.iter().any(|(oid, _)| *oid == (*index).rd_id))
    }
}

/// A plain table without rules, whose CHECK constraints are all among `checks_upheld`.
///
/// # Safety
/// `table` is open.
unsafe fn plain_table(table: pg_sys::Relation, checks_upheld: &[&CStr]) -> bool {
    // SAFETY: reads the open relation's descriptor.
    unsafe {
        let form = (*table).rd_rel;
        if (*form).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char || (*form).relhasrules {
            return false;
        }
        let constraints = (*(*table).rd_att).constr;
        if !constraints.is_null() {
            for i in 0..(*constraints).num_check as usize {
                let name = CStr::from_ptr((*(*constraints).check.add(i)).ccname);
                if !checks_upheld.contains(&name) {
                    return false;
                }
            }
        }
        true
    }
}

/// True when no trigger of `table` fires on `event` (a `TRIGGER_TYPE_*` bit) but internal
/// ones, and of those on INSERT only the foreign-key checks of `foreign_keys_upheld`.
///
/// # Safety
/// `table` is open.
unsafe fn no_triggers_on(
    table: pg_sys::Relation,
    event: u32,
    foreign_keys_upheld: &[&CStr],
) -> bool {
    // SAFETY: reads the open relation's trigger descriptor and the constraints' names.
    unsafe {
        let triggers = (*table).trigdesc;
        if triggers.is_null() {
            return true;
        }
        for i in 0..(*triggers).numtriggers as usize {
            let trigger = (*triggers).triggers.add(i);
            if ((*trigger).tgtype as u32 & event) == 0 {
                continue;
            }
            if !(*trigger).tgisinternal {
                return false;
            }
            if event == pg_sys::TRIGGER_TYPE_INSERT {
                let name = pg_sys::get_constraint_name((*trigger).tgconstraint);
                if name.is_null() || !foreign_keys_upheld.contains(&CStr::from_ptr(name)) {
                    return false;
                }
            }
        }
        true
    }
}

/// Every index of `table` with whether it is unique, when all are on plain columns (no
/// expressions, no predicates), immediate and not exclusion constraints; None otherwise.
///
/// # Safety
/// `table` is open.
unsafe fn plain_indexes(table: pg_sys::Relation) -> Option<Vec<(pg_sys::Oid, bool)>> {
    // SAFETY: reads the table's index list and the indexes' pg_index rows.
    unsafe {
        let indexes = pg_sys::RelationGetIndexList(table);
        let mut found = Some(Vec::new());
        if !indexes.is_null() {
            for i in 0..(*indexes).length as usize {
                let oid = (*(*indexes).elements.add(i)).oid_value;
                let tuple = pg_sys::SearchSysCache1(
                    pg_sys::SysCacheIdentifier::INDEXRELID as i32,
                    pg_sys::Datum::from(oid),
                );
                if tuple.is_null() {
                    found = None;
                    continue;
                }
                let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_index>(tuple);
                // Exclusion constraints and deferred unique checks need the executor.
                let plain = !(*form).indisexclusion
                    && (*form).indimmediate
                    && pg_sys::heap_attisnull(
                        tuple,
                        pg_sys::Anum_pg_index_indexprs as i32,
                        std::ptr::null_mut(),
                    )
                    && pg_sys::heap_attisnull(
                        tuple,
                        pg_sys::Anum_pg_index_indpred as i32,
                        std::ptr::null_mut(),
                    );
                let unique = (*form).indisunique;
                pg_sys::ReleaseSysCache(tuple);
                match (&mut found, plain) {
                    (Some(list), true) => list.push((oid, unique)),
                    _ => found = None,
                }
            }
        }
        pg_sys::list_free(indexes);
        found
    }
}

/// The index entries for a new version of a row (an update's that is not heap-only, or a new
/// row's), in every index of `table`, as the executor adds them. A unique index checks with
/// `unique_check`: `UNIQUE_CHECK_YES` raises on a duplicate as an UPDATE does;
/// `UNIQUE_CHECK_PARTIAL` only answers false when the key may be taken, as ON CONFLICT's
/// speculative insertion asks. True when no unique index answered false. `keys_unchanged`
/// tells the indexes an update left the keys as they were (a btree may clean up then).
///
/// # Safety
/// `slot` holds the version just written to `table`, whose indexes are on plain columns.
unsafe fn insert_index_entries(
    table: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    unique_check: pg_sys::IndexUniqueCheck::Type,
    keys_unchanged: bool,
) -> bool {
    // SAFETY: as the function's contract says; each index is opened and closed here (the
    // lock stays until the transaction ends, as the executor's).
    unsafe {
        let indexes = pg_sys::RelationGetIndexList(table);
        let mut unique = true;
        for i in 0..(*indexes).length as usize {
            let oid = (*(*indexes).elements.add(i)).oid_value;
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let info = pg_sys::BuildIndexInfo(index);
            // An index still being built concurrently takes no entries yet, as in the executor.
            if !(*info).ii_ReadyForInserts {
                pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
                continue;
            }
            let mut values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
            let mut isnull = [false; pg_sys::INDEX_MAX_KEYS as usize];
            pg_sys::FormIndexDatum(
                info,
                slot,
                std::ptr::null_mut(),
                values.as_mut_ptr(),
                isnull.as_mut_ptr(),
            );
            let check = if (*info).ii_Unique {
                unique_check
            } else {
                pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
            };
            let satisfied = pg_sys::index_insert(
                index,
                values.as_mut_ptr(),
                isnull.as_mut_ptr(),
                &mut (*slot).tts_tid,
                table,
                check,
                keys_unchanged,
                info,
            );
            // Only a unique check's answer means anything (BRIN always answers false).
            unique &= satisfied || !(*info).ii_Unique;
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::list_free(indexes);
        unique
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

/// Where `update_in_place` last wrote each row, per backend: the next update of the same row
/// looks there first instead of descending the index (`OpenScan::fetch_at` checks that the
/// version found is visible and holds the same keys, so a stale location only costs the
/// scan). The per-event writers update the same few rows of their own over and over.
mod remembered {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use pgrx::pg_sys;

    use super::Key;

    /// How many locations a backend keeps before starting afresh.
    const CAP: usize = 16_384;

    thread_local! {
        static LOCATIONS: RefCell<HashMap<(pg_sys::Oid, Vec<u8>), pg_sys::ItemPointerData>> =
            RefCell::new(HashMap::new());
    }

    /// The keys as bytes, each tagged with its kind (and text with its length).
    fn encode(table: pg_sys::Oid, keys: &[Key<'_>]) -> (pg_sys::Oid, Vec<u8>) {
        let mut bytes = Vec::with_capacity(64);
        for key in keys {
            match key {
                Key::Uuid(u) => {
                    bytes.push(b'u');
                    bytes.extend_from_slice(u.as_bytes());
                }
                Key::Text(s) => {
                    bytes.push(b't');
                    bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(s.as_bytes());
                }
                Key::Timestamptz(t) => {
                    bytes.push(b'z');
                    bytes.extend_from_slice(&t.to_le_bytes());
                }
                Key::Int4(n) => {
                    bytes.push(b'i');
                    bytes.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        (table, bytes)
    }

    pub(super) fn at(table: pg_sys::Oid, keys: &[Key<'_>]) -> Option<pg_sys::ItemPointerData> {
        LOCATIONS.with(|l| l.borrow().get(&encode(table, keys)).copied())
    }

    pub(super) fn keep(table: pg_sys::Oid, keys: &[Key<'_>], tid: pg_sys::ItemPointerData) {
        LOCATIONS.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() >= CAP {
                l.clear();
            }
            l.insert(encode(table, keys), tid);
        });
    }

    pub(super) fn forget(table: pg_sys::Oid, keys: &[Key<'_>]) {
        LOCATIONS.with(|l| l.borrow_mut().remove(&encode(table, keys)));
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::{remembered, update_in_place, InPlace, Key, KeyedRows};

    fn located() -> (pg_sys::Oid, pg_sys::Oid) {
        Spi::run(
            "CREATE TABLE public.located (k int PRIMARY KEY, v int NOT NULL);
             INSERT INTO public.located VALUES (1, 10), (2, 20)",
        )
        .unwrap();
        let table = Spi::get_one::<pg_sys::Oid>("SELECT 'public.located'::regclass::oid")
            .unwrap()
            .unwrap();
        let schema = Spi::get_one::<pg_sys::Oid>("SELECT 'public'::regnamespace::oid")
            .unwrap()
            .unwrap();
        (table, schema)
    }

    /// Adds one to `v` of row `k` in place, remembering where unless told not to.
    fn bump_remembering(schema: pg_sys::Oid, k: i32, remember: bool) -> InPlace {
        let keys = [Key::Int4(k)];
        let rows = KeyedRows {
            table: c"located",
            index: c"located_pkey",
            rows: &[&keys],
            columns: &[c"v"],
            checks_upheld: &[],
            remember,
        };
        let mut done = update_in_place(schema, &rows, |_, row| {
            let v = row[0].map_or(0, |d| d.value() as i32);
            row[0] = Some(pg_sys::Datum::from(v + 1));
            true
        });
        done.remove(0)
    }

    fn bump(schema: pg_sys::Oid, k: i32) -> InPlace {
        bump_remembering(schema, k, true)
    }

    fn values() -> String {
        Spi::get_one::<String>(
            "SELECT string_agg(k || '=' || v, ' ' ORDER BY k) FROM public.located",
        )
        .unwrap()
        .unwrap()
    }

    fn tid_of(k: i32) -> pg_sys::ItemPointerData {
        let text = Spi::get_one::<String>(&format!(
            "SELECT ctid::text FROM public.located WHERE k = {k}"
        ))
        .unwrap()
        .unwrap();
        let (block, offset) = text
            .trim_matches(|c| c == '(' || c == ')')
            .split_once(',')
            .unwrap();
        let (block, offset): (u32, u16) = (block.parse().unwrap(), offset.parse().unwrap());
        pg_sys::ItemPointerData {
            ip_blkid: pg_sys::BlockIdData {
                bi_hi: (block >> 16) as u16,
                bi_lo: (block & 0xffff) as u16,
            },
            ip_posid: offset,
        }
    }

    fn pair(tid: pg_sys::ItemPointerData) -> (u32, u16) {
        (
            (u32::from(tid.ip_blkid.bi_hi) << 16) | u32::from(tid.ip_blkid.bi_lo),
            tid.ip_posid,
        )
    }

    fn remembered_at(table: pg_sys::Oid, k: i32) -> Option<(u32, u16)> {
        remembered::at(table, &[Key::Int4(k)]).map(pair)
    }

    /// An update remembers where it wrote the row's new version; a remembered location that
    /// holds another row, or lies past the table's end, is not trusted: the row is found
    /// through the index and the right one updated.
    #[pg_test]
    fn a_remembered_location_is_used_only_when_it_holds_the_same_keys() {
        let (table, schema) = located();
        assert_eq!(bump(schema, 1), InPlace::Done);
        assert_eq!(values(), "1=11 2=20");
        assert_eq!(remembered_at(table, 1), Some(pair(tid_of(1))));

        // Row 1 remembered where row 2 lives: row 1 is updated, row 2 left alone.
        remembered::keep(table, &[Key::Int4(1)], tid_of(2));
        assert_eq!(bump(schema, 1), InPlace::Done);
        assert_eq!(values(), "1=12 2=20");
        assert_eq!(remembered_at(table, 1), Some(pair(tid_of(1))));

        // Past the table's last block.
        let mut far = tid_of(1);
        far.ip_blkid.bi_lo = 1000;
        remembered::keep(table, &[Key::Int4(1)], far);
        assert_eq!(bump(schema, 1), InPlace::Done);
        assert_eq!(values(), "1=13 2=20");

        // A row written once (remember: false) leaves no location behind.
        assert_eq!(bump_remembering(schema, 2, false), InPlace::Done);
        assert_eq!(values(), "1=13 2=21");
        assert_eq!(remembered_at(table, 2), None);

        // A version this transaction deleted: nothing is updated, and nothing remembered.
        Spi::run("DELETE FROM public.located WHERE k = 1").unwrap();
        assert_eq!(bump(schema, 1), InPlace::NotDone);
        assert_eq!(values(), "2=21");
        assert_eq!(remembered_at(table, 1), None);
    }
}
