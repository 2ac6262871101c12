//! The HTML pieces the email templates share: `details(rows)`,
//! `button(href, label)`, `endpoint(method, url)` and `quote(text)`, called from
//! templates as `{{ details([("Request", request_id), …]) }}`.
//!
//! They were minijinja macros; a macro call (a new frame, its closure, its
//! arguments matched by name) took ~30% of an email's rendering
//! (docs/BENCHMARKS.md). As functions they write the same markup, escaping
//! every value as the HTML templates' own output is escaped.

use std::fmt::{self, Write as _};

use minijinja::{Environment, Error, ErrorKind, Value};

/// Makes the components callable from every template of `env`.
pub(super) fn register(env: &mut Environment<'_>) {
    env.add_function("details", details);
    env.add_function("button", button);
    env.add_function("endpoint", endpoint);
    env.add_function("quote", quote);
}

/// A two-column table of `(label, value)` rows.
fn details(rows: Value) -> Result<Value, Error> {
    let mut html = String::with_capacity(1024);
    html.push_str(
        "<table role=\"presentation\" style=\"border-collapse:collapse;margin:16px 0;\">\n",
    );
    for row in rows.try_iter()? {
        html.push_str(
            "<tr><th scope=\"row\" style=\"padding:4px 16px 4px 0;text-align:left;\
             vertical-align:top;font-weight:normal;color:#6b7280;\">",
        );
        push(&mut html, &row.get_item_by_index(0)?)?;
        html.push_str("</th><td style=\"padding:4px 0;\">");
        push(&mut html, &row.get_item_by_index(1)?)?;
        html.push_str("</td></tr>\n");
    }
    html.push_str("</table>\n");
    Ok(Value::from_safe_string(html))
}

/// A link drawn as a button.
fn button(href: Value, label: Value) -> Result<Value, Error> {
    let mut html = String::with_capacity(384);
    html.push_str("<p style=\"margin:24px 0;\"><a href=\"");
    push(&mut html, &href)?;
    html.push_str(
        "\" style=\"display:inline-block;padding:10px 18px;background-color:#1d4ed8;\
         color:#ffffff;text-decoration:none;border-radius:4px;\">",
    );
    push(&mut html, &label)?;
    html.push_str("</a></p>\n");
    Ok(Value::from_safe_string(html))
}

/// An API call to make, as `METHOD url` in code type.
fn endpoint(method: Value, url: Value) -> Result<Value, Error> {
    let mut html = String::with_capacity(384);
    html.push_str(
        "<p style=\"margin:8px 0;\"><code style=\"padding:2px 6px;background-color:#f3f4f6;\
         border-radius:4px;font-size:13px;word-break:break-all;\">",
    );
    push(&mut html, &method)?;
    html.push(' ');
    push(&mut html, &url)?;
    html.push_str("</code></p>\n");
    Ok(Value::from_safe_string(html))
}

/// Someone's words (a staff note), kept as written, line breaks included.
fn quote(text: Value) -> Result<Value, Error> {
    let mut html = String::with_capacity(512);
    html.push_str(
        "<blockquote style=\"margin:16px 0;padding:8px 16px;border-left:4px solid #d1d5db;\
         background-color:#f9fafb;white-space:pre-wrap;\">",
    );
    push(&mut html, &text)?;
    html.push_str("</blockquote>\n");
    Ok(Value::from_safe_string(html))
}

/// Appends `value` as the HTML templates print it: safe strings as they are,
/// anything else escaped; an undefined value (a key the payload lacks) is an
/// error, as printing it would be.
fn push(html: &mut String, value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    if value.is_safe() {
        write!(html, "{value}")?;
    } else if let Some(text) = value.as_str() {
        write_escaped(html, text)?;
    } else {
        write_escaped(html, &value.to_string())?;
    }
    Ok(())
}

/// Writes `text` with `& < > " '` escaped. minijinja's own escaping also turns
/// `/` into `&#x2f;`: valid, but every link would read `https:&#x2f;&#x2f;…`
/// in the source.
pub(super) fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.write_str(&rest[..at])?;
        out.write_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)
}
