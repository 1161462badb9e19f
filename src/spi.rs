//! SPI plumbing: statements are planned once per backend and reused on every call.
//!
//! SQL run from Rust names tables without a schema: every function that reaches tables is
//! SECURITY DEFINER with `search_path = pg_catalog, <extension schema>, pg_temp`, so names
//! resolve to the extension's schema (chosen at CREATE EXTENSION time) and never to pg_temp.
use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys::PgOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

thread_local! {
    // Keyed by the address of the 'static SQL text: one entry per call site.
    static PREPARED: RefCell<HashMap<usize, &'static OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// A statement's text and argument types, declared next to the code that runs it.
pub struct Statement {
    pub sql: &'static str,
    pub args: &'static [PgOid],
    /// Writes (INSERT/UPDATE/DELETE or volatile functions): planned as non-read-only.
    pub writes: bool,
}

impl Statement {
    pub const fn read(sql: &'static str, args: &'static [PgOid]) -> Self {
        Self {
            sql,
            args,
            writes: false,
        }
    }

    pub const fn write(sql: &'static str, args: &'static [PgOid]) -> Self {
        Self {
            sql,
            args,
            writes: true,
        }
    }

    /// The backend's saved plan for this statement, preparing it on first use.
    pub fn prepared(&'static self, client: &SpiClient<'_>) -> &'static OwnedPreparedStatement {
        let key = self.sql.as_ptr() as usize;
        if let Some(stmt) = PREPARED.with(|p| p.borrow().get(&key).copied()) {
            return stmt;
        }
        let stmt = if self.writes {
            client.prepare_mut(self.sql, self.args)
        } else {
            client.prepare(self.sql, self.args)
        }
        .unwrap_or_else(|e| crate::errors::internal("preparing a statement", e))
        .keep();
        // Plans live for the backend's lifetime; PostgreSQL replans them when tables change.
        let stmt: &'static OwnedPreparedStatement = Box::leak(Box::new(stmt));
        PREPARED.with(|p| p.borrow_mut().insert(key, stmt));
        stmt
    }
}

/// Type OIDs for statement arguments.
pub mod types {
    use pgrx::pg_sys::{self, PgOid};

    pub const UUID: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::UUIDOID);
    pub const TEXT: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTOID);
    pub const BOOL: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::BOOLOID);
    pub const TIMESTAMPTZ: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TIMESTAMPTZOID);
    pub const TEXT_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTARRAYOID);
    pub const UUID_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::UUIDARRAYOID);
    pub const JSONB: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::JSONBOID);
    pub const JSONB_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::JSONBARRAYOID);
    pub const TIMESTAMPTZ_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TIMESTAMPTZARRAYOID);
    pub const BOOL_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::BOOLARRAYOID);
    pub const INT4: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT4OID);
    pub const INT8: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);
    pub const FLOAT8: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::FLOAT8OID);
    pub const INTERVAL: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INTERVALOID);
    pub const NUMERIC: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::NUMERICOID);
}

/// Unwraps an SPI result. SPI errors that PostgreSQL raised (constraint violations and the
/// like) have already been reported with their own SQLSTATE; what reaches here is a bug,
/// reported as an internal error without Rust details.
pub trait Expect<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> Expect<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|e| crate::errors::internal(what, e))
    }
}

/// Runs a statement that returns at most one row and reads its first column.
pub fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    client: &SpiClient<'_>,
    statement: &'static Statement,
    args: &[pgrx::datum::DatumWithOid],
    what: &str,
) -> Option<T> {
    let table = client
        .select(statement.prepared(client), Some(1), args)
        .or_fail(what);
    if table.is_empty() {
        return None;
    }
    table.first().get_one::<T>().or_fail(what)
}

/// As `one`, for statements that write (run through `SpiClient::update`).
pub fn one_mut<T: pgrx::FromDatum + pgrx::IntoDatum>(
    client: &mut SpiClient<'_>,
    statement: &'static Statement,
    args: &[pgrx::datum::DatumWithOid],
    what: &str,
) -> Option<T> {
    let table = client
        .update(statement.prepared(client), None, args)
        .or_fail(what);
    if table.is_empty() {
        return None;
    }
    table.first().get_one::<T>().or_fail(what)
}

/// Runs a writing statement and returns how many rows it affected (or returned).
pub fn run(
    client: &mut SpiClient<'_>,
    statement: &'static Statement,
    args: &[pgrx::datum::DatumWithOid],
    what: &str,
) -> usize {
    client
        .update(statement.prepared(client), None, args)
        .or_fail(what)
        .len()
}

/// Runs `f` in a subtransaction, as PL/pgSQL's exception blocks do: its writes stay if it
/// returns, and are rolled back if it raises, the error coming back as "SQLSTATE: message".
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // SAFETY: the subtransaction is begun and ended here, restoring the memory context and
    // resource owner as PL/pgSQL's exception blocks do.
    unsafe {
        let context = pgrx::pg_sys::CurrentMemoryContext;
        let owner = pgrx::pg_sys::CurrentResourceOwner;
        pgrx::pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pgrx::pg_sys::MemoryContextSwitchTo(context);
        let f = std::panic::AssertUnwindSafe(f);
        let result = pgrx::PgTryBuilder::new(move || Ok(f()))
            .catch_others(|e| {
                Err(match e {
                    pgrx::pg_sys::panic::CaughtError::PostgresError(report)
                    | pgrx::pg_sys::panic::CaughtError::ErrorReport(report) => {
                        format!(
                            "{}: {}",
                            sqlstate(report.sql_error_code()),
                            report.message()
                        )
                    }
                    pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                        ereport.message().to_string()
                    }
                })
            })
            .execute();
        if result.is_ok() {
            pgrx::pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pgrx::pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pgrx::pg_sys::MemoryContextSwitchTo(context);
        pgrx::pg_sys::CurrentResourceOwner = owner;
        result
    }
}

/// The five-character SQLSTATE of an error code.
pub fn sqlstate(code: pgrx::PgSqlErrorCode) -> String {
    let mut value = code as i32;
    (0..5)
        .map(|_| {
            let c = (((value & 0x3f) as u8) + b'0') as char;
            value >>= 6;
            c
        })
        .collect()
}
