//! `jsonb` values handed through untouched. pgrx's `JsonB` converts every value through
//! serde_json, which refuses JSON that jsonb accepts (`1e400`, arrays 200 levels deep) with a
//! panic: metadata and answers built by PostgreSQL stay PostgreSQL's here, never parsed in Rust.
use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::memcxt::PgMemoryContexts;
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable,
};
use pgrx::{FromDatum, IntoDatum};

/// A jsonb datum, valid for the duration of the function call that received or built it.
#[derive(Clone, Copy)]
pub struct RawJsonb(pg_sys::Datum);

impl FromDatum for RawJsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(RawJsonb(datum))
    }

    /// Copied into `memory_context`: a value read through SPI outlives the SPI connection.
    unsafe fn from_datum_in_memory_context(
        mut memory_context: PgMemoryContexts,
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a jsonb varlena, detoasted into a copy in the target context.
        memory_context.switch_to(|_| unsafe {
            let copy = pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr());
            Some(RawJsonb(pg_sys::Datum::from(copy)))
        })
    }
}

impl IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

/// JSON text our own code built, as jsonb in the current memory context: what `$1::jsonb`
/// would give, without running a statement.
pub fn parse(text: &str) -> RawJsonb {
    let text = std::ffi::CString::new(text)
        .unwrap_or_else(|_| crate::errors::internal("answering", "a NUL byte in JSON text"));
    // SAFETY: jsonb_in reads a NUL-terminated string and returns a palloc'd jsonb (or raises).
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::jsonb_in,
            &[Some(pg_sys::Datum::from(text.as_ptr()))],
        )
    }
    .map(RawJsonb)
    .unwrap_or_else(|| crate::errors::internal("answering", "jsonb_in returned NULL"))
}

/// An answer our own code built, as jsonb in the current memory context, without a text
/// round trip: each value is pushed as PostgreSQL's own parser would push it (numbers through
/// `numeric_in`, keys sorted and made unique by `pushJsonbValue`), so the result is the same
/// jsonb `parse(&value.to_string())` gives.
pub fn build(value: &serde_json::Value) -> RawJsonb {
    use serde_json::Value;
    if !matches!(value, Value::Object(_) | Value::Array(_)) {
        // A bare scalar is stored as a one-element "raw scalar" array: leave it to jsonb_in.
        return parse(&value.to_string());
    }
    let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
    // SAFETY: pushJsonbValue builds in the current memory context from values whose strings
    // (borrowed from `value`) outlive the build; JsonbValueToJsonb copies them out.
    unsafe {
        let top = push(&mut state, value);
        RawJsonb(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(top)))
    }
}

/// Pushes a container (its opening, members and closing) and returns what closing it gave.
unsafe fn push(
    state: &mut *mut pg_sys::JsonbParseState,
    value: &serde_json::Value,
) -> *mut pg_sys::JsonbValue {
    use pg_sys::JsonbIteratorToken::*;
    use serde_json::Value;
    // SAFETY: see build().
    unsafe {
        match value {
            Value::Object(members) => {
                pg_sys::pushJsonbValue(state, WJB_BEGIN_OBJECT, std::ptr::null_mut());
                // Pushed in jsonb's own key order (shorter keys first, then bytewise), so the
                // sort that closing the object runs finds them sorted in one pass.
                let mut members: Vec<_> = members.iter().collect();
                members.sort_unstable_by(|(a, _), (b, _)| {
                    a.len()
                        .cmp(&b.len())
                        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                });
                for (key, member) in members {
                    let mut key = string(key);
                    pg_sys::pushJsonbValue(state, WJB_KEY, &mut key);
                    member_value(state, member, WJB_VALUE);
                }
                pg_sys::pushJsonbValue(state, WJB_END_OBJECT, std::ptr::null_mut())
            }
            Value::Array(elements) => {
                pg_sys::pushJsonbValue(state, WJB_BEGIN_ARRAY, std::ptr::null_mut());
                for element in elements {
                    member_value(state, element, WJB_ELEM);
                }
                pg_sys::pushJsonbValue(state, WJB_END_ARRAY, std::ptr::null_mut())
            }
            _ => crate::errors::internal("answering", "a scalar pushed as a container"),
        }
    }
}

/// Pushes one member of a container: a nested container, or a scalar as `token`.
unsafe fn member_value(
    state: &mut *mut pg_sys::JsonbParseState,
    value: &serde_json::Value,
    token: pg_sys::JsonbIteratorToken::Type,
) {
    use serde_json::Value;
    // SAFETY: see build().
    unsafe {
        let mut scalar = match value {
            Value::Object(_) | Value::Array(_) => {
                push(state, value);
                return;
            }
            Value::Null => scalar_of(pg_sys::jbvType::jbvNull),
            Value::Bool(b) => {
                let mut v = scalar_of(pg_sys::jbvType::jbvBool);
                v.val.boolean = *b;
                v
            }
            Value::Number(n) => {
                let text = std::ffi::CString::new(n.to_string())
                    .unwrap_or_else(|_| crate::errors::internal("answering", "a number"));
                let numeric = pgrx::direct_function_call_as_datum(
                    pg_sys::numeric_in,
                    &[
                        Some(pg_sys::Datum::from(text.as_ptr())),
                        Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                        Some(pg_sys::Datum::from(-1i32)),
                    ],
                )
                .unwrap_or_else(|| {
                    crate::errors::internal("answering", "numeric_in returned NULL")
                });
                let mut v = scalar_of(pg_sys::jbvType::jbvNumeric);
                v.val.numeric = numeric.cast_mut_ptr();
                v
            }
            Value::String(s) => string(s),
        };
        pg_sys::pushJsonbValue(state, token, &mut scalar);
    }
}

fn scalar_of(kind: pg_sys::jbvType::Type) -> pg_sys::JsonbValue {
    // SAFETY: an all-zero JsonbValue is a valid value of every kind; the caller sets its field.
    let mut v: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    v.type_ = kind;
    v
}

/// A jsonb string borrowing `s` (text may not hold a NUL byte, as jsonb_in refuses \u0000).
fn string(s: &str) -> pg_sys::JsonbValue {
    if s.contains('\0') {
        crate::errors::internal("answering", "a NUL byte in a JSON string");
    }
    let mut v = scalar_of(pg_sys::jbvType::jbvString);
    v.val.string.len = i32::try_from(s.len())
        .unwrap_or_else(|_| crate::errors::internal("answering", "a string too long for jsonb"));
    v.val.string.val = s.as_ptr() as *mut std::ffi::c_char;
    v
}

unsafe impl<'fcx> ArgAbi<'fcx> for RawJsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the argument is declared jsonb in SQL.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| crate::errors::null_argument(&format!("argument {index}")))
    }
}

unsafe impl BoxRet for RawJsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        // SAFETY: a jsonb datum in memory that outlives the call.
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawJsonb);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// A uuid as answers spell it (lower-case, hyphenated), without pgrx's per-byte formatting:
/// the per-request answers name one or two.
pub fn uuid_text(u: &pgrx::Uuid) -> String {
    uuid::Uuid::from_bytes(*u.as_bytes())
        .hyphenated()
        .to_string()
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    /// Built directly, an answer is the very jsonb its text would parse to: same value, same
    /// text (numbers as numeric_in reads them, keys sorted, nesting and escapes kept).
    #[pg_test]
    fn built_jsonb_equals_parsed_text() {
        let value = json!({
            "limit": 100, "usage": 12.5, "remaining": -3, "big": 9007199254740993u64,
            "tiny": 1.0e-7, "allowed": true, "enabled": false, "reason": null,
            "name": "Zoë \"quoted\" \\ back\nslash \u{1F600}", "": "empty key",
            "nested": {"b": [1, "two", {"c": [null, [], {}]}], "a": {}},
            "list": [0.1, 2, -0.0, "x"]
        });
        let built = super::build(&value);
        let parsed = super::parse(&value.to_string());
        let same = Spi::get_one_with_args::<bool>(
            "SELECT $1 = $2 AND $1::text = $2::text AND jsonb_typeof($1 -> 'nested' -> 'b') = 'array'",
            &[Some(built).into(), Some(parsed).into()],
        )
        .unwrap();
        assert_eq!(same, Some(true));
        let array = super::build(&json!([1, {"k": "v"}]));
        let text =
            Spi::get_one_with_args::<String>("SELECT $1::text", &[Some(array).into()]).unwrap();
        assert_eq!(text.as_deref(), Some(r#"[1, {"k": "v"}]"#));
    }
}
