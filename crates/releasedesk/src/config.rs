//! Configuration: `config/default.toml` (built in), then the file named by
//! `--config` / `RELEASEDESK_CONFIG`, then the environment.

use std::{
    fmt,
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use axum_extra::extract::cookie::Key;
use base64::Engine as _;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use releasedesk_api::guard::{GuardSettings, RateLimit};
use releasedesk_domain::{Money, ReleasePolicy};
use releasedesk_reviewer::ConsoleSettings;
use releasedesk_store::{DbOptions, KeyTimes, StoreSettings};
use serde::Deserialize;

/// The built-in defaults; the file in the repository is the documentation.
const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// A string that is never printed (URLs with passwords).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    pub release: ReleaseSettings,
    pub billing: BillingSettings,
    pub notifications: NotificationSettings,
    pub mail: MailSettings,
    pub worker: WorkerSettings,
    pub reviewer: ReviewerSettings,
    pub carrier: CarrierSettings,
    pub rate_limit: RateLimitSettings,
    pub idempotency: IdempotencySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub addr: SocketAddr,
    pub public_url: String,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// Requests per bearer token (or per client address without one), per process.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencySettings {
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub lock: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseSettings {
    #[serde(with = "humantime_serde")]
    pub cooling_off: Duration,
    #[serde(with = "humantime_serde")]
    pub reclaim_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BillingSettings {
    #[serde(with = "humantime_serde")]
    pub minimum_term: Duration,
    pub early_termination_fee: String,
    pub currency: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NotificationSettings {
    pub staff_email: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MailSettings {
    pub from: String,
    pub outbox_dir: PathBuf,
    pub smtp_url: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub batch_size: u64,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
    pub queue: String,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CarrierKind {
    Local,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CarrierSettings {
    pub kind: CarrierKind,
    pub url: String,
    pub secret: Secret,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReviewerSettings {
    pub session_key: Secret,
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error(transparent)]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid {key}: {message}")]
    Value { key: &'static str, message: String },
}

impl Settings {
    /// Loads the layered configuration. `file` is `--config`; without it,
    /// `RELEASEDESK_CONFIG` names the file, if set.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        let from_env = std::env::var_os("RELEASEDESK_CONFIG").map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(from_env) {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(Env::prefixed("RELEASEDESK__").split("__"))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["SMTP_URL"])
                    .map(|_| "mail.smtp_url".into()),
            )
            .extract()
            .map_err(Box::new)?;
        settings.store_settings()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The console's cookie settings; a random key when none is configured.
    pub fn console_settings(&self) -> Result<ConsoleSettings, ConfigError> {
        let configured = self.reviewer.session_key.expose().trim();
        let key = if configured.is_empty() {
            tracing::warn!(
                "reviewer.session_key is not set: using a random key; console sessions end on restart"
            );
            Key::generate()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(configured)
                .ok()
                .filter(|b| b.len() >= 64)
                .ok_or(ConfigError::Value {
                    key: "reviewer.session_key",
                    message: "must be base64 of at least 64 bytes".into(),
                })?;
            Key::from(&bytes)
        };
        Ok(ConsoleSettings {
            key,
            secure_cookies: self.server.public_url.starts_with("https://"),
            session_ttl: self.reviewer.session_ttl,
        })
    }

    /// Relations between keys that each look fine alone.
    fn validate(&self) -> Result<(), ConfigError> {
        // A worker's lease must outlast a carrier call, or a slow call lets another
        // worker take the release over and call the carrier a second time.
        if self.worker.lease <= self.carrier.timeout {
            return Err(ConfigError::Value {
                key: "worker.lease",
                message: format!(
                    "must be longer than carrier.timeout ({})",
                    humantime::format_duration(self.carrier.timeout)
                ),
            });
        }
        // A claim must outlive the request it guards, or a slow request's retry
        // runs it a second time.
        if self.idempotency.lock <= self.server.request_timeout {
            return Err(ConfigError::Value {
                key: "idempotency.lock",
                message: format!(
                    "must be longer than server.request_timeout ({})",
                    humantime::format_duration(self.server.request_timeout)
                ),
            });
        }
        if self.carrier.kind == CarrierKind::Http && self.carrier.url.trim().is_empty() {
            return Err(ConfigError::Value {
                key: "carrier.url",
                message: "is required when carrier.kind = \"http\"".into(),
            });
        }
        Ok(())
    }

    /// The guard in front of the JSON APIs: rate limits and idempotency keys.
    pub fn guard_settings(&self, max_body_bytes: usize) -> GuardSettings {
        let limit = &self.rate_limit;
        GuardSettings {
            rate_limit: limit.enabled.then_some(RateLimit {
                per_second: limit.per_second,
                burst: limit.burst,
            }),
            idempotency: KeyTimes {
                retention: self.idempotency.retention,
                lock: self.idempotency.lock,
            },
            max_body_bytes,
        }
    }

    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            url: self.database.url.expose().to_owned(),
            max_connections: self.database.max_connections,
            acquire_timeout: self.database.acquire_timeout,
            busy_timeout: self.database.busy_timeout,
        }
    }

    pub fn store_settings(&self) -> Result<StoreSettings, ConfigError> {
        let fee: Money =
            self.billing
                .early_termination_fee
                .parse()
                .map_err(|_| ConfigError::Value {
                    key: "billing.early_termination_fee",
                    message: "must be a decimal amount such as 25.00".into(),
                })?;
        let currency = self.billing.currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ConfigError::Value {
                key: "billing.currency",
                message: "must be a three-letter ISO 4217 code".into(),
            });
        }
        Ok(StoreSettings {
            policy: ReleasePolicy {
                cooling_off: self.release.cooling_off,
                reclaim_window: self.release.reclaim_window,
                minimum_term: self.billing.minimum_term,
                early_termination_fee: fee,
                currency,
            },
            staff_email: self.notifications.staff_email.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let settings: Settings = Figment::from(Toml::string(DEFAULTS)).extract().unwrap();
        let store = settings.store_settings().unwrap();
        assert_eq!(store.policy.cooling_off, Duration::from_secs(30 * 86_400));
        assert_eq!(
            store.policy.reclaim_window,
            Duration::from_secs(10 * 86_400)
        );
        assert_eq!(store.policy.minimum_term, Duration::from_secs(90 * 86_400));
        assert_eq!(store.policy.early_termination_fee.to_string(), "25.00");
        assert_eq!(store.policy.currency, "USD");
        assert_eq!(store.staff_email, "support@localhost");
        assert_eq!(
            settings.database.url.expose(),
            "sqlite://releasedesk.db?mode=rwc"
        );
        assert_eq!(settings.worker.sweep_interval, Duration::from_secs(60));
        assert_eq!(settings.mail.outbox_dir, PathBuf::from("var/mail"));
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment::Error"
    )]
    fn environment_overrides_nested_keys_and_database_url() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELEASEDESK__RELEASE__COOLING_OFF", "7days");
            jail.set_env("DATABASE_URL", "postgres://root@127.0.0.1:5432/x");
            jail.create_file("over.toml", "[billing]\nearly_termination_fee = \"9.50\"\n")?;
            let settings = Settings::load(Some(Path::new("over.toml"))).unwrap();
            assert_eq!(
                settings.release.cooling_off,
                Duration::from_secs(7 * 86_400)
            );
            assert_eq!(
                settings.database.url.expose(),
                "postgres://root@127.0.0.1:5432/x"
            );
            assert_eq!(settings.billing.early_termination_fee, "9.50");
            assert!(
                !format!("{settings:?}").contains("postgres://"),
                "URLs are redacted"
            );
            Ok(())
        });
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment::Error"
    )]
    fn a_lease_shorter_than_a_carrier_call_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELEASEDESK__WORKER__LEASE", "5s");
            jail.set_env("RELEASEDESK__CARRIER__TIMEOUT", "10s");
            assert!(matches!(
                Settings::load(None),
                Err(ConfigError::Value {
                    key: "worker.lease",
                    ..
                })
            ));
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        assert!(matches!(
            Settings::load(Some(Path::new("/nonexistent/releasedesk.toml"))),
            Err(ConfigError::MissingFile(_))
        ));
    }
}
