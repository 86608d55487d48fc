//! A mapping as the user writes it: `[mappings.NAME]` in the config file, in a file it
//! lists under `mapping_files`, or in a preset shipped with seam.
//!
//! Takes TOML (through serde); gives [`MappingSpec`], checked and compiled by
//! [`super::Mapping::compile`]. Unknown keys are refused with their name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `[mappings.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Target table: `gateway_events`, `gateway_logs` or `flow_logs`.
    pub table: String,
    /// `json` (one object, JSON Lines, `{"records":[...]}` or an array) or `csv` (a header
    /// row, then one record per row). Default `json`.
    #[serde(default)]
    pub format: Option<String>,
    /// strftime-style formats (chrono) tried on time text before the built-in forms.
    #[serde(default)]
    pub time_format: Option<OneOrMany>,
    /// `gateway_logs` only: the gateway product written to `gateway_product` (default
    /// `apim`).
    #[serde(default)]
    pub product: Option<String>,
    /// What the mapping reads, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Column = where its value is in a record.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// Column = a fixed text value for every record.
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
}

/// A text or a list of texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several, in order.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The texts in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Where a column's value is: a dotted path, paths tried in order, or a table with a unit
/// or a time format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a path (\"a.b\"), a list of paths, or a table with only the keys path, unit \
                 (s, ms, us or ns) and format"
)]
pub enum FieldSpec {
    /// `column = "a.b"`.
    Path(String),
    /// `column = ["a.b", "c"]`.
    Paths(Vec<String>),
    /// `column = { path = ..., unit = "s", format = "..." }`.
    Detailed(DetailedField),
}

/// The table form of a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedField {
    /// The path, or paths tried in order.
    pub path: OneOrMany,
    /// Unit of a number: `s`, `ms`, `us` or `ns` (durations default to `ms`; epoch times are
    /// guessed from their magnitude unless given).
    #[serde(default)]
    pub unit: Option<String>,
    /// Time formats for this column, tried before the mapping's `time_format`.
    #[serde(default)]
    pub format: Option<OneOrMany>,
}

/// A file of mappings (`mapping_files`, presets): `[mappings.NAME]` tables only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// The mappings by name.
    #[serde(default)]
    pub mappings: BTreeMap<String, MappingSpec>,
}
