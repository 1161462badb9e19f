//! Recording usage (sql/recording.sql). `record_usage` and `record_usage_batch` check, in
//! one transaction with the write, the caller's right to record, every limit the event counts
//! against and its idempotency key. Triggers give direct INSERTs the same rules: a member's
//! insert meets the same limits, a repeated idempotency key is skipped, and only the service
//! role dates an event, within the late-event window.
//!
//! Exactness at a hard limit, without one row lock per organization: see src/quota.rs.
use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, PgMemoryContexts, PgTupleDesc, Uuid};
use serde_json::{json, Map, Value};

use crate::auth_context;
use crate::entitlements::{self, LimitStatus, Role};
use crate::errors;
use crate::index_reads::{self, Visibility};
use crate::jsonb::RawJsonb;
use crate::meters;
use crate::plan_catalog::{self, PlanCatalog};
use crate::quota::{self, Candidate, Refusal};
use crate::spi::{self, types, Expect, Statement};
use crate::tuples;

pgrx::extension_sql_file!(
    "../sql/recording.sql",
    name = "recording",
    requires = [
        "retention",
        record_usage,
        record_usage_batch,
        admit_usage_event,
        start_member_usage_tally,
    ]
);

const QUANTITY_BOUND: &str = "1000000000000";
const MAX_BATCH: usize = 1000;
const EVENT_TYPE_RULE: &str =
    "a lowercase letter, then up to 62 lowercase letters, digits or underscores";

fn event_type_ok(event_type: &str) -> bool {
    let mut bytes = event_type.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && event_type.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Who records: the member behind the JWT, or the service role.
struct Caller {
    uid: Option<Uuid>,
    service: bool,
}

/// An event a caller asked to record, checked for shape.
struct Request {
    org: Uuid,
    event_type: String,
    quantity: String,
    quantity_f: f64,
    key: Option<String>,
    occurred_at: Option<TimestampWithTimeZone>,
    metadata: Option<RawJsonb>,
    user_id: Option<Uuid>,
}

/// Checks a quantity: finite, not zero, at most 1e12 in magnitude, positive for members.
fn check_quantity(quantity: &AnyNumeric, caller: &Caller) -> Result<f64, Refusal> {
    let bound = AnyNumeric::try_from(QUANTITY_BOUND)
        .unwrap_or_else(|e| errors::internal("checking a quantity", e));
    let zero = AnyNumeric::from(0);
    if quantity.is_nan() || quantity.abs() > bound || *quantity == zero {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("quantity must be a finite number other than 0, at most 1e12 in magnitude (got {quantity})"),
        ));
    }
    if !caller.service && *quantity < zero {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "only the service role records negative quantities (corrections)",
        ));
    }
    f64::try_from(quantity.clone()).map_err(|_| {
        Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "quantity is out of range",
        )
    })
}

fn check_shape(event_type: &str, key: Option<&str>) -> Result<(), Refusal> {
    if !event_type_ok(event_type) {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("event_type \"{event_type}\" is not valid: use {EVENT_TYPE_RULE}"),
        ));
    }
    if let Some(key) = key {
        if key.is_empty() || key.chars().count() > 255 {
            return Err(Refusal::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "idempotency_key must be 1 to 255 characters",
            ));
        }
    }
    Ok(())
}

/// The caller's role in `org` and the plan in effect there, or why they may not record.
/// Read through the indexes under one snapshot, the one a query here would see
/// (src/index_reads.rs).
fn authorize(catalog: &PlanCatalog, org: Uuid, caller: &Caller) -> Result<(Role, String), Refusal> {
    let (role, plan, exists) = index_reads::with_snapshot(Visibility::of_spi(), || {
        let role = caller
            .uid
            .and_then(|uid| entitlements::member_role(catalog, org, uid));
        let (plan, status) = entitlements::subscription(catalog, org);
        // A subscription (status NOT NULL) seen in this snapshot is one of an organization
        // seen in it too (its foreign key cascades): only without one is the organization
        // looked up.
        let exists =
            caller.service && (status.is_some() || entitlements::organization_exists(catalog, org));
        (role, plan, exists)
    });
    let denied = |message: &str| {
        Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            message,
        ))
    };
    match (role.as_deref().and_then(Role::parse), caller.service) {
        (_, true) if exists => Ok((Role::Service, plan)),
        (_, true) => Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("no organization {org}"),
        )),
        (Some(Role::Viewer), false) => denied("viewers cannot record usage"),
        (Some(role), false) => Ok((role, plan)),
        (None, false) => denied("the caller is not a member of this organization"),
    }
}

static WITHIN_WINDOW: Statement = Statement::read(
    "SELECT $1 >= now() - (SELECT late_event_window FROM usage_settings), $1 <= now() + interval '5 minutes'",
    &[types::TIMESTAMPTZ],
);

/// Members record for now; the service role may date an event within the late-event window.
fn check_occurred_at(
    client: &SpiClient<'_>,
    occurred_at: Option<TimestampWithTimeZone>,
    caller: &Caller,
) -> Result<(), Refusal> {
    let Some(at) = occurred_at else { return Ok(()) };
    if !caller.service {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "only the service role dates events (occurred_at); members record for now",
        ));
    }
    let table = client
        .select(WITHIN_WINDOW.prepared(client), Some(1), &[at.into()])
        .or_fail("checking occurred_at");
    let row = table.first();
    let after_start: bool = row.get(1).or_fail("checking occurred_at").unwrap_or(false);
    let before_end: bool = row.get(2).or_fail("checking occurred_at").unwrap_or(false);
    if !after_start {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "occurred_at is older than the late-event window (usage_settings.late_event_window)",
        ));
    }
    if !before_end {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "occurred_at is in the future",
        ));
    }
    Ok(())
}

static CLAIM_KEY: Statement = Statement::write(
    "INSERT INTO usage_idempotency_keys (organization_id, idempotency_key, event_id)
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
    &[types::UUID, types::TEXT, types::UUID],
);

static FIRST_RESULT: Statement = Statement::read(
    "SELECT coalesce(k.response, jsonb_build_object('event_id', k.event_id, 'organization_id', k.organization_id))
            || jsonb_build_object('recorded', false, 'duplicate', true)
     FROM usage_idempotency_keys k WHERE k.organization_id = $1 AND k.idempotency_key = $2",
    &[types::UUID, types::TEXT],
);

static KEEP_RESULT: Statement = Statement::write(
    "UPDATE usage_idempotency_keys SET response = $3 WHERE organization_id = $1 AND idempotency_key = $2",
    &[types::UUID, types::TEXT, types::JSONB],
);

/// Claims `key` for `event_id`; a key recorded before returns the first call's result.
fn claim_key(client: &mut SpiClient<'_>, org: Uuid, key: &str, event_id: Uuid) -> Option<RawJsonb> {
    let claimed = spi::one_mut::<bool>(
        client,
        &CLAIM_KEY,
        &[org.into(), key.into(), event_id.into()],
        "claiming the idempotency key",
    );
    if claimed.is_some() {
        return None;
    }
    // The key's row conflicted, so it exists: a snapshot that cannot see it (only possible
    // above READ COMMITTED, where PostgreSQL raises 40001 first) must not record a second time.
    let first = spi::one::<RawJsonb>(
        client,
        &FIRST_RESULT,
        &[org.into(), key.into()],
        "reading the first result",
    );
    Some(first.unwrap_or_else(|| {
        errors::raise(
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!("idempotency key \"{key}\" was recorded by a concurrent transaction; retry"),
        )
    }))
}

/// Claims `key` for `event_id` without a statement (src/index_reads.rs, `insert_in_place`):
/// true when claimed; false when the key may be taken, or the table asks for more, and
/// `claim_key` must run. For `record_usage` only, which writes the event of `org` in the same
/// transaction, before it commits, or raises: that event's foreign-key check locks the
/// organization (or fails, rolling the claim back with it) as the key's own check would.
fn claim_key_in_place(schema: pg_sys::Oid, org: Uuid, key: &str, event_id: Uuid) -> bool {
    // SAFETY: the transaction's start, as now() (the column's default) answers.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let row = index_reads::NewRow {
        table: c"usage_idempotency_keys",
        index: c"usage_idempotency_keys_pkey",
        columns: &[
            (c"organization_id", org.into_datum()),
            (c"idempotency_key", key.into_datum()),
            (c"event_id", event_id.into_datum()),
            (c"response", None),
            (c"created_at", now.into_datum()),
        ],
        // check_shape has checked the key's length.
        checks_upheld: &[c"usage_idempotency_keys_key_check"],
        foreign_keys_upheld: &[c"usage_idempotency_keys_organization_id_fkey"],
    };
    index_reads::insert_in_place(schema, &row) == index_reads::InPlace::Done
}

static ORGANIZATION_KEY_SHARE: Statement = Statement::write(
    "SELECT true FROM ONLY organizations WHERE id = $1 FOR KEY SHARE",
    &[types::UUID],
);

/// The foreign-key check of a key claimed in place: locks `org` as it would, or raises 23503.
fn organization_still_exists(client: &mut SpiClient<'_>, org: Uuid) {
    let found = spi::one_mut::<bool>(
        client,
        &ORGANIZATION_KEY_SHARE,
        &[org.into()],
        "checking the organization",
    );
    if found.is_none() {
        errors::raise(
            PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
            format!("organization {org} does not exist"),
        );
    }
}

static INSERT_EVENTS: Statement = Statement::write(
    "INSERT INTO usage_events
         (id, organization_id, user_id, event_type, quantity, metadata, occurred_at, idempotency_key, over_limit)
     SELECT e.id, e.organization_id, e.user_id, e.event_type, e.quantity::numeric,
            coalesce(e.metadata, '{}'), coalesce(e.occurred_at, now()), e.idempotency_key, e.over_limit
     FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[],
                 $7::timestamptz[], $8::text[], $9::bool[])
          AS e (id, organization_id, user_id, event_type, quantity, metadata, occurred_at, idempotency_key, over_limit)",
    &[
        types::UUID_ARRAY,
        types::UUID_ARRAY,
        types::UUID_ARRAY,
        types::TEXT_ARRAY,
        types::TEXT_ARRAY,
        types::JSONB_ARRAY,
        types::TIMESTAMPTZ_ARRAY,
        types::TEXT_ARRAY,
        types::BOOL_ARRAY,
    ],
);

static INSERT_EVENT: Statement = Statement::write(
    "INSERT INTO usage_events
         (id, organization_id, user_id, event_type, quantity, metadata, occurred_at, idempotency_key, over_limit)
     VALUES ($1, $2, $3, $4, $5::numeric, coalesce($6, '{}'), coalesce($7, now()), $8, $9)",
    &[
        types::UUID,
        types::UUID,
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::JSONB,
        types::TIMESTAMPTZ,
        types::TEXT,
        types::BOOL,
    ],
);

thread_local! {
    /// Events whose idempotency key `record_usage` has just claimed, while it writes them.
    static CLAIMED: std::cell::RefCell<std::collections::HashSet<Uuid>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// Marks events as claimed for as long as it lives, also when the write raises an error.
struct ClaimedWhileWriting;

impl ClaimedWhileWriting {
    fn mark(ids: impl Iterator<Item = Uuid>) -> Self {
        CLAIMED.with(|c| c.borrow_mut().extend(ids));
        ClaimedWhileWriting
    }
}

impl Drop for ClaimedWhileWriting {
    fn drop(&mut self) {
        CLAIMED.with(|c| c.borrow_mut().clear());
    }
}

/// True while `record_usage`, in this backend, writes the event `event_id` whose idempotency
/// key it has already claimed: `admit_usage_event` would only find that claim again.
fn key_claimed_by_record_usage(event_id: Uuid) -> bool {
    CLAIMED.with(|c| c.borrow().contains(&event_id))
}

/// Accepted events, written in one INSERT.
#[derive(Default)]
struct Accepted {
    ids: Vec<Uuid>,
    orgs: Vec<Uuid>,
    users: Vec<Option<Uuid>>,
    types: Vec<String>,
    quantities: Vec<String>,
    metadata: Vec<Option<RawJsonb>>,
    occurred: Vec<Option<TimestampWithTimeZone>>,
    keys: Vec<Option<String>>,
    over: Vec<bool>,
}

impl Accepted {
    fn push(&mut self, id: Uuid, r: &Request, user: Option<Uuid>, over_limit: bool) {
        self.ids.push(id);
        self.orgs.push(r.org);
        self.users.push(user);
        self.types.push(r.event_type.clone());
        self.quantities.push(r.quantity.clone());
        self.metadata.push(r.metadata);
        self.occurred.push(r.occurred_at);
        self.keys.push(r.key.clone());
        self.over.push(over_limit);
    }

    /// Writes the events; answers how many rows the INSERT stored (a user's trigger or rule
    /// may store fewer).
    fn write(mut self, client: &mut SpiClient<'_>) -> usize {
        let claimed = self
            .ids
            .iter()
            .zip(&self.keys)
            .filter(|(_, key)| key.is_some())
            .map(|(id, _)| *id);
        let _claimed = ClaimedWhileWriting::mark(claimed);
        if self.ids.len() == 1 {
            // One event (record_usage): a plain VALUES row, no arrays to build and unnest.
            return spi::run(
                client,
                &INSERT_EVENT,
                &[
                    self.ids[0].into(),
                    self.orgs[0].into(),
                    self.users[0].into(),
                    self.types[0].as_str().into(),
                    self.quantities[0].as_str().into(),
                    self.metadata[0].into(),
                    self.occurred[0].into(),
                    self.keys[0].take().into(),
                    self.over[0].into(),
                ],
                "recording usage",
            );
        }
        if self.ids.is_empty() {
            return 0;
        }
        spi::run(
            client,
            &INSERT_EVENTS,
            &[
                self.ids.into(),
                self.orgs.into(),
                self.users.into(),
                self.types.into(),
                self.quantities.into(),
                self.metadata.into(),
                self.occurred.into(),
                self.keys.into(),
                self.over.into(),
            ],
            "recording usage",
        )
    }
}

/// What `check_feature_access` would say after the event: every limit of `plan` that counts
/// the event's type, with its usage read now.
fn limits_answer(catalog: &PlanCatalog, plan: &str, r: &Request, role: Role) -> Map<String, Value> {
    let mut limits = Map::new();
    for (key, meter) in catalog.limits_counting(&r.event_type) {
        let after = LimitStatus::of(
            catalog,
            plan,
            key,
            meter,
            meters::usage(catalog, r.org, meter),
        );
        let mut out = Map::new();
        after.describe(Some(role), &mut out);
        out.remove("type");
        limits.insert(key.to_string(), Value::Object(out));
    }
    limits
}

/// What `record_usage` answers for one recorded event.
fn answer(
    r: &Request,
    id: Uuid,
    role: Role,
    (catalog, plan): (&PlanCatalog, &str),
    over_limit: bool,
) -> Value {
    let mut out = Map::new();
    out.insert("recorded".into(), json!(true));
    out.insert("duplicate".into(), json!(false));
    out.insert("event_id".into(), json!(crate::jsonb::uuid_text(&id)));
    out.insert(
        "organization_id".into(),
        json!(crate::jsonb::uuid_text(&r.org)),
    );
    out.insert("event_type".into(), json!(r.event_type));
    out.insert("quantity".into(), crate::entitlements::number(r.quantity_f));
    out.insert("over_limit".into(), json!(over_limit));
    out.insert(
        "limits".into(),
        Value::Object(limits_answer(catalog, plan, r, role)),
    );
    Value::Object(out)
}

/// Keeps `answer` with the key this call claimed, for a repeated call to return: written in
/// place into the key's row (just inserted by this transaction), without a statement; through
/// SQL when that cannot be done (src/index_reads.rs says when).
fn keep_answer(
    client: &mut SpiClient<'_>,
    schema: pg_sys::Oid,
    org: Uuid,
    key: &str,
    answer: RawJsonb,
) {
    let keys = [index_reads::Key::Uuid(org), index_reads::Key::Text(key)];
    let rows = index_reads::KeyedRows {
        table: c"usage_idempotency_keys",
        index: c"usage_idempotency_keys_pkey",
        rows: &[&keys],
        columns: &[c"response"],
        // The key is left as it is.
        checks_upheld: &[c"usage_idempotency_keys_key_check"],
        // Written once: nothing to find again.
        remember: false,
    };
    let done = index_reads::update_in_place(schema, &rows, |_, row| {
        row[0] = answer.into_datum();
        true
    });
    if done.first() != Some(&index_reads::InPlace::Done) {
        spi::run(
            client,
            &KEEP_RESULT,
            &[org.into(), key.into(), answer.into()],
            "keeping the result",
        );
    }
}

fn caller(client: &SpiClient<'_>) -> Caller {
    let uid = auth_context::current_uid(client);
    let service = auth_context::caller_is_service_role();
    if uid.is_none() && !service {
        errors::insufficient_privilege("record_usage: not authenticated");
    }
    Caller { uid, service }
}

/// The user an event is recorded for: the member themself; the service role names one (or
/// the user of its JWT, if any).
fn user_for(r: &Request, caller: &Caller) -> Result<Option<Uuid>, Refusal> {
    match (caller.service, r.user_id) {
        (true, Some(user)) => Ok(Some(user)),
        (true, None) => Ok(caller.uid),
        (false, Some(user)) if Some(user) != caller.uid => Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "a member records usage for themself only",
        )),
        (false, _) => Ok(caller.uid),
    }
}

/// Records `quantity` of `event_type` in `org_id` for the caller, if their role, the limits it
/// counts against and its idempotency key allow, atomically. Over a hard limit it refuses with
/// 54000; a repeated key returns the first call's result and records nothing. Answers what
/// `check_feature_access` would say afterwards for each limit the event counts against.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn record_usage(
    org_id: Option<Uuid>,
    event_type: Option<&str>,
    quantity: default!(Option<AnyNumeric>, 1),
    idempotency_key: default!(Option<&str>, "NULL"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    metadata: default!(Option<RawJsonb>, "'{}'"),
    user_id: default!(Option<Uuid>, "NULL"),
) -> RawJsonb {
    let org = errors::required(org_id, "org_id");
    let event_type = errors::required(event_type, "event_type");
    let quantity = errors::required(quantity, "quantity");
    // SAFETY: reads the backend's current memory context, the call's.
    let returned_from = unsafe { pg_sys::CurrentMemoryContext };
    let answer = Spi::connect_mut(|client| {
        let caller = caller(client);
        check_shape(event_type, idempotency_key).unwrap_or_else(|r| r.raise());
        let quantity_f = check_quantity(&quantity, &caller).unwrap_or_else(|r| r.raise());
        let request = Request {
            org,
            event_type: event_type.to_string(),
            quantity: quantity.to_string(),
            quantity_f,
            key: idempotency_key.map(str::to_string),
            occurred_at,
            metadata,
            user_id,
        };
        let catalog = plan_catalog::get(client);
        let (role, plan) = authorize(&catalog, org, &caller).unwrap_or_else(|r| r.raise());
        let user = user_for(&request, &caller).unwrap_or_else(|r| r.raise());
        check_occurred_at(client, occurred_at, &caller).unwrap_or_else(|r| r.raise());
        let id = Uuid::from_bytes(*uuid::Uuid::new_v4().as_bytes());
        let mut claimed_in_place = false;
        if let Some(key) = &request.key {
            claimed_in_place = claim_key_in_place(catalog.schema, org, key, id);
            if !claimed_in_place {
                if let Some(first) = claim_key(client, org, key, id) {
                    return first;
                }
            }
        }
        let candidate = Candidate {
            org,
            event_type,
            quantity: quantity_f,
            user,
            pending: 0.0,
            user_seen: false,
        };
        let admission =
            quota::admit(client, &catalog, &plan, &candidate).unwrap_or_else(|r| r.raise());
        let mut accepted = Accepted::default();
        accepted.push(id, &request, user, admission.over_soft);
        if accepted.write(client) == 0 && claimed_in_place {
            // No event, so no foreign-key check of the organization: the key's own is made.
            organization_still_exists(client, org);
        }
        let answer = answer(&request, id, role, (&catalog, &plan), admission.over_soft);
        // Built once, in the caller's memory (SPI's is freed on return), for the key's row
        // and for the caller.
        // SAFETY: the caller's context outlives this SPI connection.
        let built = unsafe {
            PgMemoryContexts::For(returned_from).switch_to(|_| crate::jsonb::build(&answer))
        };
        if let Some(key) = &request.key {
            keep_answer(client, catalog.schema, org, key, built);
        }
        built
    });
    answer
}

static BATCH_ELEMENTS: Statement = Statement::read(
    "SELECT x.n::int, jsonb_typeof(x.e), x.e ->> 'org_id', x.e ->> 'event_type', x.e ->> 'quantity',
            x.e ->> 'idempotency_key', x.e ->> 'occurred_at', x.e -> 'metadata', x.e ->> 'user_id'
     FROM jsonb_array_elements($1) WITH ORDINALITY AS x (e, n)
     ORDER BY x.n",
    &[types::JSONB],
);

static AS_TIMESTAMPTZ: Statement = Statement::read("SELECT $1::timestamptz", &[types::TEXT]);

struct Element {
    kind: Option<String>,
    org: Option<String>,
    event_type: Option<String>,
    quantity: Option<String>,
    key: Option<String>,
    occurred_at: Option<String>,
    metadata: Option<RawJsonb>,
    user_id: Option<String>,
}

/// An element of the batch as a request, or what is wrong with it.
fn request_from(
    client: &SpiClient<'_>,
    index: usize,
    e: Element,
    caller: &Caller,
) -> Result<Request, Refusal> {
    let bad = |field: &str, rule: &str| {
        Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("events[{index}].{field}: {rule}"),
        )
    };
    if e.kind.as_deref() != Some("object") {
        return Err(Refusal::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("events[{index}] must be an object"),
        ));
    }
    let org = e
        .org
        .as_deref()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map(|u| Uuid::from_bytes(*u.as_bytes()))
        .ok_or_else(|| bad("org_id", "a uuid is required"))?;
    let user_id = match e.user_id.as_deref() {
        None => None,
        Some(s) => Some(
            uuid::Uuid::parse_str(s)
                .map(|u| Uuid::from_bytes(*u.as_bytes()))
                .map_err(|_| bad("user_id", "must be a uuid"))?,
        ),
    };
    let event_type = e
        .event_type
        .ok_or_else(|| bad("event_type", "is required"))?;
    check_shape(&event_type, e.key.as_deref())?;
    let quantity_text = e.quantity.unwrap_or_else(|| "1".into());
    let numeric = AnyNumeric::try_from(quantity_text.as_str())
        .map_err(|_| bad("quantity", "must be a number"))?;
    let quantity_f = check_quantity(&numeric, caller)?;
    let occurred_at = match e.occurred_at.as_deref() {
        None => None,
        Some(text) if iso_timestamp(text) => spi::one::<TimestampWithTimeZone>(
            client,
            &AS_TIMESTAMPTZ,
            &[text.into()],
            "reading occurred_at",
        ),
        Some(_) => return Err(bad("occurred_at", "must be an ISO 8601 timestamp")),
    };
    if e.metadata.is_some() && !metadata_is_object(client, e.metadata) {
        return Err(bad("metadata", "must be a JSON object"));
    }
    Ok(Request {
        org,
        event_type,
        quantity: numeric.to_string(),
        quantity_f,
        key: e.key,
        occurred_at,
        metadata: e.metadata,
        user_id,
    })
}

static IS_OBJECT: Statement =
    Statement::read("SELECT jsonb_typeof($1) = 'object'", &[types::JSONB]);

fn metadata_is_object(client: &SpiClient<'_>, metadata: Option<RawJsonb>) -> bool {
    spi::one::<bool>(client, &IS_OBJECT, &[metadata.into()], "reading metadata").unwrap_or(false)
}

/// `YYYY-MM-DD`, optionally `THH:MM[:SS[.fff]]` and a zone (`Z` or `±HH[:MM]`).
fn iso_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 10
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    b[10..]
        .iter()
        .all(|c| c.is_ascii_digit() || b"T :.+-Z".contains(c))
}

/// Records a batch of events in one call: `[{"org_id": …, "event_type": …, "quantity": …,
/// "idempotency_key": …, "occurred_at": …, "metadata": {…}, "user_id": …}, …]`, at most 1,000.
/// Each event gets the checks `record_usage` makes, with the same guarantees under
/// concurrency; the answer lists, in order, each event's result or refusal (with its SQLSTATE).
/// Events of the batch that fail a check are left out; the others are recorded.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn record_usage_batch(events: Option<RawJsonb>) -> RawJsonb {
    let events = errors::required(events, "events");
    let results = Spi::connect_mut(|client| {
        let caller = caller(client);
        let what = "reading the batch";
        let is_array =
            spi::one::<bool>(client, &IS_ARRAY, &[Some(events).into()], what).unwrap_or(false);
        if !is_array {
            errors::invalid_parameter("record_usage_batch: events must be a JSON array");
        }
        let elements: Vec<Element> = client
            .select(
                BATCH_ELEMENTS.prepared(client),
                None,
                &[Some(events).into()],
            )
            .or_fail(what)
            .map(|r| Element {
                kind: r.get(2).or_fail(what),
                org: r.get(3).or_fail(what),
                event_type: r.get(4).or_fail(what),
                quantity: r.get(5).or_fail(what),
                key: r.get(6).or_fail(what),
                occurred_at: r.get(7).or_fail(what),
                metadata: r.get(8).or_fail(what),
                user_id: r.get(9).or_fail(what),
            })
            .collect();
        if elements.len() > MAX_BATCH {
            errors::invalid_parameter(format!(
                "record_usage_batch: at most {MAX_BATCH} events per call"
            ));
        }
        let catalog = plan_catalog::get(client);
        let mut roles: HashMap<Uuid, Result<(Role, String), String>> = HashMap::new();
        // Per (organization, event type): what the batch's accepted events add, not written yet.
        let mut pending: HashMap<(Uuid, String), f64> = HashMap::new();
        let mut users_seen: std::collections::HashSet<(Uuid, String, Uuid)> = Default::default();
        let mut accepted = Accepted::default();
        let mut results: Vec<Value> = Vec::with_capacity(elements.len());
        let mut answered: Vec<(usize, Request, Uuid, Role, String, bool)> = Vec::new();
        for (index, element) in elements.into_iter().enumerate() {
            let outcome = (|| -> Result<Option<Value>, Refusal> {
                let r = request_from(client, index, element, &caller)?;
                let (role, plan) = match roles
                    .entry(r.org)
                    .or_insert_with(|| authorize(&catalog, r.org, &caller).map_err(|e| e.message))
                {
                    Ok(found) => found.clone(),
                    Err(message) => {
                        return Err(Refusal::new(
                            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                            message.clone(),
                        ))
                    }
                };
                let user = user_for(&r, &caller)?;
                check_occurred_at(client, r.occurred_at, &caller)?;
                let id = Uuid::from_bytes(*uuid::Uuid::new_v4().as_bytes());
                if let Some(key) = &r.key {
                    // A key seen earlier in this batch conflicts with its own claim.
                    if let Some(first) = claim_key(client, r.org, key, id) {
                        return Ok(Some(jsonb_value(client, first)));
                    }
                }
                let meter = (r.org, r.event_type.clone());
                let candidate = Candidate {
                    org: r.org,
                    event_type: &r.event_type,
                    quantity: r.quantity_f,
                    user,
                    pending: pending.get(&meter).copied().unwrap_or(0.0),
                    user_seen: user
                        .is_some_and(|u| users_seen.contains(&(r.org, r.event_type.clone(), u))),
                };
                let admission = match quota::admit(client, &catalog, &plan, &candidate) {
                    Ok(admission) => admission,
                    Err(refusal) => {
                        if let Some(key) = &r.key {
                            release_key(client, r.org, key);
                        }
                        return Err(refusal);
                    }
                };
                *pending.entry(meter).or_insert(0.0) += r.quantity_f;
                if let Some(u) = user {
                    users_seen.insert((r.org, r.event_type.clone(), u));
                }
                accepted.push(id, &r, user, admission.over_soft);
                answered.push((index, r, id, role, plan, admission.over_soft));
                Ok(None)
            })();
            results.push(match outcome {
                Ok(Some(duplicate)) => duplicate,
                Ok(None) => Value::Null,
                Err(refusal) => json!({
                    "recorded": false,
                    "error": {"sqlstate": refusal.sqlstate(), "message": refusal.message},
                }),
            });
        }
        accepted.write(client);
        for (index, r, id, role, plan, over_soft) in answered {
            let answer = answer(&r, id, role, (&catalog, &plan), over_soft);
            if let Some(key) = &r.key {
                let built = crate::jsonb::build(&answer);
                keep_answer(client, catalog.schema, r.org, key, built);
            }
            results[index] = answer;
        }
        Value::Array(results)
    });
    // Built here, in the caller's memory (not SPI's, freed on return).
    crate::jsonb::build(&results)
}

static IS_ARRAY: Statement = Statement::read("SELECT jsonb_typeof($1) = 'array'", &[types::JSONB]);

static RELEASE_KEY: Statement = Statement::write(
    "DELETE FROM usage_idempotency_keys WHERE organization_id = $1 AND idempotency_key = $2",
    &[types::UUID, types::TEXT],
);

/// A refused event of a batch gives its key back: a retry may succeed later.
fn release_key(client: &mut SpiClient<'_>, org: Uuid, key: &str) {
    spi::run(
        client,
        &RELEASE_KEY,
        &[org.into(), key.into()],
        "releasing the idempotency key",
    );
}

static AS_TEXT: Statement = Statement::read("SELECT $1::text", &[types::JSONB]);

/// A stored answer (our own JSON) back as a value, to place in the batch's answer.
fn jsonb_value(client: &SpiClient<'_>, value: RawJsonb) -> Value {
    spi::one::<String>(
        client,
        &AS_TEXT,
        &[Some(value).into()],
        "reading a stored answer",
    )
    .and_then(|text| serde_json::from_str(&text).ok())
    .unwrap_or(Value::Null)
}

/// What the rows of the current INSERT statement (not counted yet: the statement trigger
/// counts them at its end) added to each meter so far, and the users they brought. Started
/// afresh by `start_member_usage_tally` before each member INSERT: the row trigger's own writes
/// advance the command counter between rows, so no id the rows share names the statement.
#[derive(Default)]
struct StatementTally {
    quantities: HashMap<(Uuid, String), f64>,
    users: std::collections::HashSet<(Uuid, String, Uuid)>,
}

thread_local! {
    static TALLY: std::cell::RefCell<StatementTally> = std::cell::RefCell::new(StatementTally::default());
}

/// `start_member_usage_tally`: BEFORE INSERT ON usage_events FOR EACH STATEMENT. A member's
/// rows are admitted against what the statement's earlier rows took. (No WHEN clause: a
/// trigger's WHEN is parsed anew for every statement, which costs more than this reset.)
#[pg_trigger]
fn start_member_usage_tally<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, pgrx::datum::TryFromDatumError> {
    TALLY.with(|tally| *tally.borrow_mut() = StatementTally::default());
    Ok(None)
}

/// The late-event window's check of a dated event (sql/recording.sql).
static CHECK_EVENT_TIME: Statement = Statement::read(
    "SELECT check_usage_event_time($1, $2)",
    &[types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);
/// Claims a direct INSERT's idempotency key for its event; false when the key is taken.
static CLAIM_EVENT_KEY: Statement = Statement::write(
    "SELECT claim_usage_event_key($1, $2, $3)",
    &[types::UUID, types::TEXT, types::UUID],
);

/// `admit_usage_event`: BEFORE INSERT ON usage_events FOR EACH ROW, the rules every direct
/// INSERT meets, in this order:
/// 1. only the service role dates an event (`occurred_at`), within the late-event window and
///    never in the future;
/// 2. a row whose idempotency key its organization already used is skipped (INSERT 0 0), as
///    `record_usage` answers "duplicate" (`record_usage` claims its key first, for the event
///    it then writes, which passes);
/// 3. a writer that is not trusted (a member inserting directly; the service role, the
///    owner and superusers are trusted) meets the limits `record_usage` enforces: a hard one
///    refuses the row with 54000 (the statement fails whole), past a soft one the row is
///    stored as overage (`over_limit`). Like `record_usage`, it takes the meter's turn first.
///
/// One trigger without WHEN clauses: PostgreSQL parses a trigger's WHEN anew for every
/// statement, which cost more than the checks themselves. It runs as the caller (who is
/// trusted is decided by the caller's role); what it reads and writes it does as the owner of
/// the usage tables, with a pinned search_path, as a SECURITY DEFINER function would.
#[pg_trigger]
fn admit_usage_event<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter("admit_usage_event() must be a row-level INSERT trigger")
    };
    // The row goes back as it came (PostgreSQL then keeps it as is), unless it is overage.
    if crate::backup::restore_in_progress() {
        return Ok(Some(new));
    }
    // SAFETY: the trigger's relation and row, valid while it runs.
    let (tupdesc, row) = unsafe {
        let data = trigger.trigger_data();
        let tupdesc = (*data.tg_relation).rd_att;
        (tupdesc, tuples::Row::deform(data.tg_trigtuple, tupdesc))
    };
    // Dated: occurred_at differs from received_at (both timestamptz, compared as stored).
    if let (Some(occurred), Some(received)) = (row.datum(c"occurred_at"), row.datum(c"received_at"))
    {
        if occurred != received {
            let occurred: Option<TimestampWithTimeZone> = row.get(c"occurred_at");
            let received: Option<TimestampWithTimeZone> = row.get(c"received_at");
            crate::counting::as_extension_owner(|| {
                Spi::connect(|client| {
                    client
                        .select(
                            CHECK_EVENT_TIME.prepared(client),
                            None,
                            &[occurred.into(), received.into()],
                        )
                        .map(|_| ())
                        .unwrap_or_else(|e| errors::internal("checking occurred_at", e))
                })
            });
        }
    }
    let org = || errors::required(row.get::<Uuid>(c"organization_id"), "organization_id");
    if row.datum(c"idempotency_key").is_some() {
        let key: String = errors::required(row.get(c"idempotency_key"), "idempotency_key");
        let id: Uuid = errors::required(row.get(c"id"), "id");
        if !key_claimed_by_record_usage(id) {
            let claimed = crate::counting::as_extension_owner(|| {
                Spi::connect_mut(|client| {
                    spi::one_mut::<bool>(
                        client,
                        &CLAIM_EVENT_KEY,
                        &[org().into(), key.into(), id.into()],
                        "claiming an idempotency key",
                    )
                })
            });
            if claimed != Some(true) {
                return Ok(None);
            }
        }
    }
    if auth_context::current_role_is_service_role() {
        return Ok(Some(new));
    }
    let org = org();
    let event_type: String = errors::required(row.get(c"event_type"), "event_type");
    let user: Option<Uuid> = row.get(c"user_id");
    let quantity: AnyNumeric = errors::required(row.get(c"quantity"), "quantity");
    let quantity = f64::try_from(quantity).unwrap_or(f64::INFINITY);
    let over_soft = crate::counting::as_extension_owner(|| {
        Spi::connect_mut(|client| {
            let catalog = plan_catalog::get(client);
            if catalog.limits_counting(&event_type).is_empty() {
                return false;
            }
            let (plan, _) = index_reads::with_snapshot(Visibility::of_spi(), || {
                entitlements::subscription(&catalog, org)
            });
            TALLY.with(|tally| {
                let mut tally = tally.borrow_mut();
                let key = (org, event_type.clone());
                let candidate = Candidate {
                    org,
                    event_type: &event_type,
                    quantity,
                    user,
                    pending: tally.quantities.get(&key).copied().unwrap_or(0.0),
                    user_seen: user
                        .is_some_and(|u| tally.users.contains(&(org, event_type.clone(), u))),
                };
                let admission =
                    quota::admit(client, &catalog, &plan, &candidate).unwrap_or_else(|r| r.raise());
                *tally.quantities.entry(key).or_insert(0.0) += quantity;
                if let Some(u) = user {
                    tally.users.insert((org, event_type.clone(), u));
                }
                admission.over_soft
            })
        })
    });
    if !over_soft {
        return Ok(Some(new));
    }
    let mut row = new.into_owned();
    row.set_by_name("over_limit", true)?;
    // SAFETY: the modified copy, palloc'd in the trigger's memory context, in the relation's
    // shape; PostgreSQL takes it from here.
    Ok(Some(unsafe {
        PgHeapTuple::from_heap_tuple(PgTupleDesc::from_pg_unchecked(tupdesc), row.into_pg())
    }))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-4000-8000-00000000ab01";

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    /// record_usage keeps each answer with its key in place (no UPDATE statement); a new version
    /// that does not fit on its page gets entries in every index of the keys' table (its primary
    /// key and the BRIN on created_at), as an UPDATE's would, so both still find every row.
    #[pg_test]
    fn answers_kept_in_place_are_found_through_every_index() {
        let org = crate::testing::personal_organization_of_new_user(OWNER, "keys@example.com");
        Spi::run(&format!(
            "SELECT record_usage('{org}', 'api_call', 1, 'key-' || g) FROM generate_series(1, 400) g"
        ))
        .unwrap();
        assert!(
            count(
                "SELECT n_tup_upd - n_tup_hot_upd FROM pg_stat_xact_user_tables
                 WHERE relname = 'usage_idempotency_keys'"
            ) > 0,
            "some answers moved to another page, so their versions needed index entries"
        );
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").unwrap();
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM usage_idempotency_keys
                 WHERE organization_id = '{org}'
                   AND idempotency_key = ANY (ARRAY(SELECT 'key-' || g FROM generate_series(1, 400) g))
                   AND (response ->> 'recorded')::boolean"
            )),
            400,
            "every key's row, with its answer, through the primary key"
        );
        Spi::run("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = on").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM usage_idempotency_keys WHERE created_at = now() AND response IS NOT NULL"),
            400,
            "and through the BRIN index on created_at"
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM usage_events WHERE organization_id = '{org}' AND idempotency_key LIKE 'key-%'"
            )),
            400
        );
    }

    /// With an operator's UPDATE trigger on the keys table, the answer is kept through SQL
    /// (the trigger sees it) and a repeat of the key returns it.
    #[pg_test]
    fn an_answer_kept_through_sql_is_returned_again() {
        let org = crate::testing::personal_organization_of_new_user(OWNER, "kept@example.com");
        Spi::run(
            "CREATE TEMP TABLE kept_answers (answer jsonb);
             CREATE FUNCTION pg_temp.note_answer() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO kept_answers VALUES (NEW.response); RETURN NEW; END $$;
             CREATE TRIGGER note_answer BEFORE UPDATE ON usage_idempotency_keys
               FOR EACH ROW EXECUTE FUNCTION pg_temp.note_answer()",
        )
        .unwrap();
        let call = format!("SELECT record_usage('{org}', 'api_call', 3, 'kept')");
        let first = Spi::get_one::<pgrx::JsonB>(&call).unwrap().unwrap().0;
        let again = Spi::get_one::<pgrx::JsonB>(&call).unwrap().unwrap().0;
        assert_eq!(first["recorded"], serde_json::json!(true));
        assert_eq!(again["duplicate"], serde_json::json!(true));
        assert_eq!(again["event_id"], first["event_id"]);
        let kept = Spi::get_one::<pgrx::JsonB>("SELECT answer FROM kept_answers")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(
            kept["event_id"], first["event_id"],
            "the trigger saw the answer"
        );
    }

    /// record_usage claims a new key in place, without a statement: the claim reads
    /// `organizations` no more than a call without a key (through SQL its foreign-key check
    /// would read it once more). A repeated key (here in the same transaction, whose row the
    /// claim finds taken) goes to SQL and gets the first answer; a keys table with an
    /// operator's INSERT trigger sends every claim to SQL, so the trigger fires; and when an
    /// operator's trigger drops the event row, the organization is checked and the key kept.
    #[pg_test]
    fn keys_claimed_in_place_leave_repeats_and_operators_triggers_to_sql() {
        let org = crate::testing::personal_organization_of_new_user(OWNER, "claims@example.com");
        let organization_reads = || {
            count(
                "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
                 WHERE relname = 'organizations'",
            )
        };
        let reads_of = |sql: &str| {
            let before = organization_reads();
            Spi::run(sql).unwrap();
            organization_reads() - before
        };
        let call = |key: &str| format!("SELECT record_usage('{org}', 'api_call', 1, {key})");
        // The first calls create the counter rows (through SQL, which reads organizations).
        for warm_up in ["NULL", "'warm-up-1'", "NULL", "'warm-up-2'"] {
            reads_of(&call(warm_up));
        }
        let unkeyed: i64 = (0..3).map(|_| reads_of(&call("NULL"))).sum();
        let keyed: i64 = (0..3)
            .map(|i| reads_of(&call(&format!("'in-place-{i}'"))))
            .sum();
        assert_eq!(keyed, unkeyed, "the claims made no query of organizations");
        let first = Spi::get_one::<pgrx::JsonB>(&format!(
            "SELECT record_usage('{org}', 'api_call', 2, 'once')"
        ))
        .unwrap()
        .unwrap()
        .0;
        let again = Spi::get_one::<pgrx::JsonB>(&format!(
            "SELECT record_usage('{org}', 'api_call', 2, 'once')"
        ))
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(first["recorded"], true);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["event_id"], first["event_id"]);
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM usage_events WHERE organization_id = '{org}' AND idempotency_key = 'once'"
            )),
            1
        );
        Spi::run(
            "CREATE TEMP TABLE seen_keys (key text);
             CREATE FUNCTION pg_temp.note_key() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO seen_keys VALUES (NEW.idempotency_key); RETURN NEW; END $$;
             CREATE TRIGGER note_key AFTER INSERT ON usage_idempotency_keys
               FOR EACH ROW EXECUTE FUNCTION pg_temp.note_key()",
        )
        .unwrap();
        let through_sql: i64 = (0..3)
            .map(|i| reads_of(&call(&format!("'watched-{i}'"))))
            .sum();
        assert_eq!(
            count("SELECT count(*) FROM seen_keys WHERE key LIKE 'watched-%'"),
            3,
            "the operator's trigger saw the claim"
        );
        assert!(
            through_sql > unkeyed,
            "through SQL the key's foreign-key check reads organizations ({through_sql} reads, {unkeyed} without a key)"
        );
        Spi::run(
            "DROP TRIGGER note_key ON usage_idempotency_keys;
             CREATE FUNCTION pg_temp.drop_event() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RETURN NULL; END $$;
             CREATE TRIGGER zz_drop_event BEFORE INSERT ON usage_events
               FOR EACH ROW EXECUTE FUNCTION pg_temp.drop_event()",
        )
        .unwrap();
        let dropped: i64 = (0..3)
            .map(|i| reads_of(&call(&format!("'dropped-{i}'"))))
            .sum();
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM usage_idempotency_keys k WHERE k.organization_id = '{org}'
                   AND k.idempotency_key LIKE 'dropped-%'
                   AND NOT EXISTS (SELECT FROM usage_events e WHERE e.id = k.event_id)"
            )),
            3,
            "the keys are kept, with no event stored"
        );
        assert_eq!(
            dropped, unkeyed,
            "no event's foreign-key check: the organization was read (and locked) instead"
        );
    }
}
