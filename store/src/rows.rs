//! Generic rows for the gateway and flow tables: a record is a vector of [`Cell`]s in its
//! table's column order, and [`batch`] turns rows into a `RecordBatch` of that schema.
//!
//! Takes rows built by the collector's sources (gateway and flow records, replay rejects); gives
//! Arrow batches. The OTLP tables keep their typed builders (their hot path is measured);
//! these tables have many optional columns, and parsing the text dominates their cost.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use seam_schemas::token::{self, TokenColumns};

/// One attribute: a key and its value (NULL when the source sent an empty or non-text
/// value). Maps are stored as lists of these.
pub type Attr = (String, Option<String>);

/// One value.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Cell {
    /// NULL.
    #[default]
    Null,
    /// Text.
    Str(String),
    /// 32-bit integer.
    I32(i32),
    /// 64-bit integer.
    I64(i64),
    /// Double.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTC nanoseconds.
    Ts(i64),
    /// Map of text to text.
    Map(Vec<Attr>),
    /// List of text.
    List(Vec<String>),
}

impl Cell {
    /// Text, or NULL.
    pub fn text(v: Option<String>) -> Self {
        v.map_or(Cell::Null, Cell::Str)
    }
}

/// A table's columns by name.
#[derive(Debug, Clone)]
pub struct Columns {
    schema: SchemaRef,
    index: HashMap<String, usize>,
}

impl Columns {
    /// The columns of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let index = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        Self { schema, index }
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// An all-NULL row.
    pub fn row(&self) -> Row {
        Row {
            cells: vec![Cell::Null; self.schema.fields().len()],
            unknown: Vec::new(),
        }
    }

    /// Sets a column of `row`. A name the schema lacks is a programming error that fails
    /// loudly in every build: the row remembers it and [`batch`] refuses to build (an
    /// internal, retryable error), so a typo can never store NULL silently.
    pub fn set(&self, row: &mut Row, name: &str, cell: Cell) {
        match self.index.get(name) {
            Some(&i) => row.cells[i] = cell,
            None => row.unknown.push(name.to_string()),
        }
    }

    /// Reads a column of `row`.
    pub fn get<'a>(&self, row: &'a Row, name: &str) -> &'a Cell {
        self.index.get(name).map_or(&Cell::Null, |&i| &row.cells[i])
    }

    /// Sets the token columns ([`token::COLUMNS`]) from their stored form; a holder of a
    /// `TokenIdentity` passes `&(&identity).into()`. An empty scope or role list is NULL.
    pub fn set_token(&self, row: &mut Row, t: &TokenColumns) {
        let s = |v: &Option<String>| Cell::text(v.clone());
        let ts = |v: Option<i64>| v.map_or(Cell::Null, Cell::Ts);
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                Cell::Null
            } else {
                Cell::List(v.clone())
            }
        };
        self.set(row, token::TOKEN_ID, s(&t.token_id));
        self.set(row, token::TOKEN_UTI, s(&t.uti));
        self.set(row, token::SUBJECT, s(&t.subject));
        self.set(row, token::TOKEN_OBJECT_ID, s(&t.object_id));
        self.set(row, token::CLIENT_APP, s(&t.client_app));
        self.set(row, token::TENANT_ID, s(&t.tenant_id));
        self.set(row, token::TOKEN_ISSUER, s(&t.issuer));
        self.set(row, token::TOKEN_AUDIENCE, s(&t.audience));
        self.set(row, token::TOKEN_ISSUED_AT, ts(t.issued_at));
        self.set(row, token::TOKEN_EXPIRES_AT, ts(t.expires_at));
        self.set(row, token::TOKEN_SCOPES, list(&t.scopes));
        self.set(row, token::TOKEN_ROLES, list(&t.roles));
        self.set(row, token::TOKEN_TYPE, s(&t.token_type));
    }
}

/// One row, cells in column order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The cells.
    pub cells: Vec<Cell>,
    /// Column names set that the schema lacks (a bug; [`batch`] refuses such rows).
    pub unknown: Vec<String>,
}

impl Columns {
    /// A bit per column that is not NULL in `row`, leaving out the columns in `skip`
    /// (bookkeeping such as ingest time and source position): which fields a copy has. Past
    /// 64 counted columns, bits are shared.
    pub fn mask(&self, row: &Row, skip: &[&str]) -> u64 {
        self.schema
            .fields()
            .iter()
            .zip(&row.cells)
            .filter(|(f, _)| !skip.contains(&f.name().as_str()))
            .enumerate()
            .filter(|(_, (_, c))| !matches!(c, Cell::Null))
            .fold(0, |m, (i, _)| m | (1 << (i % 64)))
    }
}

fn mismatch(f: &Field, c: &Cell) -> ArrowError {
    ArrowError::InvalidArgumentError(format!(
        "column {} ({}) cannot hold {c:?}",
        f.name(),
        f.data_type()
    ))
}

fn column(f: &Field, i: usize, rows: &[Row]) -> Result<ArrayRef, ArrowError> {
    let n = rows.len();
    let cells = rows.iter().map(|r| r.cells.get(i).unwrap_or(&Cell::Null));
    Ok(match f.data_type() {
        DataType::Utf8 => {
            let bytes = cells
                .clone()
                .map(|c| if let Cell::Str(s) = c { s.len() } else { 0 })
                .sum();
            let mut b = StringBuilder::with_capacity(n, bytes);
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::Str(s) => b.append_value(s),
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int32 => {
            let mut b = Int32Builder::with_capacity(n);
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::I32(v) => b.append_value(*v),
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::I64(v) => b.append_value(*v),
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::F64(v) => b.append_value(*v),
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::Bool(v) => b.append_value(*v),
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(_, tz) => {
            let mut b = TimestampNanosecondBuilder::with_capacity(n);
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::Ts(v) => b.append_value(*v),
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish().with_timezone_opt(tz.clone()))
        }
        DataType::Map(_, _) => {
            let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for c in cells {
                match c {
                    Cell::Null => b.append(false)?,
                    Cell::Map(entries) => {
                        for (k, v) in entries {
                            b.keys().append_value(k);
                            b.values().append_option(v.as_deref());
                        }
                        b.append(true)?;
                    }
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::List(item) => {
            let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::clone(item));
            for c in cells {
                match c {
                    Cell::Null => b.append(false),
                    Cell::List(items) => {
                        for v in items {
                            b.values().append_value(v);
                        }
                        b.append(true);
                    }
                    other => return Err(mismatch(f, other)),
                }
            }
            Arc::new(b.finish())
        }
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "row column type {other}"
            )));
        }
    })
}

/// Builds a batch of `columns`' schema from `rows`.
///
/// # Errors
/// A cell whose type does not fit its column (a programming error), or a NULL in a
/// non-nullable column.
pub fn batch(columns: &Columns, rows: &[Row]) -> Result<RecordBatch, ArrowError> {
    let schema = columns.schema();
    if let Some(name) = rows.iter().find_map(|r| r.unknown.first()) {
        return Err(ArrowError::SchemaError(format!(
            "seam wrote to a column {name:?} that the table does not have (a bug)"
        )));
    }
    let arrays = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| column(f, i, rows))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_column_fails_the_batch_in_every_build() {
        let cols = Columns::new(seam_schemas::tables::rejects::schema());
        let mut row = cols.row();
        cols.set(&mut row, "reason", Cell::Str("r".into()));
        cols.set(&mut row, "reasonn", Cell::Str("typo".into()));
        let e = batch(&cols, &[row]).unwrap_err().to_string();
        assert!(e.contains("\"reasonn\""), "{e}");
    }
}
