//! The results table: every measurement with its target, its ratio to the
//! reference, and PASS/MISS; printed as text and written as Markdown.

use std::{collections::BTreeMap, fmt::Write as _};

/// Which side of a bound passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

impl Bound {
    fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtLeast(b) => value >= b,
            Bound::AtMost(b) => value <= b,
        }
    }
}

/// What a target constrains: the measured value or its ratio to the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Value(Bound),
    Ratio(Bound),
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Row {
    pub backend: &'static str,
    pub stage: &'static str,
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the ratio compares to (`API/raw`, `÷ reference`) and its value.
    pub ratio: Option<(&'static str, f64)>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(backend: &'static str, stage: &'static str, metric: impl Into<String>) -> Self {
        Self {
            backend,
            stage,
            metric: metric.into(),
            value: f64::NAN,
            unit: "",
            ratio: None,
            target: None,
        }
    }

    pub fn value(mut self, value: f64, unit: &'static str) -> Self {
        self.value = value;
        self.unit = unit;
        self
    }

    pub fn ratio(mut self, label: &'static str, ratio: f64) -> Self {
        self.ratio = Some((label, ratio));
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    fn key(&self) -> (String, String, String) {
        (
            self.backend.to_owned(),
            self.stage.to_owned(),
            self.metric.clone(),
        )
    }

    pub fn verdict(&self) -> &'static str {
        match self.target {
            None => "",
            Some(Target::Value(b)) if b.holds(self.value) => "PASS",
            Some(Target::Ratio(b)) if self.ratio.is_some_and(|(_, r)| b.holds(r)) => "PASS",
            Some(_) => "MISS",
        }
    }

    fn value_text(&self) -> String {
        if self.value.is_nan() {
            return "-".into();
        }
        with_unit(self.value, self.unit)
    }

    fn ratio_text(&self) -> String {
        self.ratio
            .map(|(label, r)| format!("{label} {r:.2}"))
            .unwrap_or_default()
    }

    fn target_text(&self) -> String {
        let (prefix, bound, unit) = match self.target {
            None => return String::new(),
            Some(Target::Value(b)) => ("", b, self.unit),
            Some(Target::Ratio(b)) => {
                let label = self.ratio.map_or("ratio", |(l, _)| l);
                return match b {
                    Bound::AtLeast(v) => format!("{label} ≥ {v:.2}"),
                    Bound::AtMost(v) => format!("{label} ≤ {v:.2}"),
                };
            }
        };
        match bound {
            Bound::AtLeast(v) => format!("{prefix}≥ {}", with_unit(v, unit)),
            Bound::AtMost(v) => format!("{prefix}≤ {}", with_unit(v, unit)),
        }
    }
}

/// `number(v)` and its unit, if it has one (a count of things has none).
fn with_unit(v: f64, unit: &str) -> String {
    if unit.is_empty() {
        number(v)
    } else {
        format!("{} {unit}", number(v))
    }
}

/// `1234.5` → `1,235`; small values keep decimals.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 10.0 {
        return format!("{v:.2}");
    }
    if v.abs() < 100.0 {
        return format!("{v:.1}");
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "display of a rounded measurement"
    )]
    let mut n = v.round() as i64;
    let negative = n < 0;
    n = n.abs();
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if negative { format!("-{out}") } else { out }
}

/// All rows of a run, plus stage failures and the machine.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub errors: Vec<String>,
    pub machine: Vec<(String, String)>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        eprintln!(
            "  {} {} {}: {} {} {}",
            row.backend,
            row.stage,
            row.metric,
            row.value_text(),
            row.ratio_text(),
            row.verdict()
        );
        self.rows.push(row);
    }

    /// Several runs into one: the median of each measurement (and of its ratio).
    pub fn median_of(runs: Vec<Report>) -> Report {
        let mut merged = Report::default();
        let mut groups: BTreeMap<(String, String, String), Vec<Row>> = BTreeMap::new();
        let mut order = Vec::new();
        for run in runs {
            merged.errors.extend(run.errors);
            if merged.machine.is_empty() {
                merged.machine = run.machine;
            }
            for note in run.notes {
                if !merged.notes.contains(&note) {
                    merged.notes.push(note);
                }
            }
            for row in run.rows {
                let key = row.key();
                if !groups.contains_key(&key) {
                    order.push(key.clone());
                }
                groups.entry(key).or_default().push(row);
            }
        }
        for key in order {
            let Some(rows) = groups.remove(&key) else {
                continue;
            };
            let mut row = rows[0].clone();
            row.value = median(rows.iter().map(|r| r.value).collect());
            if let Some((label, _)) = row.ratio {
                let ratios = rows
                    .iter()
                    .filter_map(|r| r.ratio.map(|(_, v)| v))
                    .collect();
                row.ratio = Some((label, median(ratios)));
            }
            merged.rows.push(row);
        }
        merged
    }

    pub fn text_table(&self) -> String {
        let header = [
            "backend",
            "stage",
            "measurement",
            "value",
            "target",
            "ratio",
            "",
        ];
        let body: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.backend.to_owned(),
                    r.stage.to_owned(),
                    r.metric.clone(),
                    r.value_text(),
                    r.target_text(),
                    r.ratio_text(),
                    r.verdict().to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &body {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (cell, w) in cells.iter().zip(widths) {
                let pad = w.saturating_sub(cell.chars().count());
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&header.map(str::to_owned));
        out += &line(&widths.map(|w| "-".repeat(w)));
        for row in &body {
            out += &line(row);
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out += "| backend | stage | measurement | value | target | ratio | |\n";
        out += "| --- | --- | --- | ---: | --- | --- | --- |\n";
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.backend,
                r.stage,
                r.metric,
                r.value_text(),
                r.target_text(),
                r.ratio_text(),
                r.verdict()
            );
        }
        out
    }

    pub fn misses(&self) -> usize {
        self.rows.iter().filter(|r| r.verdict() == "MISS").count()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::{Bound, Row, Target};

    #[test]
    fn a_value_without_a_unit_has_no_trailing_space() {
        let count = Row::new("PostgreSQL", "filing", "filings per write").value(14.5, "");
        assert_eq!(count.value_text(), "14.5");
        let rate = Row::new("PostgreSQL", "filing", "throughput")
            .value(3336.4, "req/s")
            .target(Target::Value(Bound::AtLeast(3000.0)));
        assert_eq!(rate.value_text(), "3,336 req/s");
        assert_eq!(rate.target_text(), "≥ 3,000 req/s");
    }
}
