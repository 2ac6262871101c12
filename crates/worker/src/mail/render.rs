//! Rendering a template folder with a JSON payload.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, Template, UndefinedBehavior, Value,
    escape_formatter, syntax::SyntaxConfig,
};
use serde_json::Map;

use super::{MailContext, MailError, RenderedEmail, components};

macro_rules! email_templates {
    ($($name:literal),+ $(,)?) => {
        /// The name of every email template, as outbox rows and [`render`] use it.
        pub const TEMPLATES: &[&str] = &[$($name),+];

        const SOURCES: &[(&str, &str)] = &[
            ("_layout.html", include_str!("templates/_layout.html")),
            ("_footer.txt", include_str!("templates/_footer.txt")),
            $(
                (concat!($name, "/subject.txt"), include_str!(concat!("templates/", $name, "/subject.txt"))),
                (concat!($name, "/body.txt"), include_str!(concat!("templates/", $name, "/body.txt"))),
                (concat!($name, "/body.html"), include_str!(concat!("templates/", $name, "/body.html"))),
            )+
        ];
    };
}

email_templates!(
    "request_filed",
    "staff_new_request",
    "request_approved",
    "request_cancelled",
    "request_released",
    "request_reclaimed",
    "staff_release_failed",
);

/// Renders the template folder `template` with the keys of `payload` (a JSON
/// object) and `public_url` from `ctx`.
pub fn render(
    template: &str,
    payload: &serde_json::Value,
    ctx: &MailContext,
) -> Result<RenderedEmail, MailError> {
    if !TEMPLATES.contains(&template) {
        return Err(MailError::UnknownTemplate(template.to_owned()));
    }
    let serde_json::Value::Object(fields) = payload else {
        return Err(MailError::Render(format!(
            "the payload of `{template}` must be a JSON object"
        )));
    };
    let public_url = ctx.public_url.trim_end_matches('/');
    let values = Value::from_pairs(
        fields
            .iter()
            .map(|(key, value)| (key.as_str(), to_value(value)))
            .chain([("public_url", Value::from(public_url))]),
    );
    let env = environment()?;
    let part = |file: &str| {
        let name = format!("{template}/{file}");
        let compiled = env
            .get_template(&name)
            .map_err(|e| MailError::Render(e.to_string()))?;
        compiled
            .render(values.clone())
            .map_err(|e| render_error(env, &compiled, fields, &e))
    };
    Ok(RenderedEmail {
        // A header is one line, whatever the payload holds.
        subject: part("subject.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        text: part("body.txt")?,
        html: part("body.html")?,
    })
}

/// The compiled templates, built on first use.
fn environment() -> Result<&'static Environment<'static>, MailError> {
    static ENVIRONMENT: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(build_environment)
        .as_ref()
        .map_err(|e| MailError::Render(e.clone()))
}

fn build_environment() -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    env.set_formatter(html_formatter);
    env.add_filter("datetime", datetime);
    components::register(&mut env);
    for (name, source) in SOURCES {
        env.add_template(name, source)
            .map_err(|e| format!("template {name}: {e}"))?;
    }
    Ok(env)
}

/// Escapes `& < > " '` in HTML strings (see [`components::write_escaped`]);
/// everything else as minijinja would.
fn html_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(text) if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() => {
            Ok(components::write_escaped(out, text)?)
        }
        _ => escape_formatter(out, state, value),
    }
}

/// `{{ released_at|datetime }}`: an RFC 3339 time as `2026-12-03 14:00 UTC`.
fn datetime(value: &Value) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    let Some(value) = value.as_str() else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a time must be an RFC 3339 string",
        ));
    };
    DateTime::parse_from_rfc3339(value)
        .map(|at| {
            // As `format("%Y-%m-%d %H:%M UTC")` writes it (RFC 3339 years have
            // four digits), without parsing the format string at every call.
            let at = at.with_timezone(&Utc);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                at.year(),
                at.month(),
                at.day(),
                at.hour(),
                at.minute()
            )
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("`{value}` is not an RFC 3339 time: {e}"),
            )
        })
}

/// Names the payload keys the template needed but did not get; the engine's own
/// message says only "undefined value". Never includes payload values, nor the
/// environment's globals (the components), which templates use undeclared too.
fn render_error(
    env: &Environment<'_>,
    template: &Template<'_, '_>,
    fields: &Map<String, serde_json::Value>,
    error: &Error,
) -> MailError {
    let mut missing: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|key| key != "public_url" && !fields.contains_key(key))
        .filter(|key| !env.globals().any(|(global, _)| global == key))
        .collect();
    if missing.is_empty() {
        return MailError::Render(error.to_string());
    }
    missing.sort();
    MailError::Render(format!("the payload lacks {}: {error}", missing.join(", ")))
}

// minijinja is built without its serde feature, so JSON is converted by hand.
fn to_value(json: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match json {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or_else(|| Value::from(n.to_string())),
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => items.iter().map(to_value).collect(),
        Json::Object(map) => Value::from_pairs(
            map.iter()
                .map(|(key, value)| (key.as_str(), to_value(value))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use minijinja::{Error, ErrorKind};
    use serde_json::Map;

    use super::{environment, render_error};

    #[test]
    fn a_render_error_names_the_missing_payload_keys_and_never_a_component() {
        let env = environment().expect("the templates compile");
        let template = env
            .get_template("request_filed/body.html")
            .expect("a known template");
        let error = render_error(
            env,
            &template,
            &Map::new(),
            &Error::from(ErrorKind::UndefinedError),
        );
        let message = error.to_string();
        assert!(
            message.contains("the payload lacks account_name, currency, early_termination_fee"),
            "{message}"
        );
        for component in ["details", "endpoint"] {
            assert!(!message.contains(component), "{message}");
        }
    }
}
