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
