//! Mappings: records of shapes that users (or other gateways) define, read into seam's
//! tables by a declarative field map.
//!
//! Takes `[mappings.NAME]` tables ([`spec::MappingSpec`]) from the config file, from the
//! files it lists under `mapping_files`, and the presets shipped with seam
//! (`collector/src/mapping/presets/*.toml`, compiled in); gives a [`Mappings`] registry of
//! checked [`Mapping`]s. An input sent with a mapping (`?mapping=NAME`, `seam ingest
//! --mapping NAME`, `mapping = "NAME"` in a `[[sources]]` block) is split into records by
//! [`records`] and each record becomes one row of the mapping's table by [`row`]: every
//! value goes through the same redaction as the built-in shapes, derived columns (record
//! key, URL path, trace id from a traceparent, token identity from logged headers) are
//! computed as for them, and unmapped scalar fields go to `attributes`.
//!
//! A mapping is checked when seam starts: an unknown table, format, column, unit or time
//! format is refused with the mapping and key named, so a typo never silently drops data.

pub mod path;
pub mod records;
pub mod row;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::DataType;
use seam_schemas::columns::{
    INGEST_TIME, RAW, RECORD_KEY, SOURCE_FILE, SOURCE_FORMAT, SOURCE_LINE, TIME,
};
use seam_schemas::tables::{flow_logs, gateway_events, gateway_logs};

pub use spec::{MappingFile, MappingSpec};

/// The presets shipped with seam: (file name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    (
        "apim-log-to-eventhub",
        include_str!("mapping/presets/apim-log-to-eventhub.toml"),
    ),
    ("kong", include_str!("mapping/presets/kong.toml")),
    ("envoy", include_str!("mapping/presets/envoy.toml")),
    ("nginx", include_str!("mapping/presets/nginx.toml")),
    (
        "aws-apigateway",
        include_str!("mapping/presets/aws-apigateway.toml"),
    ),
    (
        "identity-proxy",
        include_str!("mapping/presets/identity-proxy.toml"),
    ),
];

/// The table a mapping fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `gateway_events`.
    GatewayEvents,
    /// `gateway_log_copies` (the `gateway_logs` view).
    GatewayLogs,
    /// `flow_logs`.
    FlowLogs,
}

impl Target {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "gateway_events" => Some(Target::GatewayEvents),
            "gateway_logs" | "gateway_log_copies" => Some(Target::GatewayLogs),
            "flow_logs" => Some(Target::FlowLogs),
            _ => None,
        }
    }

    /// The table's name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Target::GatewayEvents => "gateway_events",
            Target::GatewayLogs => "gateway_logs",
            Target::FlowLogs => "flow_logs",
        }
    }

    fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            Target::GatewayEvents => gateway_events::schema(),
            Target::GatewayLogs => gateway_logs::schema(),
            Target::FlowLogs => flow_logs::schema(),
        }
    }
}

/// How a mapped input is split into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON objects.
    Json,
    /// CSV with a header row.
    Csv,
}

/// What a column holds, which decides how a value is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The record's time (required).
    Time,
    /// A duration in ms (`*_ms`).
    Duration,
    /// Another timestamp column.
    Timestamp,
    /// Text.
    Text,
    /// 32-bit integer.
    Int32,
    /// 64-bit integer.
    Int64,
    /// Double.
    Float,
    /// Boolean.
    Bool,
    /// List of text.
    List,
    /// Map of text (headers).
    Map,
    /// A W3C traceparent (→ trace id).
    Traceparent,
    /// An Authorization value or raw token (→ token columns; never stored).
    Authorization,
}

/// A number's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl Unit {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "s" => Some(Unit::S),
            "ms" => Some(Unit::Ms),
            "us" | "µs" => Some(Unit::Us),
            "ns" => Some(Unit::Ns),
            _ => None,
        }
    }

    /// Milliseconds in one of this unit.
    pub fn ms(self) -> f64 {
        match self {
            Unit::S => 1e3,
            Unit::Ms => 1.0,
            Unit::Us => 1e-3,
            Unit::Ns => 1e-6,
        }
    }
}

/// One mapped column.
#[derive(Debug, Clone)]
pub struct Field {
    /// The column (or pseudo-column `traceparent` / `authorization`).
    pub column: String,
    /// Paths tried in order.
    pub paths: Vec<path::Path>,
    /// Unit of numbers.
    pub unit: Option<Unit>,
    /// Time formats tried first.
    pub formats: Vec<String>,
    /// What the column holds.
    pub kind: Kind,
}

/// A checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Its name.
    pub name: String,
    /// Target table.
    pub table: Target,
    /// Input format.
    pub format: Format,
    /// `gateway_product` of its rows (`gateway_logs`).
    pub product: String,
    /// What it reads.
    pub description: Option<String>,
    /// Time formats tried on time text.
    pub time_formats: Vec<String>,
    /// Mapped columns.
    pub fields: Vec<Field>,
    /// Fixed values.
    pub constants: Vec<(String, String)>,
    /// `source_format` of its rows: `mapping:NAME`.
    pub source_format: String,
    /// Whether it is a preset shipped with seam.
    pub preset: bool,
}

/// Pseudo-columns every table takes.
pub const PSEUDO: &[&str] = &["traceparent", "authorization"];

/// Columns no mapping sets: seam's own bookkeeping.
const OWN: &[&str] = &[
    RECORD_KEY,
    INGEST_TIME,
    RAW,
    SOURCE_FORMAT,
    SOURCE_FILE,
    SOURCE_LINE,
];

/// Why a mapping was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping {name}: {reason}")]
pub struct MappingError {
    /// The mapping.
    pub name: String,
    /// Why.
    pub reason: String,
}

fn check_time_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if f.trim().is_empty() {
        return Err("an empty time format".into());
    }
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "time format {f:?} is not a valid strftime format (chrono syntax, e.g. %Y-%m-%dT%H:%M:%S%.fZ)"
        ));
    }
    Ok(())
}

impl Mapping {
    /// Checks `spec` and compiles it.
    ///
    /// # Errors
    /// What is wrong, with the key named.
    pub fn compile(name: &str, spec: &MappingSpec, preset: bool) -> Result<Self, MappingError> {
        let err = |reason: String| MappingError {
            name: name.to_string(),
            reason,
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(err(
                "a mapping name is made of letters, digits, '-', '_' and '.'".into(),
            ));
        }
        let table = Target::parse(&spec.table).ok_or_else(|| {
            err(format!(
                "table {:?} is not one of gateway_events, gateway_logs, flow_logs",
                spec.table
            ))
        })?;
        let format = match spec.format.as_deref().map(str::trim) {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => {
                return Err(err(format!("format {other:?} is not one of json, csv")));
            }
        };
        let time_formats = spec
            .time_format
            .as_ref()
            .map(spec::OneOrMany::list)
            .unwrap_or_default();
        for f in &time_formats {
            check_time_format(f).map_err(|r| err(format!("time_format: {r}")))?;
        }
        if spec.product.is_some() && table != Target::GatewayLogs {
            return Err(err(
                "product is only for mappings to gateway_logs (it fills gateway_product)".into(),
            ));
        }
        let schema = table.schema();
        let columns: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|c| !OWN.contains(c))
            .collect();
        let kind_of = |column: &str| -> Result<Kind, String> {
            match column {
                "traceparent" => return Ok(Kind::Traceparent),
                "authorization" => return Ok(Kind::Authorization),
                _ => {}
            }
            if OWN.contains(&column) {
                return Err(format!(
                    "column {column} is seam's own and cannot be mapped"
                ));
            }
            let field = schema
                .fields()
                .iter()
                .find(|f| f.name() == column)
                .ok_or_else(|| {
                    format!(
                        "{column} is not a column of {}; its columns: {}, and the pseudo-columns {}",
                        table.name(),
                        columns.join(", "),
                        PSEUDO.join(", ")
                    )
                })?;
            Ok(match field.data_type() {
                _ if column == TIME => Kind::Time,
                DataType::Float64 if column.ends_with("_ms") => Kind::Duration,
                DataType::Timestamp(..) => Kind::Timestamp,
                DataType::Int32 => Kind::Int32,
                DataType::Int64 => Kind::Int64,
                DataType::Float64 => Kind::Float,
                DataType::Boolean => Kind::Bool,
                DataType::List(_) => Kind::List,
                DataType::Map(..) => Kind::Map,
                _ => Kind::Text,
            })
        };
        let mut fields = Vec::new();
        for (column, fs) in &spec.fields {
            let kind = kind_of(column).map_err(|r| err(format!("fields.{column}: {r}")))?;
            let (paths, unit, formats) = match fs {
                spec::FieldSpec::Path(p) => (vec![p.clone()], None, Vec::new()),
                spec::FieldSpec::Paths(ps) => (ps.clone(), None, Vec::new()),
                spec::FieldSpec::Detailed(d) => (
                    d.path.list(),
                    d.unit.clone(),
                    d.format
                        .as_ref()
                        .map(spec::OneOrMany::list)
                        .unwrap_or_default(),
                ),
            };
            if paths.is_empty() {
                return Err(err(format!("fields.{column}: no path given")));
            }
            let paths = paths
                .iter()
                .map(|p| path::Path::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|r| err(format!("fields.{column}: {r}")))?;
            let unit = match unit {
                None => None,
                Some(u) => {
                    if !matches!(
                        kind,
                        Kind::Time | Kind::Timestamp | Kind::Duration | Kind::Float
                    ) {
                        return Err(err(format!(
                            "fields.{column}: unit is only for times and durations"
                        )));
                    }
                    Some(Unit::parse(&u).ok_or_else(|| {
                        err(format!(
                            "fields.{column}: unit {u:?} is not one of s, ms, us, ns"
                        ))
                    })?)
                }
            };
            if !formats.is_empty() && !matches!(kind, Kind::Time | Kind::Timestamp) {
                return Err(err(format!(
                    "fields.{column}: format is only for time columns"
                )));
            }
            for f in &formats {
                check_time_format(f).map_err(|r| err(format!("fields.{column}: {r}")))?;
            }
            fields.push(Field {
                column: column.clone(),
                paths,
                unit,
                formats,
                kind,
            });
        }
        if !fields.iter().any(|f| f.kind == Kind::Time) {
            return Err(err(
                "fields.time is required: every row needs the time of its record".into(),
            ));
        }
        let mut constants = Vec::new();
        for (column, value) in &spec.constants {
            let kind = kind_of(column).map_err(|r| err(format!("constants.{column}: {r}")))?;
            if kind != Kind::Text {
                return Err(err(format!(
                    "constants.{column}: only text columns take a constant"
                )));
            }
            constants.push((column.clone(), value.clone()));
        }
        let product = spec
            .product
            .clone()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "apim".to_string());
        Ok(Self {
            name: name.to_string(),
            table,
            format,
            product,
            description: spec.description.clone(),
            time_formats,
            fields,
            constants,
            source_format: format!("mapping:{name}"),
            preset,
        })
    }
}

/// Every mapping seam knows: the presets, then the user's (a user mapping replaces a preset
/// of the same name).
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    by_name: BTreeMap<String, Arc<Mapping>>,
}

impl Mappings {
    /// The presets alone.
    ///
    /// # Errors
    /// A preset that does not compile (a bug in seam, caught by its tests).
    pub fn presets() -> Result<Self, MappingError> {
        let mut by_name = BTreeMap::new();
        for (file, text) in PRESETS {
            let parsed: MappingFile = toml::from_str(text).map_err(|e| MappingError {
                name: (*file).to_string(),
                reason: format!("preset file does not parse: {e}"),
            })?;
            for (name, spec) in &parsed.mappings {
                by_name.insert(name.clone(), Arc::new(Mapping::compile(name, spec, true)?));
            }
        }
        Ok(Self { by_name })
    }

    /// The presets and `user`'s mappings.
    ///
    /// # Errors
    /// The first mapping that does not compile.
    pub fn with_user(user: &BTreeMap<String, MappingSpec>) -> Result<Self, MappingError> {
        let mut m = Self::presets()?;
        for (name, spec) in user {
            m.by_name
                .insert(name.clone(), Arc::new(Mapping::compile(name, spec, false)?));
        }
        Ok(m)
    }

    /// The mapping called `name`.
    ///
    /// # Errors
    /// No such mapping: the message lists the known ones.
    pub fn get(&self, name: &str) -> Result<Arc<Mapping>, String> {
        self.by_name.get(name.trim()).cloned().ok_or_else(|| {
            format!(
                "unknown mapping {name:?}; known mappings: {}",
                self.names().join(", ")
            )
        })
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// Every mapping.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Mapping>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> MappingSpec {
        let f: MappingFile = toml::from_str(text).unwrap();
        f.mappings.into_values().next().unwrap()
    }

    #[test]
    fn presets_compile() {
        let m = Mappings::presets().unwrap();
        for name in [
            "apim-log-to-eventhub",
            "kong",
            "envoy",
            "nginx",
            "aws-apigateway",
            "identity-proxy",
        ] {
            assert!(m.get(name).is_ok(), "{name}: {:?}", m.names());
        }
    }

    #[test]
    fn the_issue_example_compiles_and_typos_are_named() {
        let s = spec(
            r#"
[mappings.contoso-events]
table = "gateway_events"
format = "json"
time_format = "%Y-%m-%dT%H:%M:%S%.fZ"
[mappings.contoso-events.fields]
time = "ts"
correlation_id = "requestId"
api_id = "api"
status_code = "status"
token_id = "token.fp"
client_app = ["token.azp", "token.appid", "token.cid"]
token_scopes = "token.scp"
"#,
        );
        let m = Mapping::compile("contoso-events", &s, false).unwrap();
        assert_eq!(m.table, Target::GatewayEvents);
        assert_eq!(m.fields.len(), 7);
        let mut bad = s.clone();
        bad.fields
            .insert("status_cod".into(), spec::FieldSpec::Path("status".into()));
        let e = Mapping::compile("contoso-events", &bad, false).unwrap_err();
        assert!(
            e.to_string()
                .contains("status_cod is not a column of gateway_events"),
            "{e}"
        );
        let mut bad = s.clone();
        bad.fields.remove("time");
        assert!(
            Mapping::compile("c", &bad, false)
                .unwrap_err()
                .reason
                .contains("fields.time is required")
        );
        let mut bad = s.clone();
        bad.table = "requests".into();
        assert!(Mapping::compile("c", &bad, false).is_err());
        let mut bad = s;
        bad.fields
            .insert("raw".into(), spec::FieldSpec::Path("x".into()));
        assert!(
            Mapping::compile("c", &bad, false)
                .unwrap_err()
                .reason
                .contains("seam's own")
        );
    }
}
