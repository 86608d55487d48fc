//! Output caps for the functions that build values larger than their input.
//!
//! Takes DataFusion's built-in functions; gives seam's versions of them under the same names
//! ([`install`]). Before building anything, each computes from its arguments an upper bound of
//! the bytes it is about to produce for the batch, and fails with "resources exhausted" when
//! that is over `query.max_function_output_bytes`: the values a function builds are not counted
//! in the statement's memory pool, so `repeat('x', 2000000000)` would otherwise allocate 2 GB
//! on the spot. Capped: `repeat`, `lpad`, `rpad`, `replace`, `regexp_replace`, `concat`,
//! `concat_ws`, `array_repeat`, `array_resize`, `array_to_string`, `range` and
//! `generate_series` (the scalar, array-building forms; the table functions of the same names
//! stream their rows), `encode`, `upper`, `lower`, `initcap`, `translate`,
//! `string_to_array`, `make_array`, `array_concat`, `array_append`, `array_prepend`,
//! `overlay`, `levenshtein` (its work: the product of the lengths), and `||` on text, which is planned
//! as `seam_text_concat` (same result, NULL when either side is NULL). Aggregates such as
//! `string_agg` and `array_agg` need no cap: their state is counted in the memory pool.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::concat_elements::concat_elements_utf8;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// How a function's output size is bounded from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    /// `repeat(text, n)`: the text's bytes times `n`.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: the text plus `n` characters of the fill.
    Pad,
    /// `replace(text, from, to)`: every occurrence of `from` replaced by `to`.
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: at most one match per position.
    RegexpReplace,
    /// `concat(…)`: the sum of the arguments.
    Concat,
    /// `concat_ws(separator, …)`: the sum of the arguments and a separator between each.
    ConcatWs,
    /// `array_repeat(element, n)`: `n` elements.
    ArrayRepeat,
    /// `range`/`generate_series(start, stop, step)`: one element per step.
    Range,
    /// `array_to_string(list, separator [, null_text])`: the elements as text, and a
    /// separator (or the null text) per element.
    Join,
    /// `array_resize(list, n [, value])`: `n` elements.
    Resize,
    /// Functions whose output is at most `factor` times their first argument's bytes:
    /// `encode` (hex doubles).
    Scale(u8),
    /// Case mapping: ASCII text keeps its size, other text may triple (`ΐ` to `Ϊ́`).
    Case,
    /// `translate(text, from, to)`: one character per input character, at most as wide as
    /// the widest of `to` (ASCII `to`: the input's size).
    Translate,
    /// `string_to_array(text, separator)`: the text and an offset per element.
    Split,
    /// `make_array`, `array_concat`, `array_append`, `array_prepend`, `overlay`: the sum of
    /// the arguments' bytes.
    Sum,
    /// `levenshtein(a, b)`: not bytes but work (its length product), bounded by the same
    /// cap so that one call cannot keep a query thread busy for minutes inside one batch.
    Product,
}

/// The capped functions: DataFusion's name, and how each is bounded.
const CAPPED: &[(&str, Bound)] = &[
    ("repeat", Bound::Repeat),
    ("lpad", Bound::Pad),
    ("rpad", Bound::Pad),
    ("replace", Bound::Replace),
    ("regexp_replace", Bound::RegexpReplace),
    ("concat", Bound::Concat),
    ("concat_ws", Bound::ConcatWs),
    ("array_repeat", Bound::ArrayRepeat),
    ("range", Bound::Range),
    ("generate_series", Bound::Range),
    ("array_to_string", Bound::Join),
    ("array_resize", Bound::Resize),
    ("encode", Bound::Scale(2)),
    ("upper", Bound::Case),
    ("lower", Bound::Case),
    ("initcap", Bound::Case),
    ("translate", Bound::Translate),
    ("string_to_array", Bound::Split),
    ("make_array", Bound::Sum),
    ("array_concat", Bound::Sum),
    ("array_append", Bound::Sum),
    ("array_prepend", Bound::Sum),
    ("overlay", Bound::Sum),
    ("levenshtein", Bound::Product),
];

/// `state` with the capped functions in place of DataFusion's, and `||` on text planned as
/// the capped `seam_text_concat`.
pub fn install(state: SessionState, cap: usize) -> SessionState {
    let capped: Vec<Arc<ScalarUDF>> = CAPPED
        .iter()
        .filter_map(|(name, bound)| {
            let inner = state.scalar_functions().get(*name)?;
            Some(Arc::new(ScalarUDF::new_from_impl(Capped {
                inner: inner.as_ref().clone(),
                cap,
                bound: *bound,
            })))
        })
        .collect();
    let text_concat = Arc::new(ScalarUDF::new_from_impl(TextConcat::new(cap)));
    let mut planners: Vec<Arc<dyn ExprPlanner>> = vec![Arc::new(TextConcatPlanner {
        udf: Arc::clone(&text_concat),
    })];
    planners.extend(state.expr_planners().iter().cloned());
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_expr_planners(planners)
        .build();
    for udf in capped.into_iter().chain([text_concat]) {
        // Replaces the function of the same name (and aliases); never fails.
        let _ = state.register_udf(udf);
    }
    state
}

fn too_large(name: &str, bytes: u128, cap: usize) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{name} would build {bytes} bytes for one batch of rows, more than \
         query.max_function_output_bytes ({cap} bytes)"
    ))
}

/// The text of a text argument in row `i` (`None` for nulls and other types).
fn str_at(arg: &ColumnarValue, i: usize) -> Option<&str> {
    match arg {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v),
        ) => v.as_deref(),
        ColumnarValue::Scalar(_) => None,
        ColumnarValue::Array(a) => {
            if a.is_null(i) {
                None
            } else if let Some(s) = a.as_string_opt::<i32>() {
                Some(s.value(i))
            } else if let Some(s) = a.as_string_opt::<i64>() {
                Some(s.value(i))
            } else {
                a.as_string_view_opt().map(|s| s.value(i))
            }
        }
    }
}

/// Bytes of the value of `arg` in row `i` as text (its display text for other types).
fn text_len(arg: &ColumnarValue, i: usize) -> u128 {
    if let Some(s) = str_at(arg, i) {
        return s.len() as u128;
    }
    let value = match arg {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) => {
            if a.is_null(i) {
                return 0;
            }
            if let Some(b) = a.as_binary_opt::<i32>() {
                return b.value(i).len() as u128;
            }
            if let Some(b) = a.as_binary_opt::<i64>() {
                return b.value(i).len() as u128;
            }
            if let Some(b) = a.as_binary_view_opt() {
                return b.value(i).len() as u128;
            }
            if a.data_type().is_primitive() || a.data_type() == &DataType::Boolean {
                // Numbers, dates, times and intervals print in at most this many bytes.
                return 96;
            }
            ScalarValue::try_from_array(a.as_ref(), i).ok()
        }
    };
    match value {
        Some(v) if !v.is_null() => match &v {
            ScalarValue::Binary(Some(b))
            | ScalarValue::LargeBinary(Some(b))
            | ScalarValue::BinaryView(Some(b)) => b.len() as u128,
            other => other.to_string().len() as u128,
        },
        _ => 0,
    }
}

fn scalar_int(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int64(v) => *v,
        ScalarValue::Int32(v) => v.map(i64::from),
        ScalarValue::Int16(v) => v.map(i64::from),
        ScalarValue::Int8(v) => v.map(i64::from),
        ScalarValue::UInt64(v) => v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        ScalarValue::UInt32(v) => v.map(i64::from),
        ScalarValue::UInt16(v) => v.map(i64::from),
        ScalarValue::UInt8(v) => v.map(i64::from),
        _ => None,
    }
}

/// The value of `arg` in row `i`.
fn scalar_at(arg: &ColumnarValue, i: usize) -> Option<ScalarValue> {
    match arg {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(a.as_ref(), i).ok(),
    }
}

/// The integer of `arg` in row `i` (`None` for nulls).
fn int_at(arg: &ColumnarValue, i: usize) -> Option<i64> {
    match arg {
        ColumnarValue::Scalar(s) => scalar_int(s),
        ColumnarValue::Array(a) => {
            if a.is_null(i) {
                None
            } else if let Some(p) = a.as_primitive_opt::<Int64Type>() {
                Some(p.value(i))
            } else {
                scalar_at(arg, i).as_ref().and_then(scalar_int)
            }
        }
    }
}

/// A non-negative count.
fn count_at(arg: Option<&ColumnarValue>, i: usize) -> u128 {
    arg.and_then(|a| int_at(a, i))
        .map_or(0, |n| u128::try_from(n).unwrap_or(0))
}

/// Bytes of one element of `array_repeat`'s element argument in row `i`.
fn element_bytes(arg: &ColumnarValue, i: usize) -> u128 {
    if let Some(w) = arg.data_type().primitive_width() {
        return w as u128;
    }
    if let Some(s) = str_at(arg, i) {
        return s.len() as u128 + 4;
    }
    match arg {
        ColumnarValue::Scalar(s) => s.size() as u128,
        ColumnarValue::Array(a) => {
            if a.is_null(i) {
                1
            } else {
                ScalarValue::try_from_array(a.as_ref(), i).map_or(64, |s| s.size() as u128)
            }
        }
    }
}

const DAY_NS: i128 = 86_400_000_000_000;
const HOUR_NS: i128 = 3_600_000_000_000;

/// A date or timestamp in nanoseconds since the epoch.
fn instant_ns(v: &ScalarValue) -> Option<i128> {
    match v {
        ScalarValue::Date32(Some(d)) => Some(i128::from(*d) * DAY_NS),
        ScalarValue::Date64(Some(ms)) => Some(i128::from(*ms) * 1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => Some(i128::from(*v) * 1_000_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => Some(i128::from(*v) * 1_000_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(i128::from(*v) * 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(i128::from(*v)),
        _ => None,
    }
}

/// Elements from `start` to `stop` by `step` (an upper bound; `None` when it cannot be told).
fn steps(span: i128, min_step: i128, max_step: i128) -> Option<u128> {
    use std::cmp::Ordering;
    let n = match span.cmp(&0) {
        Ordering::Equal => 1,
        Ordering::Greater if min_step > 0 => span / min_step + 1,
        Ordering::Greater if max_step <= 0 => 0,
        Ordering::Less if max_step < 0 => span / max_step + 1,
        Ordering::Less if min_step >= 0 => 0,
        _ => return None,
    };
    u128::try_from(n).ok()
}

/// Elements `range`/`generate_series` builds for row `i`.
fn range_len(args: &[ColumnarValue], i: usize) -> Result<u128> {
    let values: Vec<ScalarValue> = match args
        .iter()
        .map(|a| scalar_at(a, i))
        .collect::<Option<Vec<_>>>()
    {
        Some(v) => v,
        None => return Ok(0),
    };
    if values.iter().any(ScalarValue::is_null) {
        return Ok(0);
    }
    let ints: Option<Vec<i64>> = values.iter().map(scalar_int).collect();
    let unknown = || {
        DataFusionError::ResourcesExhausted(
            "cannot tell how many values this range would build (use a step of whole days \
             or months)"
                .into(),
        )
    };
    if let Some(ints) = ints {
        let (start, stop, step) = match ints.as_slice() {
            [stop] => (0, *stop, 1),
            [start, stop] => (*start, *stop, 1),
            [start, stop, step] => (*start, *stop, *step),
            _ => return Ok(0),
        };
        if step == 0 {
            return Ok(0);
        }
        let step = i128::from(step);
        return steps(i128::from(stop) - i128::from(start), step, step).ok_or_else(unknown);
    }
    match values.as_slice() {
        [start, stop, ScalarValue::IntervalMonthDayNano(Some(step))] => {
            let (Some(start), Some(stop)) = (instant_ns(start), instant_ns(stop)) else {
                return Err(unknown());
            };
            let (m, d, n) = (
                i128::from(step.months),
                i128::from(step.days),
                i128::from(step.nanoseconds),
            );
            // Months are 28 to 31 days, days 23 to 25 hours (daylight saving time).
            let month = |longest: bool| if longest { 31 * DAY_NS } else { 28 * DAY_NS };
            let day = |longest: bool| {
                if longest {
                    DAY_NS + HOUR_NS
                } else {
                    DAY_NS - HOUR_NS
                }
            };
            let min_step = m * month(m < 0) + d * day(d < 0) + n;
            let max_step = m * month(m > 0) + d * day(d > 0) + n;
            steps(stop - start, min_step, max_step).ok_or_else(unknown)
        }
        _ => Err(unknown()),
    }
}

/// A list argument as an array (a constant becomes one row).
fn list_array(arg: &ColumnarValue) -> Option<ArrayRef> {
    match arg {
        ColumnarValue::Scalar(s) => s.to_array().ok(),
        ColumnarValue::Array(a) => Some(Arc::clone(a)),
    }
}

/// Elements of the list in row `i` of `list` (row 0 for a constant).
fn list_len(arg: &ColumnarValue, list: &ArrayRef, i: usize) -> u128 {
    let i = if matches!(arg, ColumnarValue::Scalar(_)) {
        0
    } else {
        i
    };
    if i >= list.len() || list.is_null(i) {
        return 0;
    }
    if let Some(l) = list.as_list_opt::<i32>() {
        u128::try_from(l.value_length(i)).unwrap_or(0)
    } else if let Some(l) = list.as_list_opt::<i64>() {
        u128::try_from(l.value_length(i)).unwrap_or(0)
    } else if let Some(l) = list.as_fixed_size_list_opt() {
        u128::try_from(l.value_length()).unwrap_or(0)
    } else {
        0
    }
}

/// Bytes of every element of `list` as text (all rows together).
fn list_text_bytes(list: &ArrayRef) -> u128 {
    let values = if let Some(l) = list.as_list_opt::<i32>() {
        Arc::clone(l.values())
    } else if let Some(l) = list.as_list_opt::<i64>() {
        Arc::clone(l.values())
    } else if let Some(l) = list.as_fixed_size_list_opt() {
        Arc::clone(l.values())
    } else {
        return 0;
    };
    match cast(&values, &DataType::Utf8) {
        Ok(text) => text
            .as_string_opt::<i32>()
            .map_or(0, |s| s.values().len() as u128),
        Err(_) => (values.get_array_memory_size() as u128).saturating_mul(4),
    }
}

/// An upper bound of the bytes `bound`'s function builds for `args` over `rows` rows.
fn output_bytes(bound: Bound, args: &[ColumnarValue], rows: usize) -> Result<u128> {
    let arg = |k: usize| args.get(k);
    let len = |k: usize, i: usize| arg(k).map_or(0, |a| text_len(a, i));
    let list = match bound {
        Bound::Join => arg(0).and_then(list_array),
        _ => None,
    };
    let mut total: u128 = 0;
    for i in 0..rows {
        let row = match bound {
            Bound::Repeat => len(0, i).saturating_mul(count_at(arg(1), i)),
            Bound::Pad => {
                let width = match arg(2) {
                    None => 1,
                    Some(fill) => match str_at(fill, i) {
                        Some(f) if f.is_ascii() => 1,
                        _ => 4,
                    },
                };
                len(0, i).saturating_add(count_at(arg(1), i).saturating_mul(width))
            }
            Bound::Replace => {
                let text = len(0, i);
                let from = len(1, i).max(1);
                (text / from + 1)
                    .saturating_mul(len(2, i))
                    .saturating_add(text)
            }
            Bound::RegexpReplace => {
                let text = len(0, i);
                let references = arg(2)
                    .and_then(|a| str_at(a, i))
                    .map_or(0, |r| r.matches(['\\', '$']).count() as u128);
                (text + 1)
                    .saturating_mul(len(2, i))
                    .saturating_add(references.saturating_mul(text))
                    .saturating_add(text)
            }
            Bound::Concat => (0..args.len()).map(|k| len(k, i)).sum::<u128>(),
            Bound::ConcatWs => {
                let separators = len(0, i).saturating_mul(args.len() as u128);
                (1..args.len())
                    .map(|k| len(k, i))
                    .sum::<u128>()
                    .saturating_add(separators)
            }
            Bound::ArrayRepeat => match arg(0) {
                Some(e) => count_at(arg(1), i).saturating_mul(element_bytes(e, i)),
                None => 0,
            },
            Bound::Range => range_len(args, i)?.saturating_mul(8),
            Bound::Join => match (arg(0), list.as_ref()) {
                (Some(a), Some(l)) => list_len(a, l, i).saturating_mul(len(1, i) + len(2, i)),
                _ => 0,
            },
            Bound::Resize => {
                let element = arg(2).map_or(8, |v| element_bytes(v, i));
                count_at(arg(1), i).saturating_mul(element.saturating_add(8))
            }
            Bound::Scale(f) => len(0, i).saturating_mul(u128::from(f)).saturating_add(8),
            Bound::Case => {
                let ascii = arg(0).and_then(|a| str_at(a, i)).is_none_or(str::is_ascii);
                len(0, i).saturating_mul(if ascii { 1 } else { 3 })
            }
            Bound::Translate => {
                let to = arg(2).and_then(|a| str_at(a, i));
                let width = to.map_or(4, |t| t.chars().map(char::len_utf8).max().unwrap_or(1));
                len(0, i).saturating_mul(width as u128)
            }
            Bound::Split => {
                let text = len(0, i);
                let sep = len(1, i).max(1);
                text.saturating_add((text / sep + 1).saturating_mul(8))
            }
            Bound::Sum => args
                .iter()
                .map(|a| element_bytes(a, i).max(text_len(a, i)))
                .fold(0u128, u128::saturating_add),
            Bound::Product => len(0, i).saturating_mul(len(1, i)),
        };
        total = total.saturating_add(row);
    }
    if let (Bound::Join, Some(a), Some(l)) = (bound, arg(0), list.as_ref()) {
        // The elements themselves, once per row when the list is a constant.
        let copies = if matches!(a, ColumnarValue::Scalar(_)) {
            rows as u128
        } else {
            1
        };
        total = total.saturating_add(list_text_bytes(l).saturating_mul(copies));
    }
    Ok(total)
}

/// Rows a call computes: one when every argument is a constant.
fn rows_of(args: &ScalarFunctionArgs) -> usize {
    if args
        .args
        .iter()
        .any(|a| matches!(a, ColumnarValue::Array(_)))
    {
        args.number_rows
    } else {
        1
    }
}

/// A built-in function behind a check of its output size.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Capped {
    inner: ScalarUDF,
    cap: usize,
    bound: Bound,
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = output_bytes(self.bound, &args.args, rows_of(&args))?;
        if bytes > self.cap as u128 {
            return Err(too_large(self.name(), bytes, self.cap));
        }
        self.inner.inner().invoke_with_args(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }
}

/// `left || right` on text, with the output cap: NULL when either side is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextConcat {
    signature: Signature,
    cap: usize,
}

impl TextConcat {
    fn new(cap: usize) -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
            cap,
        }
    }
}

impl ScalarUDFImpl for TextConcat {
    fn name(&self) -> &str {
        "seam_text_concat"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("{} || {}", l.schema_name(), r.schema_name())),
            _ => Ok(self.name().to_string()),
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = rows_of(&args);
        let constant = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let bytes = output_bytes(Bound::Concat, &args.args, rows)?;
        if bytes > self.cap as u128 {
            return Err(too_large("||", bytes, self.cap));
        }
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Plan("|| takes two operands".into()));
        };
        let text = |v: &ColumnarValue| -> Result<ArrayRef> {
            Ok(cast(&v.to_array(rows)?, &DataType::Utf8)?)
        };
        let (l, r) = (text(left)?, text(right)?);
        let (Some(l), Some(r)) = (l.as_string_opt::<i32>(), r.as_string_opt::<i32>()) else {
            return Err(DataFusionError::Plan(
                "|| operands are not text after a cast".into(),
            ));
        };
        let out: ArrayRef = Arc::new(concat_elements_utf8(l, r)?);
        if constant {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                out.as_ref(),
                0,
            )?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// Plans `||` on text (not on arrays, which DataFusion's own planner handles) as
/// [`TextConcat`].
#[derive(Debug)]
struct TextConcatPlanner {
    udf: Arc<ScalarUDF>,
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

fn is_list_or_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

impl ExprPlanner for TextConcatPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let (Ok(l), Ok(r)) = (expr.left.get_type(schema), expr.right.get_type(schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        if !(is_text(&l) || is_text(&r)) || is_list_or_binary(&l) || is_list_or_binary(&r) {
            return Ok(PlannerResult::Original(expr));
        }
        Ok(PlannerResult::Planned(
            self.udf.call(vec![expr.left, expr.right]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn ctx(cap: usize) -> SessionContext {
        SessionContext::new_with_state(install(SessionContext::new().state(), cap))
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    #[tokio::test]
    async fn builders_fail_before_building_past_the_cap() {
        let ctx = ctx(1 << 20);
        for sql in [
            "SELECT length(repeat('x', 2000000000))",
            "SELECT lpad('x', 2000000000)",
            "SELECT rpad('x', 2000000000, 'yz')",
            "SELECT replace(repeat('x', 100000), 'x', repeat('y', 100))",
            "SELECT regexp_replace(repeat('x', 100000), 'x', repeat('y', 100), 'g')",
            "SELECT concat(s, s, s, s, s, s, s, s, s, s, s, s) FROM (SELECT repeat('x', 100000) AS s)",
            "SELECT s || s || s || s || s || s || s || s || s || s || s || s FROM (SELECT repeat('x', 100000) AS s)",
            "SELECT array_repeat(1, 1000000000)",
            "SELECT range(1, 1000000000)",
            "SELECT generate_series(DATE '2000-01-01', DATE '3000-01-01', INTERVAL '1 day')",
            "SELECT array_to_string(range(100000), repeat('x', 1000))",
            "SELECT array_resize(make_array(1), 1000000000)",
            "SELECT repeat(v, 200000) FROM (VALUES ('abcdefghij'), ('klmnopqrst')) AS t(v)",
            // Found by the review: doubling, case mapping, arrays of large values, work.
            "SELECT encode(encode(s, 'hex'), 'hex') FROM (SELECT repeat('x', 400000) AS s)",
            "SELECT upper(s) FROM (SELECT repeat('ΐ', 200000) AS s)",
            "SELECT translate(s, 'x', 'ΐ') FROM (SELECT repeat('x', 600000) AS s)",
            "SELECT make_array(s, s, s, s) FROM (SELECT repeat('x', 300000) AS s)",
            "SELECT array_concat(a, a, a, a) FROM (SELECT make_array(repeat('x', 300000)) AS a)",
            "SELECT levenshtein(s, s) FROM (SELECT repeat('x', 60000) AS s)",
        ] {
            let err = run(&ctx, sql).await.unwrap_err();
            assert!(
                err.to_string().contains("max_function_output_bytes"),
                "{sql}: {err}"
            );
        }
        // Within the cap, the same functions answer as DataFusion's do.
        let out = run(
            &ctx,
            "SELECT repeat('ab', 3) AS r, lpad('x', 3, '-') AS l, 'a' || 'b' AS c, \
             'a' || NULL AS n, concat('a', NULL, 'b') AS cn, cardinality(range(5)) AS g",
        )
        .await
        .unwrap();
        let text = pretty_format_batches(&out).unwrap().to_string();
        assert!(text.contains("ababab"), "{text}");
        assert!(text.contains("--x"), "{text}");
        assert!(text.contains("| ab "), "{text}");
        assert!(text.contains("| 5 "), "{text}");
    }
}
