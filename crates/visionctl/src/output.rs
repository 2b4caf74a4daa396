//! Printing as kubectl does: `-o json|yaml` of one object prints it, of
//! several a `v1` `List`; `-o name` prints `kind.group/name`; tables are
//! aligned columns. A closed stdout (`| head`) ends the process quietly.

use std::io::Write;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{Error, Result};

/// `-o`: how to print objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
}

/// Writes a line to stdout; a closed pipe ends the process quietly.
pub fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{line}").is_err() {
        std::process::exit(0);
    }
}

/// A kubectl `List` of `items` (`kubectl get -o json` of several objects).
pub fn list<T: Serialize>(items: &[T]) -> Result<Value> {
    Ok(json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": serde_json::to_value(items)?,
        "metadata": {"resourceVersion": ""},
    }))
}

/// `value` as pretty JSON or as YAML.
pub fn encode<T: Serialize>(value: &T, format: Format) -> Result<String> {
    match format {
        Format::Yaml => serde_saphyr::to_string(value).map_err(|e| Error::Encode(Box::new(e))),
        _ => Ok(serde_json::to_string_pretty(value)?),
    }
}

/// Prints `value` as JSON or YAML.
pub fn print<T: Serialize>(value: &T, format: Format) -> Result<()> {
    let text = encode(value, format)?;
    out(text.trim_end());
    Ok(())
}

/// Aligned columns, two spaces apart, the last one not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = *w));
            }
        }
        s.trim_end().to_string()
    };
    let mut lines = vec![line(header.to_vec())];
    for row in rows {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines
}

/// Prints a table.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    for l in table(header, rows) {
        out(&l);
    }
}

/// A duration in kubectl's short style: `45s`, `3m12s`, `2h5m`, `3d4h`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s % 60 == 0 || s >= 600 => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 if (s / 60) % 60 == 0 || s >= 36000 => format!("{}h", s / 3600),
        3600..86400 => format!("{}h{}m", s / 3600, (s / 60) % 60),
        _ if (s / 3600) % 24 == 0 || s >= 864000 => format!("{}d", s / 86400),
        _ => format!("{}d{}h", s / 86400, (s / 3600) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let rows = vec![
            vec!["a".to_string(), "Queued".to_string(), "x".to_string()],
            vec![
                "long-name".to_string(),
                "Running".to_string(),
                "".to_string(),
            ],
        ];
        assert_eq!(
            table(&["NAME", "PHASE", "MESSAGE"], &rows),
            vec![
                "NAME       PHASE    MESSAGE",
                "a          Queued   x",
                "long-name  Running",
            ]
        );
    }

    #[test]
    fn several_objects_are_a_v1_list() {
        let v = list(&[json!({"kind": "VisionJob"})]).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"apiVersion":"v1","items":[{"kind":"VisionJob"}],"kind":"List","metadata":{"resourceVersion":""}}"#
        );
        assert_eq!(
            encode(&json!({"a": [1]}), Format::Yaml).unwrap(),
            "a:\n- 1\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(192_000), "3m12s");
        assert_eq!(age(720_000), "12m");
        assert_eq!(age(7_500_000), "2h5m");
        assert_eq!(age(36_000_000 + 60_000), "10h");
        assert_eq!(age(3 * 86_400_000 + 4 * 3_600_000), "3d4h");
    }
}
