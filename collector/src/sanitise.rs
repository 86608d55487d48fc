//! The last pass before anything is stored: every text value of every batch seam writes.
//!
//! Takes a table's Arrow batch as it is about to enter the write-ahead log (and every batch
//! replayed from it); gives the batch with
//! - every string (column values, list items, map keys and values, struct fields, whatever
//!   the nesting) scanned for tokens, Basic credentials and `name=value` secrets by the same
//!   scanner the normalise stage uses ([`TokenConfig::scan`]), and replaced by their markers;
//! - every value of a map whose key names a secret ([`is_sensitive_key`]) replaced whole,
//!   unless it already carries a marker;
//! - every string longer than the value cap cut, with `…[truncated by seam]` at the end (after
//!   scrubbing, so a cut never hides half a token from the scanner);
//! - at replay, rows whose `time` lies outside the event-time window split off, so that a
//!   record written by an older seam cannot take the server down at every start.
//!
//! The normalise stage already redacts what it knows the meaning of (and identifies tokens
//! for the token columns); this pass is the guarantee that no field anybody forgot, now or
//! later, stores a secret: seam_audit's SQL text, rejects' file names, error messages, keys.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, ListArray, MapArray, StringArray, StructArray,
    TimestampNanosecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::normalise::redact::{MARKER, is_sensitive_key};
use crate::normalise::time::TimeWindow;
use crate::normalise::token::TokenConfig;

/// Tables whose text is not capped (the audit trail keeps a statement whole; its length is
/// bounded by `query.max_sql_bytes`).
const UNCAPPED: &[&str] = &[seam_schemas::tables::seam_audit::TABLE];

/// What every stored batch goes through.
#[derive(Debug, Clone)]
pub struct Sanitiser {
    /// The scanner and its configured extra patterns and names.
    pub tokens: TokenConfig,
    /// Longest text value kept (bytes, before the truncation mark).
    pub max_value_bytes: usize,
    /// The accepted event-time window (applied at replay).
    pub window: TimeWindow,
}

impl Default for Sanitiser {
    fn default() -> Self {
        let limits = crate::config::LimitsConfig::default();
        Self {
            tokens: TokenConfig::default(),
            max_value_bytes: limits.max_attribute_value_bytes,
            window: limits.window(),
        }
    }
}

/// Rows of a replayed batch refused by the event-time window.
pub use seam_store::wal::Refused as OutOfWindow;

impl Sanitiser {
    /// A sanitiser with `tokens` and the limits' value cap and window.
    pub fn new(tokens: TokenConfig, limits: &crate::config::LimitsConfig) -> Self {
        Self {
            tokens,
            max_value_bytes: limits.max_attribute_value_bytes,
            window: limits.window(),
        }
    }

    /// `batch` with every string scrubbed and capped (see the module docs). Columns with
    /// nothing to change are kept as they are (no copy).
    ///
    /// # Errors
    /// Rebuilding a column failed (a bug: the shapes are taken from the input).
    pub fn batch(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let cap = (!UNCAPPED.contains(&table)).then_some(self.max_value_bytes);
        let mut columns: Option<Vec<ArrayRef>> = None;
        for (i, col) in batch.columns().iter().enumerate() {
            if let Some(new) = self.array(col, cap)? {
                columns.get_or_insert_with(|| batch.columns().to_vec())[i] = new;
            }
        }
        match columns {
            Some(c) => RecordBatch::try_new(batch.schema(), c),
            None => Ok(batch),
        }
    }

    /// One text value: `None` when it stays as it is.
    fn text(&self, v: &str, cap: Option<usize>) -> Option<String> {
        let scrubbed = self.tokens.scan(v).filter(|s| s.changed).map(|s| s.text);
        let current = scrubbed.as_deref().unwrap_or(v);
        match cap {
            Some(max) if current.len() > max => {
                let mut t = current.to_string();
                crate::normalise::attributes::truncate(&mut t, max);
                Some(t)
            }
            _ => scrubbed,
        }
    }

    fn array(&self, a: &ArrayRef, cap: Option<usize>) -> Result<Option<ArrayRef>, ArrowError> {
        Ok(match a.data_type() {
            DataType::Utf8 => self
                .strings(a.as_string::<i32>().iter(), cap)
                .map(|v| Arc::new(StringArray::from(v)) as ArrayRef),
            DataType::LargeUtf8 => self
                .strings(a.as_string::<i64>().iter(), cap)
                .map(|v| Arc::new(LargeStringArray::from(v)) as ArrayRef),
            DataType::List(field) => {
                let l = a.as_list::<i32>();
                match self.array(l.values(), cap)? {
                    Some(values) => Some(Arc::new(ListArray::try_new(
                        Arc::clone(field),
                        l.offsets().clone(),
                        values,
                        l.nulls().cloned(),
                    )?)),
                    None => None,
                }
            }
            DataType::Struct(fields) => {
                let s = a.as_struct();
                let mut cols: Option<Vec<ArrayRef>> = None;
                for (i, c) in s.columns().iter().enumerate() {
                    if let Some(new) = self.array(c, cap)? {
                        cols.get_or_insert_with(|| s.columns().to_vec())[i] = new;
                    }
                }
                match cols {
                    Some(c) => Some(Arc::new(StructArray::try_new(
                        fields.clone(),
                        c,
                        s.nulls().cloned(),
                    )?)),
                    None => None,
                }
            }
            DataType::Map(field, ordered) => {
                let m = a.as_map();
                self.map(m, cap)?
                    .map(|entries| {
                        MapArray::try_new(
                            Arc::clone(field),
                            m.offsets().clone(),
                            entries,
                            m.nulls().cloned(),
                            *ordered,
                        )
                    })
                    .transpose()?
                    .map(|m| Arc::new(m) as ArrayRef)
            }
            _ => None,
        })
    }

    /// The entries of a map with keys scrubbed, values under secret keys replaced whole and
    /// the other values scrubbed; `None` when nothing changes.
    fn map(&self, m: &MapArray, cap: Option<usize>) -> Result<Option<StructArray>, ArrowError> {
        let entries = m.entries();
        let (DataType::Utf8, DataType::Utf8) = (m.keys().data_type(), m.values().data_type())
        else {
            // Other shapes: scrub as a struct.
            let as_struct: ArrayRef = Arc::new(entries.clone());
            return Ok(self.array(&as_struct, cap)?.map(|a| a.as_struct().clone()));
        };
        let keys = m.keys().as_string::<i32>();
        let values = m.values().as_string::<i32>();
        let mut changed = false;
        let mut new_keys: Vec<Option<String>> = Vec::with_capacity(keys.len());
        let mut new_values: Vec<Option<String>> = Vec::with_capacity(values.len());
        for i in 0..keys.len() {
            let k = keys.is_valid(i).then(|| keys.value(i));
            let v = values.is_valid(i).then(|| values.value(i));
            let nk = k.and_then(|k| self.text(k, cap));
            let secret = k.is_some_and(is_sensitive_key);
            let nv = match v {
                Some(v) if secret && !v.contains("<redacted") => Some(MARKER.to_string()),
                Some(v) => self.text(v, cap),
                None => None,
            };
            changed |= nk.is_some() || nv.is_some();
            new_keys.push(nk.or_else(|| k.map(str::to_string)));
            new_values.push(nv.or_else(|| v.map(str::to_string)));
        }
        if !changed {
            return Ok(None);
        }
        let (fields, _, nulls) = entries.clone().into_parts();
        Ok(Some(StructArray::try_new(
            fields,
            vec![
                Arc::new(StringArray::from(new_keys)),
                Arc::new(StringArray::from(new_values)),
            ],
            nulls,
        )?))
    }

    /// The scrubbed and capped values, when any of them changes.
    fn strings<'a>(
        &self,
        values: impl Iterator<Item = Option<&'a str>> + Clone,
        cap: Option<usize>,
    ) -> Option<Vec<Option<String>>> {
        let mut out: Option<Vec<Option<String>>> = None;
        for (i, v) in values.clone().enumerate() {
            let Some(new) = v.and_then(|v| self.text(v, cap)) else {
                if let Some(o) = out.as_mut() {
                    o.push(v.map(str::to_string));
                }
                continue;
            };
            let o = out.get_or_insert_with(|| {
                values
                    .clone()
                    .take(i)
                    .map(|v| v.map(str::to_string))
                    .collect()
            });
            o.push(Some(new));
        }
        out
    }

    /// Splits the rows of `batch` whose `time` column lies outside the event-time window at
    /// `now_ns`: gives the batch of the others and the refused rows with their reasons.
    /// A batch without a `time` column is kept whole.
    ///
    /// # Errors
    /// Filtering the batch failed.
    pub fn split_window(
        &self,
        batch: RecordBatch,
        now_ns: i64,
    ) -> Result<(RecordBatch, Vec<OutOfWindow>), ArrowError> {
        let Some(times) = batch
            .column_by_name(seam_schemas::columns::TIME)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return Ok((batch, Vec::new()));
        };
        let mut refused = Vec::new();
        let keep: arrow::array::BooleanArray = times
            .iter()
            .enumerate()
            .map(|(row, t)| {
                let ok = match t {
                    Some(t) => match self.window.check(seam_schemas::columns::TIME, t, now_ns) {
                        Ok(_) => true,
                        Err(reason) => {
                            refused.push(OutOfWindow { row, reason });
                            false
                        }
                    },
                    None => true,
                };
                Some(ok)
            })
            .collect();
        if refused.is_empty() {
            return Ok((batch, refused));
        }
        Ok((filter_record_batch(&batch, &keep)?, refused))
    }
}

/// The write-ahead log calls the collector's sanitiser on every batch it logs or replays.
impl seam_store::wal::Sanitise for Sanitiser {
    fn batch(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        Sanitiser::batch(self, table, batch)
    }

    fn split_window(
        &self,
        batch: RecordBatch,
        now_ns: i64,
    ) -> Result<(RecordBatch, Vec<OutOfWindow>), ArrowError> {
        Sanitiser::split_window(self, batch, now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::attributes::TRUNCATED_MARK;
    use arrow::array::{MapBuilder, StringBuilder};
    use arrow::datatypes::{Field, Schema};

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJ1dGkiOiJ1dGktMSJ9.c2lnbmF0dXJl";

    fn batch() -> RecordBatch {
        let mut mb = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        mb.keys().append_value("x-auth-token");
        mb.values().append_value("opaque-secret-value");
        mb.keys().append_value(format!("weird-{JWT}"));
        mb.values().append_value("fine");
        mb.append(true).unwrap();
        let map = mb.finish();
        let text = StringArray::from(vec![Some(format!("user said Bearer  {JWT}")), None]);
        let schema = Schema::new(vec![
            Field::new("note", DataType::Utf8, true),
            Field::new("attrs", map.data_type().clone(), true),
        ]);
        let mut mb2 = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        mb2.append(false).unwrap();
        let map2 = mb2.finish();
        let maps = arrow::compute::concat(&[&map, &map2]).unwrap();
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(text), maps]).unwrap()
    }

    #[test]
    fn scrubs_values_keys_and_secret_map_values() {
        let s = Sanitiser::default();
        let out = s.batch("logs", batch()).unwrap();
        let shown = arrow::util::pretty::pretty_format_batches(&[out])
            .unwrap()
            .to_string();
        assert!(!shown.contains("eyJhbGci"), "{shown}");
        assert!(!shown.contains("opaque-secret-value"), "{shown}");
        assert!(shown.contains("x-auth-token"), "{shown}");
        assert!(shown.contains("fine"), "{shown}");
    }

    #[test]
    fn caps_long_text_after_scrubbing() {
        let s = Sanitiser {
            max_value_bytes: 64,
            ..Default::default()
        };
        let long = format!("{} Bearer {JWT}", "a".repeat(60));
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8, true)]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec![long.as_str()]))],
        )
        .unwrap();
        let out = s.batch("flow_logs", b.clone()).unwrap();
        let v = out.column(0).as_string::<i32>().value(0).to_string();
        assert!(v.ends_with(TRUNCATED_MARK) && !v.contains("eyJ"), "{v}");
        // The audit trail keeps a statement whole.
        let kept = s.batch("seam_audit", b).unwrap();
        assert!(
            !kept
                .column(0)
                .as_string::<i32>()
                .value(0)
                .ends_with(TRUNCATED_MARK)
        );
    }

    #[test]
    fn unchanged_batches_are_not_copied() {
        let s = Sanitiser::default();
        let schema = Schema::new(vec![Field::new("t", DataType::Utf8, true)]);
        let col: ArrayRef = Arc::new(StringArray::from(vec!["GET /orders", "status ok"]));
        let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::clone(&col)]).unwrap();
        let out = s.batch("logs", b).unwrap();
        assert!(Arc::ptr_eq(out.column(0), &col));
    }
}
