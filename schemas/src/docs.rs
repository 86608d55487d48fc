//! Generates the table reference (`docs/tables.md`) from the schemas' field metadata.
//!
//! Takes the [`crate::tables::all`] list; gives Markdown. A test keeps the committed file
//! equal to the generated text (`SEAM_BLESS=1 cargo test -p seam-schemas` rewrites it).

use std::fmt::Write as _;

use arrow_schema::DataType;

use crate::tables::{self, DESCRIPTION_KEY};

/// The SQL-facing name of an Arrow type, as users see it in seam.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text".into(),
        DataType::Int32 => "int (32-bit)".into(),
        DataType::Int64 => "bigint (64-bit)".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp (UTC, ns)".into(),
        DataType::Map(_, _) => "map<text, text>".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// Renders the reference of every table.
pub fn render() -> String {
    let mut out = String::new();
    out.push_str("# Table reference\n\n");
    out.push_str("<!-- Generated from schemas/src/tables: do not edit by hand. ");
    out.push_str("Regenerate with `SEAM_BLESS=1 cargo test -p seam-schemas`. -->\n\n");
    let _ = writeln!(
        out,
        "Schema version {}. Every time column is a UTC timestamp with nanosecond precision; \
         ids are lower-case hex text; durations are `*_ms` doubles; maps are read with \
         `column['key']`.\n",
        crate::SCHEMA_VERSION
    );
    for t in tables::all() {
        let _ = writeln!(out, "## `{}`\n\n{}\n", t.name, t.description);
        out.push_str("| column | type | nullable | description |\n|---|---|---|---|\n");
        for f in t.schema.fields() {
            let desc = f
                .metadata()
                .get(DESCRIPTION_KEY)
                .cloned()
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                f.name(),
                type_name(f.data_type()),
                if f.is_nullable() { "yes" } else { "no" },
                desc.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    for v in tables::views() {
        let _ = writeln!(
            out,
            "## `{}` (view)\n\n{}\n\n```sql\n{}\n```\n",
            v.name, v.description, v.sql
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_reference_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tables.md");
        let generated = super::render();
        if std::env::var_os("SEAM_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/tables.md is out of date: run `SEAM_BLESS=1 cargo test -p seam-schemas`"
        );
    }
}
