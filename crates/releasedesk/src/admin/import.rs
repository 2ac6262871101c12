//! `admin number import`: read and check the whole CSV file, report every bad row,
//! and only then hand all rows to the store's all-or-nothing import.

use std::{collections::HashMap, path::Path, time::Duration};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use releasedesk_domain::{DomainError, E164, FriendlyName, Money};
use releasedesk_store::{ImportOutcome, ImportRow, Store};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{AdminError, not_found_as};

/// The price of a number whose row leaves `monthly_price` empty, in cents (as
/// `number add`'s default, 1.15).
const DEFAULT_MONTHLY_PRICE_MINOR: i64 = 115;

/// One problem with the file, where a person can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line of the file (the header is line 1).
    pub line: u64,
    pub column: String,
    pub message: String,
}

impl RowError {
    fn new(line: u64, column: &str, message: impl Into<String>) -> Self {
        Self {
            line,
            column: column.to_owned(),
            message: message.into(),
        }
    }
}

/// Why nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    File { path: String, message: String },
    #[error("the file has {} problem(s); nothing was imported", .0.len())]
    Rows(Vec<RowError>),
}

impl ImportError {
    pub fn to_json(&self) -> Value {
        match self {
            ImportError::File { .. } => json!({
                "success": false,
                "code": "VALIDATION_ERROR",
                "message": self.to_string(),
                "details": [{"field": "csv", "message": self.to_string()}],
            }),
            ImportError::Rows(rows) => json!({
                "success": false,
                "code": "VALIDATION_ERROR",
                "message": self.to_string(),
                "details": rows,
            }),
        }
    }
}

/// The columns a file may have.
const COLUMNS: [&str; 4] = ["e164", "friendly_name", "purchased_at", "monthly_price"];

/// Where each known column is in the file.
struct Layout {
    e164: usize,
    friendly_name: Option<usize>,
    purchased_at: Option<usize>,
    monthly_price: Option<usize>,
}

fn layout(headers: &csv::StringRecord) -> Result<Layout, Vec<RowError>> {
    let mut errors = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, name) in headers.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        match COLUMNS.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            Some(column) if at.insert(column, i).is_some() => {
                errors.push(RowError::new(1, column, "this column appears twice"));
            }
            Some(_) => {}
            None => errors.push(RowError::new(
                1,
                name,
                format!("unknown column; expected {}", COLUMNS.join(", ")),
            )),
        }
    }
    let Some(&e164) = at.get("e164") else {
        errors.push(RowError::new(1, "e164", "the required column is missing"));
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Layout {
        e164,
        friendly_name: at.get("friendly_name").copied(),
        purchased_at: at.get("purchased_at").copied(),
        monthly_price: at.get("monthly_price").copied(),
    })
}

/// The message of a single-field validation error.
fn message_of(error: DomainError) -> String {
    match error {
        DomainError::Validation(mut fields) if !fields.is_empty() => fields.swap_remove(0).message,
        other => other.to_string(),
    }
}

/// A non-empty optional cell.
fn cell(record: &csv::StringRecord, at: Option<usize>) -> Option<&str> {
    at.and_then(|i| record.get(i))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Parses one record, collecting every problem it has.
fn parse_row(
    line: u64,
    record: &csv::StringRecord,
    layout: &Layout,
    errors: &mut Vec<RowError>,
) -> Option<ImportRow> {
    let before = errors.len();
    let e164 = match cell(record, Some(layout.e164)) {
        None => {
            errors.push(RowError::new(line, "e164", "is required"));
            None
        }
        Some(value) => E164::parse(value)
            .map_err(|e| errors.push(RowError::new(line, "e164", message_of(e))))
            .ok(),
    };
    let friendly_name = cell(record, layout.friendly_name).and_then(|value| {
        FriendlyName::parse(value)
            .map_err(|e| errors.push(RowError::new(line, "friendly_name", message_of(e))))
            .ok()
    });
    let purchased_at = cell(record, layout.purchased_at).and_then(|value| {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                errors.push(RowError::new(
                    line,
                    "purchased_at",
                    format!("must be an RFC 3339 time such as 2026-01-31T09:00:00Z ({e})"),
                ));
            })
            .ok()
    });
    let monthly_price = match cell(record, layout.monthly_price) {
        None => Some(Money::from_minor(DEFAULT_MONTHLY_PRICE_MINOR)),
        Some(value) => value
            .parse::<Money>()
            .map_err(|_| {
                errors.push(RowError::new(
                    line,
                    "monthly_price",
                    "must be a decimal amount such as 1.15",
                ));
            })
            .ok(),
    };
    if errors.len() != before {
        return None;
    }
    Some(ImportRow {
        e164: e164?,
        friendly_name,
        purchased_at,
        monthly_price: monthly_price?,
    })
}

/// Every row of the file with its line number, or every problem the file has.
fn read(path: &Path, progress: &ProgressBar) -> Result<(Vec<ImportRow>, Vec<u64>), ImportError> {
    let file_error = |e: &dyn std::fmt::Display| ImportError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| file_error(&e))?;
    let headers = reader.headers().map_err(|e| file_error(&e))?.clone();
    let layout = layout(&headers).map_err(ImportError::Rows)?;

    let (mut rows, mut lines, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, csv::Position::line);
                if let Some(row) = parse_row(line, &record, &layout, &mut errors) {
                    match first_seen.get(row.e164.as_str()) {
                        Some(first) => errors.push(RowError::new(
                            line,
                            "e164",
                            format!("repeats the number on line {first}"),
                        )),
                        None => {
                            first_seen.insert(row.e164.as_str().to_owned(), line);
                            rows.push(row);
                            lines.push(line);
                        }
                    }
                }
            }
            Err(e) => {
                let line = e.position().map_or(line, csv::Position::line);
                match e.kind() {
                    csv::ErrorKind::Io(_) => return Err(file_error(&e)),
                    csv::ErrorKind::UnequalLengths { .. } => errors.push(RowError::new(
                        line,
                        "*",
                        format!("has a different number of fields than the header ({e})"),
                    )),
                    _ => errors.push(RowError::new(line, "*", e.to_string())),
                }
            }
        }
        progress.inc(1);
    }
    if !errors.is_empty() {
        return Err(ImportError::Rows(errors));
    }
    Ok((rows, lines))
}

fn bar(len: Option<u64>, message: &'static str) -> ProgressBar {
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} rows ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg:>10} {pos} rows")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Checks the whole file, then imports every row in one transaction; returns how
/// many numbers were imported.
pub async fn run(store: &Store, account_id: Uuid, path: &Path) -> Result<u64, AdminError> {
    let checking = bar(None, "checking");
    let read = read(path, &checking);
    checking.finish_and_clear();
    let (rows, lines) = read?;

    let inserting = bar(Some(rows.len() as u64), "importing");
    let progress = {
        let inserting = inserting.clone();
        move |done: u64| inserting.set_position(done)
    };
    let outcome = store.import_numbers(account_id, &rows, &progress).await;
    inserting.finish_and_clear();
    let rejected = |indices: Vec<usize>, message: &str| {
        let errors = indices
            .into_iter()
            .map(|i| RowError::new(lines.get(i).copied().unwrap_or(0), "e164", message))
            .collect();
        AdminError::Import(ImportError::Rows(errors))
    };
    match outcome.map_err(not_found_as("account"))? {
        ImportOutcome::Imported(n) => Ok(n),
        ImportOutcome::AlreadyInInventory(indices) => {
            Err(rejected(indices, "this number is already in the inventory"))
        }
        ImportOutcome::DuplicateInImport(indices) => Err(rejected(
            indices,
            "this number collided with another while importing; nothing was imported",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Vec<ImportRow>, Vec<RowError>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("numbers.csv");
        std::fs::write(&path, text).expect("write the file");
        match read(&path, &ProgressBar::hidden()) {
            Ok((rows, _)) => Ok(rows),
            Err(ImportError::Rows(errors)) => Err(errors),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn optional_columns_default_like_number_add() {
        let rows = check("e164\n+15550000001\n").expect("valid");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].monthly_price.to_string(), "1.15");
        assert!(rows[0].purchased_at.is_none() && rows[0].friendly_name.is_none());
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line_and_column() {
        let errors = check(
            "e164,friendly_name,purchased_at,monthly_price\n\
             +15550000001,Front desk,2026-01-01T00:00:00Z,2.50\n\
             5550000002,,,\n\
             +15550000003,,yesterday,-1\n\
             +15550000001,,,\n",
        )
        .expect_err("invalid");
        let at: Vec<(u64, &str)> = errors.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(
            at,
            [
                (3, "e164"),
                (4, "purchased_at"),
                (4, "monthly_price"),
                (5, "e164")
            ]
        );
        assert!(errors[3].message.contains("line 2"), "{:?}", errors[3]);
    }

    #[test]
    fn a_file_without_the_e164_column_or_with_unknown_columns_is_refused() {
        let errors = check("number,price\n+15550000001,1\n").expect_err("invalid");
        let columns: Vec<&str> = errors.iter().map(|e| e.column.as_str()).collect();
        assert_eq!(columns, ["number", "price", "e164"]);
        assert!(errors.iter().all(|e| e.line == 1));
    }
}
