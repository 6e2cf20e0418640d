//! The database's address and how the server talks TLS to it: the URL, the `sslmode` (from the config, else the
//! URL, else `PGSSLMODE`), the CA bundle and client certificate, and the rule that a database on another machine
//! is reached over TLS (managed PostgreSQL enforces it: RDS for PostgreSQL 15+ sets `rds.force_ssl=1`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// libpq's `sslmode` values, with libpq's meanings, ordered from least to most protection (`>= Require` always encrypts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseSslMode {
    /// Plaintext only.
    Disable,
    /// Plaintext, TLS if the server insists.
    Allow,
    /// TLS if the server offers it, else plaintext; the certificate is not checked.
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS, and the certificate must chain to a trusted CA (`database_sslrootcert`, else the public web roots).
    VerifyCa,
    /// As verify-ca, and the certificate must name the host connected to.
    VerifyFull,
}

impl DatabaseSslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether every connection in this mode is encrypted.
    fn always_encrypted(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }

    fn sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Allow => PgSslMode::Allow,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// The TLS settings next to the URL, each winning over the URL's own parameter of the same name.
#[derive(Debug, Clone, Default)]
pub struct DatabaseTls<'a> {
    pub sslmode: Option<DatabaseSslMode>,
    pub sslrootcert: Option<&'a Path>,
    pub sslcert: Option<&'a Path>,
    pub sslkey: Option<&'a Path>,
}

/// How to reach the database, checked: the options to connect with, and what to warn about at start.
#[derive(Debug)]
pub struct DatabaseConnection {
    pub options: PgConnectOptions,
    pub sslmode: DatabaseSslMode,
    /// Said once at start (a certificate that is not checked, plaintext allowed by --insecure).
    pub warnings: Vec<String>,
}

/// Combines the URL and the TLS settings. A database on another machine must be reached with an sslmode that
/// always encrypts: unstated, it is `require` there (libpq's default `prefer` would fall back to plaintext
/// without a word); stated below `require`, the server refuses to start, unless `insecure` (development only).
pub fn connection(
    url: &DatabaseUrl,
    tls: &DatabaseTls<'_>,
    insecure: bool,
) -> anyhow::Result<DatabaseConnection> {
    let mut options = url.options.clone();
    let host = options
        .get_socket()
        .map(|socket| socket.display().to_string())
        .unwrap_or_else(|| options.get_host().to_owned());
    let local = options.get_socket().is_some() || is_loopback(&host);
    let stated = match tls.sslmode {
        Some(mode) => Some((mode, "database_sslmode")),
        None => match url.sslmode {
            Some(mode) => Some((mode, "the sslmode of DATABASE_URL")),
            None => match std::env::var("PGSSLMODE") {
                Ok(text) => Some((
                    DatabaseSslMode::parse(&text).with_context(|| {
                        format!(
                            "invalid configuration: PGSSLMODE {text:?} is not one of disable, allow, prefer, \
                             require, verify-ca, verify-full"
                        )
                    })?,
                    "PGSSLMODE",
                )),
                Err(_) => None,
            },
        },
    };
    let mut warnings = Vec::new();
    let sslmode = match stated {
        Some((mode, _)) if mode.always_encrypted() || local => mode,
        Some((mode, source)) if insecure => {
            warnings.push(format!(
                "the database at {host} may be reached in plaintext ({source} = {}): allowed only because the \
                 server runs insecure (development only)",
                mode.as_str()
            ));
            mode
        }
        Some((mode, source)) => anyhow::bail!(
            "invalid configuration: database_sslmode: the database at {host} is on another machine, so its \
             connection must be encrypted, but {source} is {}; use require, verify-ca or verify-full (with \
             database_sslrootcert naming the CA bundle, for RDS the global bundle)",
            mode.as_str()
        ),
        None if local => DatabaseSslMode::Prefer,
        None if insecure => DatabaseSslMode::Prefer,
        None => DatabaseSslMode::Require,
    };
    options = options.ssl_mode(sslmode.sqlx());
    if !local
        && matches!(
            sslmode,
            DatabaseSslMode::Require | DatabaseSslMode::VerifyCa
        )
    {
        warnings.push(format!(
            "the database at {host} is reached with sslmode {}: the connection is encrypted but {}; set \
             database_sslmode = \"verify-full\" and database_sslrootcert to the CA bundle",
            sslmode.as_str(),
            if sslmode == DatabaseSslMode::Require {
                "its certificate is not checked"
            } else {
                "the certificate's host name is not checked"
            }
        ));
    }
    if let Some(path) = tls.sslrootcert.or(url.sslrootcert.as_deref()) {
        readable(path, "database_sslrootcert")?;
        options = options.ssl_root_cert(path);
    }
    let cert = tls.sslcert.or(url.sslcert.as_deref());
    let key = tls.sslkey.or(url.sslkey.as_deref());
    match (cert, key) {
        (Some(cert), Some(key)) => {
            readable(cert, "database_sslcert")?;
            readable(key, "database_sslkey")?;
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        (None, None) => {}
        _ => anyhow::bail!(
            "invalid configuration: database_sslcert and database_sslkey (a client certificate and its key) go \
             together"
        ),
    }
    Ok(DatabaseConnection {
        options,
        sslmode,
        warnings,
    })
}

/// A host name or address of this machine: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn readable(path: &Path, key: &str) -> anyhow::Result<()> {
    std::fs::File::open(path).map(drop).with_context(|| {
        format!(
            "invalid configuration: {key} {} cannot be read",
            path.display()
        )
    })
}

/// A Postgres URL, parsed at load so a typo fails at start with a clear message; `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    options: PgConnectOptions,
    /// The URL's own TLS parameters, kept to tell a stated sslmode from libpq's default.
    sslmode: Option<DatabaseSslMode>,
    sslrootcert: Option<PathBuf>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
}

impl DatabaseUrl {
    /// The URL with its password, for handing to a child process; never log it.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    /// Whether the URL carries a password (`user:password@`, or a `password=` parameter).
    pub fn has_password(&self) -> bool {
        let url = self.url.expose_secret();
        let query = url.split_once('?').map_or("", |(_, query)| query);
        if form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "password") {
            return true;
        }
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    }
}

impl FromStr for DatabaseUrl {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "DATABASE_URL must be a postgres:// URL"
        );
        let (mut sslmode, mut sslrootcert, mut sslcert, mut sslkey) = (None, None, None, None);
        let query = url.split_once('?').map_or("", |(_, query)| query);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "sslmode" | "ssl-mode" => {
                    sslmode = Some(DatabaseSslMode::parse(&value).with_context(|| {
                        format!(
                            "DATABASE_URL: sslmode {value:?} is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        )
                    })?);
                }
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                    sslrootcert = Some(PathBuf::from(&*value));
                }
                "sslcert" | "ssl-cert" => sslcert = Some(PathBuf::from(&*value)),
                "sslkey" | "ssl-key" => sslkey = Some(PathBuf::from(&*value)),
                _ => {}
            }
        }
        let options =
            PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid Postgres URL")?;
        let parsed = Self {
            url: SecretString::from(url.to_owned()),
            options,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
        };
        Ok(parsed)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opts = &self.options;
        write!(
            f,
            "postgres://{}:[redacted]@{}:{}/{}",
            opts.get_username(),
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        )
    }
}

impl DatabaseUrl {
    /// The URL with its password (in the userinfo or a `password=` parameter) replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        super::show::redact_url(self.url.expose_secret())
    }
}

impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}
