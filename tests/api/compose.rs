//! `docker-compose.yml` and the `Dockerfile`, checked without a Docker engine: the
//! file is parsed as YAML, every command is handed to the real binary's argument
//! parser, every variable to the real configuration loader, and the readiness
//! healthcheck is run against a real `releasedesk api`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use releasedesk::config::Settings;
use releasedesk_tests::{
    TestDatabase, binary,
    process::{Environment, Role, Service as Process},
};
use serde::Deserialize;
use serde_norway::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repository().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// Compose's interpolation as `docker compose` does it with none of the variables
/// set: `${NAME:-default}` and `${NAME-default}` give the default, `${NAME}` and
/// `$NAME` nothing, `$$` a literal `$`; `${NAME:?message}` is a problem.
fn interpolate(text: &str, problems: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                problems.push("an unterminated ${ in docker-compose.yml".into());
                return out;
            };
            let expression = &braced[..end];
            if let Some((_, default)) = expression
                .split_once(":-")
                .or_else(|| expression.split_once('-'))
            {
                out.push_str(default);
            } else if let Some((name, _)) = expression.split_once(":?") {
                problems.push(format!("docker-compose.yml requires ${name} to be set"));
            }
            rest = &braced[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The compose file as compose sees it: interpolated, anchors resolved, `<<`
/// merge keys applied.
fn load_compose(problems: &mut Vec<String>) -> Value {
    let text = interpolate(&read("docker-compose.yml"), problems);
    let mut value: Value = serde_norway::from_str(&text).expect("docker-compose.yml is YAML");
    value.apply_merge().expect("merge keys resolve");
    value
}

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split_whitespace().map(str::to_owned).collect(),
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Build {
    Context(String),
    Full {
        context: Option<String>,
        dockerfile: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Env {
    Map(BTreeMap<String, Option<Value>>),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

#[derive(Debug, Default, Deserialize)]
struct Dependency {
    condition: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    command: Option<OneOrMany>,
    environment: Option<Env>,
    #[serde(default)]
    ports: Vec<String>,
    depends_on: Option<DependsOn>,
    healthcheck: Option<Healthcheck>,
    restart: Option<String>,
    stop_grace_period: Option<String>,
}

impl Service {
    fn environment(&self) -> BTreeMap<String, String> {
        let scalar = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => format!("{other:?}"),
        };
        match &self.environment {
            None => BTreeMap::new(),
            Some(Env::Map(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(scalar).unwrap_or_default()))
                .collect(),
            Some(Env::List(list)) => list
                .iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (item.clone(), String::new()),
                })
                .collect(),
        }
    }

    fn command(&self) -> Vec<String> {
        self.command
            .as_ref()
            .map(|c| match c {
                OneOrMany::One(s) => OneOrMany::One(s.clone()).into_vec(),
                OneOrMany::Many(v) => v.clone(),
            })
            .unwrap_or_default()
    }

    /// `(host ip, host port, container port)` of each published port.
    fn published(&self) -> Vec<(String, Option<u16>, u16)> {
        self.ports
            .iter()
            .filter_map(|spec| {
                let spec = spec.split('/').next().unwrap_or(spec);
                let parts: Vec<&str> = spec.split(':').collect();
                let port = |s: &str| s.parse::<u16>().ok();
                match parts.as_slice() {
                    [container] => Some(("0.0.0.0".into(), None, port(container)?)),
                    [host, container] => {
                        Some(("0.0.0.0".into(), Some(port(host)?), port(container)?))
                    }
                    [ip, host, container] => {
                        Some(((*ip).into(), Some(port(host)?), port(container)?))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    fn dependencies(&self) -> BTreeMap<String, Option<String>> {
        match &self.depends_on {
            None => BTreeMap::new(),
            Some(DependsOn::List(names)) => names.iter().map(|n| (n.clone(), None)).collect(),
            Some(DependsOn::Map(map)) => map
                .iter()
                .map(|(n, d)| (n.clone(), d.condition.clone()))
                .collect(),
        }
    }

    /// Whether the service is built from this repository.
    fn built_here(&self) -> bool {
        let context = match &self.build {
            Some(Build::Context(c)) => Some(c.as_str()),
            Some(Build::Full { context, .. }) => Some(context.as_deref().unwrap_or(".")),
            None => None,
        };
        matches!(context, Some("." | "./"))
    }
}

/// `scheme://user:password@host:port/path` split into its parts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Url {
    scheme: String,
    user: String,
    password: String,
    host: String,
    port: Option<u16>,
    path: String,
}

fn parse_url(url: &str) -> Option<Url> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, address) = match authority.rsplit_once('@') {
        Some((c, a)) => (c, a),
        None => ("", authority),
    };
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (address, None),
    };
    Some(Url {
        scheme: scheme.into(),
        user: user.into(),
        password: password.into(),
        host: host.into(),
        port,
        path: path.split('?').next().unwrap_or("").into(),
    })
}

/// Whether clap accepts `command` (run with `--help` appended, nothing starts).
fn accepted_by_the_binary(command: &[String]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
    args.push("--help");
    let output = binary::run(dir.path(), "sqlite::memory:", &args);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// The configuration a service's environment gives, loaded as `Settings::load`
/// does (defaults, then `RELEASEDESK__SECTION__KEY`, `DATABASE_URL`, `SMTP_URL`),
/// without touching this process's environment.
fn settings_for(environment: &BTreeMap<String, String>, problems: &mut Vec<String>, who: &str) {
    let defaults = Figment::from(Toml::file(repository().join("config/default.toml")));
    let mut figment = defaults.clone();
    for (name, value) in environment {
        let key = match name.as_str() {
            "DATABASE_URL" => "database.url".to_owned(),
            "SMTP_URL" => "mail.smtp_url".to_owned(),
            other => match other.strip_prefix("RELEASEDESK__") {
                Some(path) => path.to_ascii_lowercase().replace("__", "."),
                None => continue,
            },
        };
        if key != "mail.smtp_url" && defaults.find_value(&key).is_err() {
            problems.push(format!(
                "{who}: {name} names no key of config/default.toml ({key})"
            ));
            continue;
        }
        let parsed: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
        figment = figment.merge(Serialized::default(&key, parsed));
    }
    let settings: Settings = match figment.extract() {
        Ok(settings) => settings,
        Err(e) => {
            problems.push(format!("{who}: the configuration does not load: {e}"));
            return;
        }
    };
    if let Err(e) = settings.store_settings() {
        problems.push(format!("{who}: {e}"));
    }
    if let Err(e) = settings.console_settings() {
        problems.push(format!("{who}: {e}"));
    }
    let took_effect = [
        (
            "DATABASE_URL",
            Some(settings.database.url.expose().to_owned()),
        ),
        (
            "SMTP_URL",
            settings
                .mail
                .smtp_url
                .as_ref()
                .map(|s| s.expose().to_owned()),
        ),
        (
            "RELEASEDESK__SERVER__PUBLIC_URL",
            Some(settings.server.public_url.clone()),
        ),
        (
            "RELEASEDESK__REVIEWER__SESSION_KEY",
            Some(settings.reviewer.session_key.expose().to_owned()),
        ),
    ];
    for (name, loaded) in took_effect {
        if let Some(given) = environment.get(name)
            && loaded.as_deref() != Some(given.as_str())
        {
            problems.push(format!("{who}: {name} did not take effect"));
        }
    }
}

/// The real binary loads the service's configuration (all of its checks) and
/// runs an admin command with it, against a scratch SQLite database. Remembered
/// per environment: the broken copies below share most of theirs.
fn loads_in_the_binary(environment: &BTreeMap<String, String>) -> Result<(), String> {
    type Seen = Mutex<BTreeMap<BTreeMap<String, String>, Result<(), String>>>;
    static SEEN: OnceLock<Seen> = OnceLock::new();
    let seen = SEEN.get_or_init(Seen::default);
    if let Some(known) = seen.lock().unwrap().get(environment) {
        return known.clone();
    }
    let result = run_with_environment(environment);
    seen.lock()
        .unwrap()
        .insert(environment.clone(), result.clone());
    result
}

fn run_with_environment(environment: &BTreeMap<String, String>) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("config-check.db").display()
    );
    let output = Command::new(binary::path())
        .args(["admin", "token", "revoke", "--token"])
        .arg(uuid::Uuid::nil().to_string())
        .current_dir(dir.path())
        .env_clear()
        .envs(environment)
        .env("DATABASE_URL", url)
        .env_remove("SMTP_URL")
        .env("RUST_LOG", "error")
        .output()
        .expect("run releasedesk");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let answer: Option<serde_json::Value> = serde_json::from_str(stderr.trim()).ok();
    match answer {
        Some(json) if json["code"] == "NOT_FOUND" => Ok(()),
        _ => Err(stderr.trim().to_owned()),
    }
}

/// Everything wrong with `compose` and `dockerfile`; empty when all is well.
fn problems(compose: &Value, dockerfile: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let compose: Compose = match serde_norway::from_value(compose.clone()) {
        Ok(compose) => compose,
        Err(e) => return vec![format!("docker-compose.yml has an unexpected shape: {e}")],
    };
    let services = &compose.services;
    let postgres = services.iter().find(|(_, s)| {
        s.image
            .as_deref()
            .is_some_and(|i| i.starts_with("postgres"))
    });
    let mailpit = services
        .iter()
        .find(|(_, s)| s.image.as_deref().is_some_and(|i| i.contains("mailpit")));
    if postgres.is_none() {
        problems.push("no PostgreSQL service".into());
    }
    if mailpit.is_none() {
        problems.push("no Mailpit service".into());
    }
    if let Some((name, service)) = postgres
        && service.healthcheck.is_none()
    {
        problems.push(format!("{name}: PostgreSQL has no healthcheck"));
    }

    let mut host_ports: BTreeMap<u16, String> = BTreeMap::new();
    for (name, service) in services {
        if service.image.is_none() && service.build.is_none() {
            problems.push(format!("{name}: neither image nor build"));
        }
        if let Some(Build::Full {
            context,
            dockerfile,
        }) = &service.build
        {
            let path = repository()
                .join(context.as_deref().unwrap_or("."))
                .join(dockerfile.as_deref().unwrap_or("Dockerfile"));
            if !path.is_file() {
                problems.push(format!("{name}: {} does not exist", path.display()));
            }
        }
        if let Some(Build::Context(context)) = &service.build
            && !repository().join(context).join("Dockerfile").is_file()
        {
            problems.push(format!("{name}: no Dockerfile in {context}"));
        }
        for (ip, host, _) in service.published() {
            if let Some(host) = host
                && let Some(other) = host_ports.insert(host, name.clone())
            {
                problems.push(format!(
                    "{name} and {other} both publish host port {host} ({ip})"
                ));
            }
        }
        for (target, condition) in service.dependencies() {
            let Some(dependency) = services.get(&target) else {
                problems.push(format!("{name}: depends on unknown service {target}"));
                continue;
            };
            match condition.as_deref() {
                Some("service_healthy") if dependency.healthcheck.is_none() => problems.push(
                    format!("{name}: waits for {target} to be healthy, which has no healthcheck"),
                ),
                Some("service_completed_successfully")
                    if dependency.restart.as_deref().is_some_and(|r| r != "no") =>
                {
                    problems.push(format!(
                        "{name}: waits for {target} to complete, which restarts"
                    ))
                }
                None
                | Some("service_started" | "service_healthy")
                | Some("service_completed_successfully") => {}
                Some(other) => problems.push(format!("{name}: unknown condition {other}")),
            }
        }
    }

    for (name, service) in services.iter().filter(|(_, s)| s.built_here()) {
        let command = service.command();
        if command.is_empty() {
            problems.push(format!("{name}: no command"));
        } else if let Err(e) = accepted_by_the_binary(&command) {
            problems.push(format!("{name}: releasedesk rejects {command:?}: {e}"));
        }
        let environment = service.environment();
        check_database_url(name, &environment, postgres, &mut problems);
        check_smtp_url(name, &environment, mailpit, &mut problems);
        for required in ["RUST_LOG", "LOG_FORMAT"] {
            if !environment.contains_key(required) {
                problems.push(format!("{name}: {required} is not set"));
            }
        }
        settings_for(&environment, &mut problems, name);
        if environment.contains_key("DATABASE_URL")
            && let Err(e) = loads_in_the_binary(&environment)
        {
            problems.push(format!("{name}: the binary refuses its configuration: {e}"));
        }

        let one_shot = command.first().is_some_and(|c| c == "migrate");
        if !one_shot {
            if service.restart.as_deref().is_none_or(|r| r == "no") {
                problems.push(format!("{name}: a long-running service without restart"));
            }
            if service.stop_grace_period.is_none() {
                problems.push(format!("{name}: no stop_grace_period to drain in"));
            }
            if !service.dependencies().contains_key("migrate") {
                problems.push(format!("{name}: does not wait for migrate"));
            }
        }
        check_listener(name, service, &command, &mut problems);
    }
    problems.extend(dockerfile_problems(dockerfile, services));
    problems
}

fn check_database_url(
    name: &str,
    environment: &BTreeMap<String, String>,
    postgres: Option<(&String, &Service)>,
    problems: &mut Vec<String>,
) {
    let Some(url) = environment.get("DATABASE_URL") else {
        problems.push(format!("{name}: DATABASE_URL is not set"));
        return;
    };
    let Some((pg_name, pg)) = postgres else {
        return;
    };
    let pg_env = pg.environment();
    let expected = Url {
        scheme: "postgres".into(),
        user: pg_env.get("POSTGRES_USER").cloned().unwrap_or_default(),
        password: pg_env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default(),
        host: pg_name.clone(),
        port: Some(5432),
        path: pg_env
            .get("POSTGRES_DB")
            .or(pg_env.get("POSTGRES_USER"))
            .cloned()
            .unwrap_or_default(),
    };
    if parse_url(url).as_ref() != Some(&expected) {
        problems.push(format!(
            "{name}: DATABASE_URL does not match the {pg_name} service ({expected:?})"
        ));
    }
}

fn check_smtp_url(
    name: &str,
    environment: &BTreeMap<String, String>,
    mailpit: Option<(&String, &Service)>,
    problems: &mut Vec<String>,
) {
    let Some(url) = environment.get("SMTP_URL") else {
        problems.push(format!("{name}: SMTP_URL is not set"));
        return;
    };
    let Some((mail_name, mail)) = mailpit else {
        return;
    };
    let smtp_ports: Vec<u16> = mail.published().iter().map(|p| p.2).collect();
    match parse_url(url) {
        Some(u) if u.scheme == "smtp" && &u.host == mail_name && u.port == Some(1025) => {}
        _ => problems.push(format!(
            "{name}: SMTP_URL {url} is not smtp://{mail_name}:1025"
        )),
    }
    if !smtp_ports.contains(&1025) || !smtp_ports.contains(&8025) {
        problems.push(format!(
            "{mail_name}: SMTP 1025 and the UI 8025 must be published"
        ));
    }
}

/// An HTTP service listens on all interfaces, on the port it publishes and its
/// healthcheck asks `/readyz` on.
fn check_listener(name: &str, service: &Service, command: &[String], problems: &mut Vec<String>) {
    let addr = command
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| command.get(i + 1));
    let http = matches!(
        command.first().map(String::as_str),
        Some("api" | "reviewer" | "serve")
    );
    if !http {
        return;
    }
    let Some(addr) = addr.and_then(|a| a.parse::<std::net::SocketAddr>().ok()) else {
        problems.push(format!("{name}: an HTTP service without a valid --addr"));
        return;
    };
    if !addr.ip().is_unspecified() {
        problems.push(format!(
            "{name}: --addr {addr} is unreachable from outside the container"
        ));
    }
    let container_ports: Vec<u16> = service.published().iter().map(|p| p.2).collect();
    if !container_ports.contains(&addr.port()) {
        problems.push(format!(
            "{name}: listens on {} but publishes {container_ports:?}",
            addr.port()
        ));
    }
    let test = service
        .healthcheck
        .as_ref()
        .and_then(|h| h.test.as_ref())
        .map(|t| match t {
            OneOrMany::One(s) => s.clone(),
            OneOrMany::Many(v) => v.join(" "),
        })
        .unwrap_or_default();
    if !test.contains("/readyz") || !test.contains(&format!("/{}", addr.port())) {
        problems.push(format!(
            "{name}: the healthcheck does not ask /readyz on port {}",
            addr.port()
        ));
    }
}

fn dockerfile_problems(dockerfile: &str, services: &BTreeMap<String, Service>) -> Vec<String> {
    let mut problems = Vec::new();
    let instructions: Vec<(String, String)> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace)?;
            Some((word.to_ascii_uppercase(), rest.trim().to_owned()))
        })
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (w, _))| w == "FROM")
        .map(|(i, _)| i)
        .collect();
    if stages.len() < 2 {
        problems.push(format!(
            "Dockerfile: {} FROM stage(s), expected a build and a runtime stage",
            stages.len()
        ));
    }
    if !instructions
        .iter()
        .any(|(w, rest)| w == "FROM" && rest.starts_with("rust:1.95-bookworm"))
    {
        problems.push("Dockerfile: no rust:1.95-bookworm build stage".into());
    }
    if !dockerfile.contains("SQLX_OFFLINE=true") {
        problems.push("Dockerfile: builds without SQLX_OFFLINE=true".into());
    }
    let final_stage = &instructions[stages.last().copied().unwrap_or(0)..];
    let user = final_stage
        .iter()
        .rev()
        .find(|(w, _)| w == "USER")
        .map(|(_, u)| u.split(':').next().unwrap_or_default().to_owned());
    match user.as_deref() {
        None => problems.push("Dockerfile: the final stage has no USER (runs as root)".into()),
        Some("root" | "0") => problems.push("Dockerfile: the final stage runs as root".into()),
        Some(_) => {}
    }
    let has = |word: &str, needle: &str| {
        final_stage
            .iter()
            .any(|(w, rest)| w == word && rest.contains(needle))
    };
    if !has("STOPSIGNAL", "SIGTERM") {
        problems.push("Dockerfile: no STOPSIGNAL SIGTERM".into());
    }
    if !has("ENTRYPOINT", "releasedesk") {
        problems.push("Dockerfile: the entrypoint is not releasedesk".into());
    }
    let exposed: BTreeSet<u16> = final_stage
        .iter()
        .filter(|(w, _)| w == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .filter_map(|p| p.split('/').next()?.parse().ok())
        .collect();
    for (name, service) in services.iter().filter(|(_, s)| s.built_here()) {
        for (_, _, port) in service.published() {
            if !exposed.contains(&port) {
                problems.push(format!("Dockerfile: {name}'s port {port} is not EXPOSEd"));
            }
        }
    }
    problems
}

#[test]
fn compose_file_and_dockerfile_agree_with_the_binary_and_its_configuration() {
    let mut found = Vec::new();
    let compose = load_compose(&mut found);
    found.extend(problems(&compose, &read("Dockerfile")));
    assert!(found.is_empty(), "problems:\n{}", found.join("\n"));
}

/// The mapping of service `name`.
fn service<'a>(compose: &'a mut Value, name: &str) -> &'a mut serde_norway::Mapping {
    compose["services"][name]
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("service {name}"))
}

/// Sets (or with `None` removes) one environment variable of service `name`.
fn env(compose: &mut Value, name: &str, key: &str, value: Option<&str>) {
    let environment = compose["services"][name]["environment"]
        .as_mapping_mut()
        .unwrap();
    match value {
        Some(v) => environment.insert(key.into(), v.into()),
        None => environment.remove(key),
    };
}

/// The checks above can fail: each broken copy of the files is caught.
#[test]
fn broken_compose_files_and_dockerfiles_are_caught() {
    let mut ignored = Vec::new();
    let good = load_compose(&mut ignored);
    let dockerfile = read("Dockerfile");
    type Breakage = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);
    let breakages: Vec<Breakage> = vec![
        (
            "a service without environment",
            Box::new(|c| {
                service(c, "api").remove("environment");
            }),
            "api: DATABASE_URL is not set",
        ),
        (
            "a wrong database password",
            Box::new(|c| {
                env(
                    c,
                    "worker",
                    "DATABASE_URL",
                    Some("postgres://releasedesk:wrong@postgres:5432/releasedesk"),
                )
            }),
            "worker: DATABASE_URL does not match",
        ),
        (
            "SMTP at the wrong port",
            Box::new(|c| env(c, "worker", "SMTP_URL", Some("smtp://mailpit:25"))),
            "worker: SMTP_URL",
        ),
        (
            "a misspelt configuration key",
            Box::new(|c| {
                env(
                    c,
                    "reviewer",
                    "RELEASEDESK__SERVER__PUBLIC_ULR",
                    Some("http://x"),
                )
            }),
            "names no key of config/default.toml",
        ),
        (
            "a configuration value the binary refuses",
            Box::new(|c| env(c, "api", "RELEASEDESK__WORKER__LEASE", Some("1s"))),
            "api: the binary refuses its configuration",
        ),
        (
            "a session key that is too short",
            Box::new(|c| {
                env(
                    c,
                    "reviewer",
                    "RELEASEDESK__REVIEWER__SESSION_KEY",
                    Some("c2hvcnQ="),
                )
            }),
            "reviewer: invalid reviewer.session_key",
        ),
        (
            "an unknown subcommand",
            Box::new(|c| {
                service(c, "worker").insert("command".into(), vec!["wroker"].into());
            }),
            "worker: releasedesk rejects",
        ),
        (
            "an unknown flag",
            Box::new(|c| {
                service(c, "api").insert(
                    "command".into(),
                    vec!["api", "--adr", "0.0.0.0:8080"].into(),
                );
            }),
            "api: releasedesk rejects",
        ),
        (
            "a listener on another port than the published one",
            Box::new(|c| {
                service(c, "reviewer").insert(
                    "command".into(),
                    vec!["reviewer", "--addr", "0.0.0.0:9000"].into(),
                );
            }),
            "reviewer: listens on 9000",
        ),
        (
            "two services on one host port",
            Box::new(|c| {
                service(c, "reviewer").insert("ports".into(), vec!["8080:8081"].into());
            }),
            "both publish host port 8080",
        ),
        (
            "a dependency on a missing service",
            Box::new(|c| {
                service(c, "api").insert(
                    "depends_on".into(),
                    serde_norway::from_str("{migrate: {condition: service_completed_successfully}, db: {condition: service_healthy}}").unwrap(),
                );
            }),
            "api: depends on unknown service db",
        ),
        (
            "a service with neither image nor build",
            Box::new(|c| {
                service(c, "mailpit").remove("image");
            }),
            "neither image nor build",
        ),
        (
            "a build from a missing Dockerfile",
            Box::new(|c| {
                service(c, "worker").insert(
                    "build".into(),
                    serde_norway::from_str("{context: ., dockerfile: Dockerfile.missing}").unwrap(),
                );
            }),
            "Dockerfile.missing does not exist",
        ),
    ];
    for (what, breakage, expected) in breakages {
        let mut broken = good.clone();
        breakage(&mut broken);
        let found = problems(&broken, &dockerfile);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{what}: expected a problem containing {expected:?}, got {found:#?}"
        );
    }

    let dockerfiles = [
        (
            dockerfile.replace("USER 10001:10001", ""),
            "the final stage has no USER",
        ),
        (
            dockerfile.replace("USER 10001:10001", "USER root"),
            "runs as root",
        ),
        (
            "FROM rust:1.95-bookworm\nENV SQLX_OFFLINE=true\nUSER app\nSTOPSIGNAL SIGTERM\nENTRYPOINT [\"releasedesk\"]\nEXPOSE 8080 8081\n".to_owned(),
            "1 FROM stage(s)",
        ),
        (
            dockerfile.replace("EXPOSE 8080 8081", "EXPOSE 8080"),
            "port 8081 is not EXPOSEd",
        ),
    ];
    for (broken, expected) in dockerfiles {
        let found = problems(&good, &broken);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected a problem containing {expected:?}, got {found:#?}"
        );
    }
}

#[test]
fn interpolation_uses_defaults_and_reports_required_variables() {
    let mut problems = Vec::new();
    assert_eq!(
        interpolate("a ${X:-one} b ${Y-two} c ${Z} d $$ e $W.", &mut problems),
        "a one b two c  d $ e ."
    );
    assert!(problems.is_empty());
    interpolate("${KEY:?set KEY}", &mut problems);
    assert_eq!(problems, ["docker-compose.yml requires $KEY to be set"]);
}

/// The api's healthcheck command, run as Docker would run it (its port swapped
/// for the test server's), passes against a ready `releasedesk api` and fails
/// where nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readyz_healthcheck_passes_against_a_running_api_and_fails_without_one() {
    let mut ignored = Vec::new();
    let compose: Compose = serde_norway::from_value(load_compose(&mut ignored)).unwrap();
    let api = &compose.services["api"];
    let test = match api.healthcheck.as_ref().and_then(|h| h.test.as_ref()) {
        Some(OneOrMany::Many(test)) => test.clone(),
        other => panic!("api's healthcheck test must be a CMD list, got {other:?}"),
    };
    assert_eq!(test[0], "CMD", "{test:?}");

    let database = TestDatabase::sqlite();
    let service = Process::start(Role::Api, &Environment::new(database.url())).await;
    let port = service.base_url().rsplit(':').next().unwrap().to_owned();
    let run = |port: &str| {
        let args: Vec<String> = test[2..]
            .iter()
            .map(|a| a.replace("/8080", &format!("/{port}")))
            .collect();
        Command::new(&test[1]).args(&args).status().unwrap()
    };
    assert!(run(&port).success(), "healthy while the api is ready");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unused = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    assert!(!run(&unused).success(), "unhealthy where nothing listens");
}
