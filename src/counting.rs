//! Counting at write: every event INSERTed into `usage_events` is added to `usage_counters`
//! (and its user to `usage_active_users`) before its statement ends, in the same transaction.
//!
//! `count_usage_events` (AFTER INSERT FOR EACH STATEMENT, with the statement's rows as the
//! transition table `new_events`) writes them in one statement: a single event (an API
//! server's INSERT per request) through a small prepared upsert with the row's values, several
//! grouped per bucket straight from the transition table (PostgreSQL keeps it, spilling to disk
//! for a long COPY). The trigger runs as the caller; the counters are written as the owner of
//! `usage_counters`, with `search_path` pinned as a SECURITY DEFINER function would (members
//! cannot write counter rows themselves).
//!
//! Distinct users: `usage_active_users` decides who is new to a bucket. A backend remembers the
//! users it saw counted there once its transaction commits, and their next events in the same
//! buckets skip that probe (most events come from users already active today). Any DELETE or
//! TRUNCATE of `usage_active_users` (recounts, retention, an organization's deletion) makes
//! every backend forget, through a relcache invalidation, so a removed row is probed again.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};

use pgrx::prelude::*;
use pgrx::{AnyNumeric, Uuid};

use crate::errors;
use crate::index_reads::{self, InPlace, Key, KeyedRows, Probe, Visibility};
use crate::metering::Period;
use crate::spi::{self, types, Statement};

/// The one event of a single-row INSERT.
struct SingleEvent {
    org: Uuid,
    event_type: String,
    user: Option<Uuid>,
    quantity: AnyNumeric,
    occurred_at: TimestampWithTimeZone,
}

/// A user known to be counted in both buckets (daily, monthly) of an organization's meter:
/// the buckets' bounds, [start, end) in microseconds.
type ActiveUserKey = (Uuid, String, Uuid);
type BucketBounds = Vec<(i64, i64)>;

/// How many known active users a backend remembers before starting afresh.
const KNOWN_USERS_CAP: usize = 65_536;

thread_local! {
    static CALLBACKS_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// The role that owns the counters, the search_path it writes them with, and the oid of
    /// usage_active_users (whose invalidations drop KNOWN_USERS).
    static WRITER: RefCell<Option<Writer>> = const { RefCell::new(None) };
    /// Users whose rows in usage_active_users this backend saw committed: their next events in
    /// the same buckets skip the probe. Dropped whenever any row of that table is deleted
    /// (`forget_active_users` queues a relcache invalidation that reaches every backend).
    static KNOWN_USERS: RefCell<HashMap<ActiveUserKey, BucketBounds>> = RefCell::new(HashMap::new());
    /// Known once the current transaction commits.
    static KNOWN_AT_COMMIT: RefCell<Vec<(ActiveUserKey, BucketBounds)>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone)]
struct Writer {
    owner: pg_sys::Oid,
    /// The schema of the counters (the extension's).
    schema: pg_sys::Oid,
    search_path: CString,
    active_users: pg_sys::Oid,
}
/// One event: its two buckets' counter rows, and its user in both buckets if new there.
static COUNT_ONE: Statement = Statement::write(
    "WITH bucket AS (
         SELECT p.period, usage_bucket_start(p.period, $5) AS period_start
         FROM (VALUES ('daily'), ('monthly')) AS p (period)
     ), new_user AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT $1, $2, b.period, b.period_start, $3 FROM bucket b WHERE $3 IS NOT NULL
         ON CONFLICT DO NOTHING
         RETURNING period
     )
     INSERT INTO usage_counters AS c
         (organization_id, event_type, period, period_start, writer, total_quantity, event_count, unique_users)
     SELECT $1, $2, b.period, b.period_start, usage_writer(), $4, 1,
            (SELECT count(*) FROM new_user n WHERE n.period = b.period)
     FROM bucket b
     ON CONFLICT (organization_id, event_type, period, period_start, writer) DO UPDATE
         SET total_quantity = c.total_quantity + excluded.total_quantity,
             event_count    = c.event_count + excluded.event_count,
             unique_users   = c.unique_users + excluded.unique_users
     RETURNING c.period_start, usage_bucket_end(c.period, c.period_start), c.period",
    &[
        types::UUID,
        types::TEXT,
        types::UUID,
        types::NUMERIC,
        types::TIMESTAMPTZ,
    ],
);

/// One event whose user is known in both buckets, or who has none: its counter rows of the
/// periods `$5` (those not updated in place), only.
static COUNT_ONE_KNOWN: Statement = Statement::write(
    "INSERT INTO usage_counters AS c
         (organization_id, event_type, period, period_start, writer, total_quantity, event_count, unique_users)
     SELECT $1, $2, p.period, usage_bucket_start(p.period, $4), usage_writer(), $3, 1, 0
     FROM pg_catalog.unnest($5::text[]) AS p (period)
     ON CONFLICT (organization_id, event_type, period, period_start, writer) DO UPDATE
         SET total_quantity = c.total_quantity + excluded.total_quantity,
             event_count    = c.event_count + excluded.event_count
     RETURNING c.period_start, usage_bucket_end(c.period, c.period_start), c.period",
    &[
        types::UUID,
        types::TEXT,
        types::NUMERIC,
        types::TIMESTAMPTZ,
        types::TEXT_ARRAY,
    ],
);

/// Many events, from the transition table: per bucket the quantities, the events and the
/// users new to the bucket. The events are grouped per user and day in one pass first (a long
/// COPY holds few such groups), so everything after reads groups, not events.
static COUNT_MANY: Statement = Statement::write(
    "WITH per_user_day AS (
         SELECT n.organization_id, n.event_type, n.user_id,
                usage_bucket_start('daily', n.occurred_at) AS day,
                usage_bucket_start('monthly', n.occurred_at) AS month,
                sum(n.quantity) AS quantity, count(*) AS events
         FROM new_events n GROUP BY 1, 2, 3, 4, 5
     ), ev AS (
         SELECT g.organization_id, g.event_type, g.user_id, g.quantity, g.events, p.period,
                CASE p.period WHEN 'daily' THEN g.day ELSE g.month END AS period_start
         FROM per_user_day g CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
     ), new_users AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT DISTINCT organization_id, event_type, period, period_start, user_id FROM ev
         WHERE user_id IS NOT NULL
         ON CONFLICT DO NOTHING
         RETURNING organization_id, event_type, period, period_start
     ), users_per_bucket AS (
         SELECT organization_id, event_type, period, period_start, count(*) AS users
         FROM new_users GROUP BY 1, 2, 3, 4
     ), sums AS (
         SELECT organization_id, event_type, period, period_start, sum(quantity) AS quantity, sum(events) AS events
         FROM ev GROUP BY 1, 2, 3, 4
     )
     INSERT INTO usage_counters AS c
         (organization_id, event_type, period, period_start, writer, total_quantity, event_count, unique_users)
     SELECT s.organization_id, s.event_type, s.period, s.period_start, usage_writer(),
            s.quantity, s.events, coalesce(u.users, 0)
     FROM sums s LEFT JOIN users_per_bucket u USING (organization_id, event_type, period, period_start)
     ON CONFLICT (organization_id, event_type, period, period_start, writer) DO UPDATE
         SET total_quantity = c.total_quantity + excluded.total_quantity,
             event_count    = c.event_count + excluded.event_count,
             unique_users   = c.unique_users + excluded.unique_users",
    &[],
);

/// `count_usage_events`: AFTER INSERT ON usage_events REFERENCING NEW TABLE AS new_events
/// FOR EACH STATEMENT. A restore loads counters as they were: nothing to count then.
#[pg_trigger]
pub fn count_usage_events<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    if crate::backup::restore_in_progress() {
        return Ok(None);
    }
    let data = trigger.trigger_data();
    let table = data.tg_newtable;
    if table.is_null() {
        errors::internal(
            "counting usage events",
            "count_usage_events() needs REFERENCING NEW TABLE AS new_events",
        );
    }
    // SAFETY: the statement's transition table, alive while its AFTER triggers run.
    let rows = unsafe { pg_sys::tuplestore_tuple_count(table) };
    match rows {
        0 => {}
        1 => {
            let event = single_event(data);
            register_callbacks();
            if user_is_known(&event) || user_is_active(&event) {
                let left = add_in_place(&event);
                if !left.is_empty() {
                    as_extension_owner(|| {
                        Spi::connect_mut(|client| count_known(client, &event, &left))
                    });
                }
            } else {
                as_extension_owner(|| Spi::connect_mut(|client| count_one(client, &event)));
            }
        }
        _ => as_extension_owner(|| {
            Spi::connect_mut(|client| {
                // SAFETY: makes the transition table readable as `new_events` in this connection.
                unsafe {
                    pg_sys::SPI_register_trigger_data(
                        data as *const pg_sys::TriggerData as *mut pg_sys::TriggerData,
                    )
                };
                spi::run(client, &COUNT_MANY, &[], "counting usage events");
            })
        }),
    }
    Ok(None)
}

/// Reads the one row of the transition table, through a read pointer of its own, converting
/// its columns straight from the slot (no copy of the row, no lookup by name per column).
fn single_event(data: &pg_sys::TriggerData) -> SingleEvent {
    // SAFETY: the transition table and the relation are the trigger's. The slot reads the
    // tuplestore's own copy of the row (alive while the statement's AFTER triggers run), and
    // every value is converted to an owned one before the slot is dropped.
    unsafe {
        let table = data.tg_newtable;
        let tupdesc = (*data.tg_relation).rd_att;
        let reader = pg_sys::tuplestore_alloc_read_pointer(table, 0);
        pg_sys::tuplestore_select_read_pointer(table, reader);
        pg_sys::tuplestore_rescan(table);
        let slot = pg_sys::MakeSingleTupleTableSlot(tupdesc, &raw const pg_sys::TTSOpsMinimalTuple);
        if !pg_sys::tuplestore_gettupleslot(table, true, false, slot) {
            errors::internal("counting a usage event", "the transition table is empty");
        }
        pg_sys::slot_getallattrs(slot);
        let column = |name: &CStr| -> (pg_sys::Datum, bool) {
            let at = crate::tuples::column_number(tupdesc, name).get() - 1;
            (*(*slot).tts_values.add(at), *(*slot).tts_isnull.add(at))
        };
        let (org, org_null) = column(c"organization_id");
        let (event_type, type_null) = column(c"event_type");
        let (user, user_null) = column(c"user_id");
        let (quantity, quantity_null) = column(c"quantity");
        let (occurred_at, occurred_null) = column(c"occurred_at");
        let event = SingleEvent {
            org: errors::required(
                Uuid::from_polymorphic_datum(org, org_null, pg_sys::UUIDOID),
                "organization_id",
            ),
            event_type: errors::required(
                String::from_polymorphic_datum(event_type, type_null, pg_sys::TEXTOID),
                "event_type",
            ),
            user: Uuid::from_polymorphic_datum(user, user_null, pg_sys::UUIDOID),
            quantity: errors::required(
                AnyNumeric::from_polymorphic_datum(quantity, quantity_null, pg_sys::NUMERICOID),
                "quantity",
            ),
            occurred_at: errors::required(
                TimestampWithTimeZone::from_polymorphic_datum(
                    occurred_at,
                    occurred_null,
                    pg_sys::TIMESTAMPTZOID,
                ),
                "occurred_at",
            ),
        };
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        event
    }
}

/// True when the event has no user, or its user is known to be counted in both buckets the
/// event falls in (so no row of usage_active_users is needed).
fn user_is_known(event: &SingleEvent) -> bool {
    let at = event.occurred_at.into_inner();
    event.user.is_none_or(|user| {
        KNOWN_USERS.with(|k| {
            k.borrow()
                .get(&(event.org, event.event_type.clone(), user))
                .is_some_and(|b| b.iter().all(|(start, end)| *start <= at && at < *end))
        })
    })
}

/// True when the event's user already has a row in usage_active_users for both buckets the
/// event falls in (counted there by another backend, or by this one before it last
/// started), as a new statement sees it: found by index, without the upsert. The user is
/// then known to this backend once its transaction commits, as after counting them itself.
/// Most events come from users already active today, and every new connection would
/// otherwise go through SQL once for each of them.
fn user_is_active(event: &SingleEvent) -> bool {
    let Some(user) = event.user else {
        return false;
    };
    let at = event.occurred_at.into_inner();
    let periods = [Period::Daily, Period::Monthly];
    let Some(bounds) = periods
        .iter()
        .map(|period| period.known_bucket(at))
        .collect::<Option<BucketBounds>>()
    else {
        return false;
    };
    let schema = extension_schema();
    let active = index_reads::with_snapshot(Visibility::NextStatement, || {
        periods.iter().zip(&bounds).all(|(period, (start, _))| {
            let mut found = false;
            let probe = Probe {
                table: c"usage_active_users",
                index: c"usage_active_users_pkey",
                keys: &[
                    Key::Uuid(event.org),
                    Key::Text(&event.event_type),
                    Key::Text(period.as_str()),
                    Key::Timestamptz(*start),
                    Key::Uuid(user),
                ],
                columns: &[],
            };
            index_reads::scan(schema, &probe, |_| found = true);
            found
        })
    });
    if active {
        let key = (event.org, event.event_type.clone(), user);
        KNOWN_AT_COMMIT.with(|k| k.borrow_mut().push((key, bounds)));
    }
    active
}

/// Adds the event to this backend's existing counter rows of its buckets in place, without a
/// query (src/index_reads.rs); returns the periods left for the upsert: a bucket whose bounds
/// are not remembered yet, whose row does not exist yet or was just folded or pruned by
/// `aggregate_usage()`, or any bucket under REPEATABLE READ.
fn add_in_place(event: &SingleEvent) -> Vec<Period> {
    let at = event.occurred_at.into_inner();
    let writer_id = crate::metering::usage_writer();
    let mut left = Vec::new();
    let mut known = Vec::with_capacity(2);
    for period in [Period::Daily, Period::Monthly] {
        match period.known_bucket(at) {
            Some((start, _)) => known.push((period, start)),
            None => left.push(period),
        }
    }
    if known.is_empty() {
        return left;
    }
    let keys: Vec<[Key<'_>; 5]> = known
        .iter()
        .map(|(period, start)| {
            [
                Key::Uuid(event.org),
                Key::Text(&event.event_type),
                Key::Text(period.as_str()),
                Key::Timestamptz(*start),
                Key::Int4(writer_id),
            ]
        })
        .collect();
    let rows: Vec<&[Key<'_>]> = keys.iter().map(|k| k.as_slice()).collect();
    let counters = KeyedRows {
        table: c"usage_counters",
        index: c"usage_counters_pkey",
        rows: &rows,
        columns: &[c"total_quantity", c"event_count"],
        checks_upheld: &[],
        remember: true,
    };
    let done = index_reads::update_in_place(extension_schema(), &counters, |_, row| {
        let (Some(total), Some(events)) = (row[0], row[1]) else {
            return false;
        };
        // SAFETY: the columns are a numeric and a bigint, read while pinned.
        let (Some(total), Some(events)) = (unsafe {
            (
                AnyNumeric::from_polymorphic_datum(total, false, pg_sys::NUMERICOID),
                i64::from_polymorphic_datum(events, false, pg_sys::INT8OID),
            )
        }) else {
            return false;
        };
        // An overflow is left to the upsert, which reports it.
        let Some(events) = events.checked_add(1) else {
            return false;
        };
        let Some(total) = (total + event.quantity.clone()).into_datum() else {
            return false;
        };
        row[0] = Some(total);
        row[1] = Some(pg_sys::Datum::from(events));
        true
    });
    for ((period, _), outcome) in known.iter().zip(done) {
        if outcome != InPlace::Done {
            left.push(*period);
        }
    }
    left
}

/// Counts an event whose user is known (or absent) into the buckets of `periods`.
fn count_known(client: &mut pgrx::spi::SpiClient<'_>, event: &SingleEvent, periods: &[Period]) {
    let periods: Vec<&str> = periods.iter().map(|p| p.as_str()).collect();
    let generation = crate::function_memo::generation();
    let rows = client
        .update(
            COUNT_ONE_KNOWN.prepared(client),
            None,
            &[
                event.org.into(),
                event.event_type.clone().into(),
                event.quantity.clone().into(),
                event.occurred_at.into(),
                periods.into(),
            ],
        )
        .unwrap_or_else(|e| errors::internal("counting a usage event", e));
    remember_buckets(rows, generation);
}

/// Remembers the bucket bounds a counting upsert returned (`period_start`, its end, `period`),
/// so the event's next ones in these buckets count in place (`add_in_place`); returns them.
fn remember_buckets(rows: pgrx::spi::SpiTupleTable<'_>, generation: u64) -> BucketBounds {
    rows.filter_map(|row| {
        let start = row.get::<TimestampWithTimeZone>(1).ok().flatten()?;
        let end = row.get::<TimestampWithTimeZone>(2).ok().flatten()?;
        let period = row.get::<String>(3).ok().flatten()?;
        let (start, end) = (start.into_inner(), end.into_inner());
        Period::parse(&period, "counting a usage event").remember_bucket(generation, start, end);
        Some((start, end))
    })
    .collect()
}

/// Counts a single event whose user may be new to its buckets; remembers the user as known
/// there once this commits.
fn count_one(client: &mut pgrx::spi::SpiClient<'_>, event: &SingleEvent) {
    let key = event.user.map(|u| (event.org, event.event_type.clone(), u));
    let generation = crate::function_memo::generation();
    let buckets = client
        .update(
            COUNT_ONE.prepared(client),
            None,
            &[
                event.org.into(),
                event.event_type.clone().into(),
                event.user.into(),
                event.quantity.clone().into(),
                event.occurred_at.into(),
            ],
        )
        .unwrap_or_else(|e| errors::internal("counting a usage event", e));
    let bounds = remember_buckets(buckets, generation);
    if let (Some(key), 2) = (key, bounds.len()) {
        KNOWN_AT_COMMIT.with(|k| k.borrow_mut().push((key, bounds)));
    }
}

/// Runs `f` as the owner of `usage_counters` (the extension's tables: counting, and the
/// usage_events trigger's reads and writes) with `search_path = pg_catalog, <its schema>,
/// pg_temp`, as a SECURITY DEFINER function runs. An error inside needs no restoring: the
/// (sub)transaction abort resets the user and the setting, as it does for such functions.
pub(crate) fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    let Writer {
        owner, search_path, ..
    } = writer();
    let (mut saved_user, mut saved_context) = (pg_sys::InvalidOid, 0);
    // SAFETY: the same calls fmgr_security_definer makes around a SECURITY DEFINER function.
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        let nest_level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            search_path.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        nest_level
    };
    let result = f();
    // SAFETY: restores what was saved above, in reverse order.
    unsafe {
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        pg_sys::AtEOXact_GUC(true, nest_level);
    }
    result
}

// Runs as the caller, under their search_path: every name and operator is qualified, and the
// schema name is quoted in Rust, so nothing the caller defines can choose the path the
// counters are then written with.
static COUNTER_OWNER: Statement = Statement::read(
    "SELECT c.relowner, n.nspname::pg_catalog.text, a.oid, n.oid
     FROM pg_catalog.pg_extension e
     JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
     JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid
                               AND c.relname OPERATOR(pg_catalog.=) 'usage_counters'
     JOIN pg_catalog.pg_class a ON a.relnamespace OPERATOR(pg_catalog.=) n.oid
                               AND a.relname OPERATOR(pg_catalog.=) 'usage_active_users'
     WHERE e.extname OPERATOR(pg_catalog.=) 'saas_core'",
    &[],
);

/// The extension's schema (that of `usage_counters`), without copying the rest of `writer()`.
pub(crate) fn extension_schema() -> pg_sys::Oid {
    WRITER
        .with(|w| w.borrow().as_ref().map(|w| w.schema))
        .unwrap_or_else(|| writer().schema)
}

/// The owner of `usage_counters`, the search_path to write with and the oid of
/// `usage_active_users`, read once per backend.
fn writer() -> Writer {
    if let Some(found) = WRITER.with(|w| w.borrow().clone()) {
        return found;
    }
    let found = Spi::connect(|client| {
        let table = client
            .select(COUNTER_OWNER.prepared(client), Some(1), &[])
            .unwrap_or_else(|e| errors::internal("finding the owner of usage_counters", e));
        let row = table.first();
        let owner: Option<pg_sys::Oid> = row.get(1).unwrap_or(None);
        let schema_name: Option<String> = row.get(2).unwrap_or(None);
        let active_users: Option<pg_sys::Oid> = row.get(3).unwrap_or(None);
        let schema: Option<pg_sys::Oid> = row.get(4).unwrap_or(None);
        let search_path = schema_name
            .and_then(|schema| CString::new(schema).ok())
            .and_then(|schema| {
                // SAFETY: quote_identifier reads a NUL-terminated name and returns it, or a
                // palloc'd quoted copy, NUL-terminated.
                let quoted = unsafe { CStr::from_ptr(pg_sys::quote_identifier(schema.as_ptr())) };
                CString::new(format!("pg_catalog, {}, pg_temp", quoted.to_string_lossy())).ok()
            });
        match (owner, search_path, active_users, schema) {
            (Some(owner), Some(search_path), Some(active_users), Some(schema)) => Writer {
                owner,
                schema,
                search_path,
                active_users,
            },
            _ => errors::internal("finding the owner of usage_counters", "not found"),
        }
    });
    WRITER.with(|w| *w.borrow_mut() = Some(found.clone()));
    found
}

/// `forget_active_users`: AFTER DELETE OR TRUNCATE ON usage_active_users FOR EACH STATEMENT.
/// Once the deletion commits, every backend forgets the users it knew as active.
#[pg_trigger]
pub fn forget_active_users<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let relid = trigger.relid().unwrap_or(pg_sys::InvalidOid);
    // SAFETY: queues a relcache invalidation message for a relation that exists (it fired us).
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    Ok(None)
}

/// Runs inside PostgreSQL's invalidation processing: only forget, nothing that can fail.
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let watched = WRITER.with(|w| {
        w.try_borrow()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.active_users))
    });
    if relid == pg_sys::InvalidOid || watched.is_none_or(|oid| oid == relid) {
        KNOWN_USERS.with(|k| {
            if let Ok(mut k) = k.try_borrow_mut() {
                k.clear();
            }
        });
    }
}

fn register_callbacks() {
    if CALLBACKS_REGISTERED.with(|r| r.replace(true)) {
        return;
    }
    // SAFETY: registers plain function pointers once per backend; they live as long as it.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}

/// Users counted by a committed transaction become known; an aborted one's rows are gone.
/// Runs inside transaction processing: nothing that can fail.
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    let committed = match event {
        XACT_EVENT_COMMIT => true,
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => false,
        _ => return,
    };
    let newly_known =
        KNOWN_AT_COMMIT.with(|k| k.try_borrow_mut().map(|mut k| std::mem::take(&mut *k)));
    if let (true, Ok(newly_known)) = (committed, newly_known) {
        KNOWN_USERS.with(|k| {
            if let Ok(mut k) = k.try_borrow_mut() {
                if k.len() + newly_known.len() > KNOWN_USERS_CAP {
                    k.clear();
                }
                k.extend(newly_known);
            }
        });
    }
}

/// An aborted subtransaction takes back the rows it inserted into usage_active_users: forget
/// what this transaction learned so far (at worst, a few probes more).
unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        KNOWN_AT_COMMIT.with(|k| {
            if let Ok(mut k) = k.try_borrow_mut() {
                k.clear();
            }
        });
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const U1: &str = "00000000-0000-0000-0000-0000000000c1";
    const U2: &str = "00000000-0000-0000-0000-0000000000c2";

    /// U1's personal organization, with U2 existing as a user.
    fn org() -> String {
        let org = crate::testing::personal_organization_of_new_user(U1, "c1@example.com");
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES ('{U2}', 'c2@example.com')"
        ))
        .unwrap();
        org
    }

    /// quantity/events/new users in this period's counter rows of `org`.
    fn counted(org: &str, period: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT coalesce(sum(total_quantity), 0)::text || '/' || coalesce(sum(event_count), 0) || '/' || coalesce(sum(unique_users), 0)
             FROM usage_counters WHERE organization_id = '{org}' AND period = '{period}'"
        ))
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn a_long_statement_is_counted_whole() {
        let org = org();
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity)
             SELECT '{org}', (ARRAY['{U1}', '{U2}', NULL]::uuid[])[1 + g % 3], 'api_call', 2
             FROM generate_series(1, 25001) g"
        ))
        .unwrap();
        assert_eq!(counted(&org, "monthly"), "50002/25001/2");
        assert_eq!(counted(&org, "daily"), "50002/25001/2");
        let active = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM usage_active_users WHERE organization_id = '{org}'"
        ))
        .unwrap();
        assert_eq!(
            active,
            Some(4),
            "two users, each in a daily and a monthly bucket"
        );
    }

    /// A statement of events over several days, users and quantities is counted per bucket
    /// exactly as a recount of the events gives, distinct users included.
    #[pg_test]
    fn a_statement_over_several_days_is_counted_per_bucket() {
        let org = org();
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity, occurred_at)
             SELECT '{org}', (ARRAY['{U1}', '{U2}', NULL]::uuid[])[1 + g % 3],
                    (ARRAY['api_call', 'automation_run'])[1 + g % 2], 1 + g % 4,
                    now() - (g % 5) * interval '1 day'
             FROM generate_series(1, 3000) g"
        ))
        .unwrap();
        let mismatches = Spi::get_one::<i64>(&format!(
            "WITH recount AS (
                 SELECT e.event_type, p.period, usage_bucket_start(p.period, e.occurred_at) AS period_start,
                        sum(e.quantity) AS q, count(*) AS n, count(DISTINCT e.user_id) AS users
                 FROM usage_events e CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
                 WHERE e.organization_id = '{org}' GROUP BY 1, 2, 3
             ), counters AS (
                 SELECT event_type, period, period_start, sum(total_quantity) AS q,
                        sum(event_count) AS n, sum(unique_users) AS users
                 FROM usage_counters WHERE organization_id = '{org}' GROUP BY 1, 2, 3
             )
             SELECT count(*) FROM recount r FULL JOIN counters c USING (event_type, period, period_start)
             WHERE (r.q, r.n, r.users) IS DISTINCT FROM (c.q, c.n, c.users)"
        ))
        .unwrap();
        assert_eq!(mismatches, Some(0));
        let buckets = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM usage_counters WHERE organization_id = '{org}' AND period = 'daily'"
        ))
        .unwrap();
        assert_eq!(buckets, Some(10), "two event types over five days");
    }

    /// How many times SQL called usage_writer() in this transaction (track_functions = all):
    /// the upsert does, counting in place does not.
    fn counting_queries() -> i64 {
        Spi::get_one::<i64>(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_xact_user_functions WHERE funcname = 'usage_writer'",
        )
        .unwrap()
        .unwrap()
    }

    /// A single event whose counter rows exist is added to them in place, without a query;
    /// the count is the same as the upsert's, in the same rows. A trigger an operator puts on
    /// usage_counters' updates is honoured: counting then goes through SQL, which fires it.
    #[pg_test]
    fn counter_rows_are_updated_in_place_unless_an_update_trigger_needs_sql() {
        let org = org();
        Spi::run("SET LOCAL track_functions = 'all'").unwrap();
        let event = format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', NULL, 'api_call', 1.5)"
        );
        Spi::run(&event).unwrap();
        Spi::run(&event).unwrap();
        let before = counting_queries();
        assert!(
            before > 0,
            "the first events create the rows through the upsert"
        );
        Spi::run(&event).unwrap();
        assert_eq!(counting_queries(), before, "the third event ran no query");
        assert_eq!(counted(&org, "monthly"), "4.5/3/0");
        assert_eq!(counted(&org, "daily"), "4.5/3/0");
        let rows = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM usage_counters WHERE organization_id = '{org}'"
        ))
        .unwrap();
        assert_eq!(rows, Some(2), "one row per bucket for this writer");

        Spi::run(
            "CREATE TABLE counter_updates (period text);
             CREATE FUNCTION log_counter_update() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO counter_updates VALUES (NEW.period); RETURN NEW; END $$;
             CREATE TRIGGER log_counter_update AFTER UPDATE ON usage_counters
               FOR EACH ROW EXECUTE FUNCTION log_counter_update()",
        )
        .unwrap();
        Spi::run(&event).unwrap();
        let logged = Spi::get_one::<String>(
            "SELECT string_agg(period, ',' ORDER BY period) FROM counter_updates",
        )
        .unwrap();
        assert_eq!(logged.as_deref(), Some("daily,monthly"));
        assert_eq!(counted(&org, "monthly"), "6.0/4/0");
    }

    /// A CHECK an operator adds to usage_counters is honoured: counting in place would not
    /// evaluate it, so counting then goes through SQL, which does.
    /// Index scans of usage_counters in this transaction.
    fn counter_index_scans() -> i64 {
        Spi::get_one::<i64>(
            "SELECT coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables WHERE relid = 'usage_counters'::regclass",
        )
        .unwrap()
        .unwrap_or(0)
    }

    /// Once counted in place, an event's counter rows are found where the last one left them,
    /// without an index scan; rows removed or truncated since are found (or made) anew.
    #[pg_test]
    fn counter_rows_are_found_where_they_were_last_written() {
        let org = org();
        let event = format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', NULL, 'api_call', 1)"
        );
        Spi::run(&event).unwrap();
        Spi::run(&event).unwrap();
        let scans = counter_index_scans();
        assert!(
            scans > 0,
            "the first in-place update finds its rows by index"
        );
        Spi::run(&event).unwrap();
        Spi::run(&event).unwrap();
        assert_eq!(
            counter_index_scans(),
            scans,
            "later events went straight to the rows"
        );
        assert_eq!(counted(&org, "monthly"), "4/4/0");
        assert_eq!(counted(&org, "daily"), "4/4/0");

        Spi::run(&format!(
            "DELETE FROM usage_counters WHERE organization_id = '{org}'"
        ))
        .unwrap();
        Spi::run(&event).unwrap();
        assert_eq!(counted(&org, "monthly"), "1/1/0");
        Spi::run("TRUNCATE usage_counters").unwrap();
        Spi::run(&event).unwrap();
        Spi::run(&event).unwrap();
        assert_eq!(counted(&org, "monthly"), "2/2/0");
        assert_eq!(counted(&org, "daily"), "2/2/0");
    }

    #[pg_test]
    fn an_operators_check_on_counter_rows_sends_counting_to_sql() {
        let org = org();
        let event = |quantity: i32| {
            format!(
                "INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', NULL, 'api_call', {quantity})"
            )
        };
        Spi::run(&event(1)).unwrap();
        Spi::run(&event(1)).unwrap();
        assert_eq!(
            counted(&org, "monthly"),
            "2/2/0",
            "the rows exist: the next event could go in place"
        );
        Spi::run(
            "ALTER TABLE usage_counters ADD CONSTRAINT operator_cap CHECK (total_quantity < 10)",
        )
        .unwrap();
        let refused = crate::testing::error_of(&event(20));
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("23514") && e.contains("operator_cap")),
            "the operator's CHECK refuses the count: {refused:?}"
        );
        Spi::run(&event(3)).unwrap();
        assert_eq!(counted(&org, "monthly"), "5/3/0");
    }
}
