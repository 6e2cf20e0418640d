//! IAM database authentication for RDS and Aurora PostgreSQL (`database_iam_auth`): the password is an auth token,
//! a SigV4-presigned `connect` URL signed with the server's own AWS credentials, valid for 15 minutes. Tokens are
//! made again every `database_iam_token_refresh` and handed to the pool for the connections it opens next (open
//! connections stay authenticated). The database must be reached over TLS, which RDS requires for IAM
//! authentication (the configuration refuses anything below `require`).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

/// How long RDS accepts a token after it was signed (its documented maximum).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// The service name RDS tokens are signed for.
const SIGNING_NAME: &str = "rds-db";
/// After a failed refresh (credentials not reachable), how soon to try again: well inside the current token's
/// remaining life.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// A token dies with the session credentials that signed it: the next one is signed this long before those
/// credentials expire (instance, container and pod credentials can have minutes left), so new connections never
/// carry a token signed by expired credentials.
const BEFORE_CREDENTIALS_EXPIRE: Duration = Duration::from_secs(60);
/// The shortest wait between refreshes, whatever the credentials' expiry says (a provider handing out credentials
/// about to expire must not make a busy loop).
const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Signs auth tokens for one database user at one endpoint.
#[derive(Clone)]
pub struct RdsAuth {
    host: String,
    port: u16,
    user: String,
    region: String,
    credentials: SharedCredentialsProvider,
}

impl std::fmt::Debug for RdsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdsAuth")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl RdsAuth {
    pub fn new(
        options: &PgConnectOptions,
        region: String,
        credentials: SharedCredentialsProvider,
    ) -> Self {
        Self {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            user: options.get_username().to_owned(),
            region,
            credentials,
        }
    }

    /// The region an RDS endpoint is in (`name.cluster-x.eu-west-1.rds.amazonaws.com`), if its name says.
    pub fn region_of_endpoint(host: &str) -> Option<String> {
        let labels: Vec<&str> = host.split('.').collect();
        let rds = labels.iter().position(|l| *l == "rds")?;
        (rds >= 1 && labels.get(rds + 1) == Some(&"amazonaws"))
            .then(|| labels[rds - 1].to_owned())
            .filter(|r| r.contains('-'))
    }

    /// A token signed now with the current credentials.
    pub async fn token(&self) -> anyhow::Result<String> {
        Ok(self.token_and_expiry().await?.0)
    }

    /// A token signed now, and when the credentials that signed it expire (None: long-term credentials).
    pub async fn token_and_expiry(&self) -> anyhow::Result<(String, Option<SystemTime>)> {
        let credentials = self.credentials.provide_credentials().await.map_err(|e| {
            anyhow::anyhow!("no AWS credentials to sign the database auth token with: {e}")
        })?;
        let token = self.token_at(&credentials, SystemTime::now())?;
        Ok((token, credentials.expiry()))
    }

    /// The token for `credentials` at `time`: `host:port/?Action=connect&DBUser=...&X-Amz-...`.
    pub fn token_at(&self, credentials: &Credentials, time: SystemTime) -> anyhow::Result<String> {
        let identity = credentials.clone().into();
        let mut settings = SigningSettings::default();
        settings.expires_in = Some(TOKEN_LIFETIME);
        settings.signature_location = SignatureLocation::QueryParams;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(time)
            .settings(settings)
            .build()?
            .into();
        let user: String = form_urlencoded::byte_serialize(self.user.as_bytes()).collect();
        let url = format!(
            "https://{}:{}/?Action=connect&DBUser={user}",
            self.host, self.port
        );
        let signable =
            SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::empty())?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::builder().uri(&url).body(())?;
        instructions.apply_to_request_http1x(&mut request);
        let signed = request.uri().to_string();
        Ok(signed
            .strip_prefix("https://")
            .unwrap_or(&signed)
            .to_owned())
    }
}

/// When to sign the next token: after `every`, or sooner, shortly before the signing credentials expire.
pub fn next_refresh(every: Duration, expiry: Option<SystemTime>, now: SystemTime) -> Duration {
    let until_expiry = expiry.map(|at| {
        at.duration_since(now)
            .unwrap_or_default()
            .saturating_sub(BEFORE_CREDENTIALS_EXPIRE)
    });
    until_expiry
        .map_or(every, |left| left.min(every))
        .max(MIN_REFRESH)
}

/// Keeps the pool's password a fresh token until `shutdown`: every `every` (well inside the token's 15 minutes),
/// sooner when the signing credentials expire first, and after a failure every 30 s until it works again.
pub async fn keep_fresh(
    pool: sqlx::PgPool,
    options: PgConnectOptions,
    auth: RdsAuth,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut wait = every;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        match auth.token_and_expiry().await {
            Ok((token, expiry)) => {
                pool.set_connect_options(options.clone().password(&token));
                wait = next_refresh(every, expiry, SystemTime::now());
                tracing::debug!(next_in = ?wait, "database auth token refreshed");
            }
            Err(error) => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "refreshing the database auth token failed; new connections use the previous token \
                     until it expires"
                );
                wait = RETRY_AFTER_FAILURE.min(every);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> RdsAuth {
        let options: PgConnectOptions =
            "postgres://tablecrypt@db.cluster-abc.us-east-1.rds.amazonaws.com:5432/tablecrypt"
                .parse()
                .expect("url");
        RdsAuth::new(
            &options,
            "us-east-1".into(),
            SharedCredentialsProvider::new(credentials()),
        )
    }

    fn credentials() -> Credentials {
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        )
    }

    /// The token botocore signs for the same inputs (an implementation that is not ours), printed by
    /// `services/server/tests/rds_token.py`.
    const BOTOCORE_TOKEN: &str = include_str!("../tests/rds_token_botocore.txt");

    #[test]
    fn a_token_is_what_botocore_signs() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800); // 2026-12-02T12:00:00Z
        let token = auth().token_at(&credentials(), time).expect("token");
        assert_eq!(token, BOTOCORE_TOKEN.trim());
        assert!(token.starts_with(
            "db.cluster-abc.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=tablecrypt&"
        ));
        assert!(token.contains("X-Amz-Expires=900"));
        assert!(token.contains("%2Fus-east-1%2Frds-db%2Faws4_request"));
    }

    #[test]
    fn a_later_token_differs() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800);
        let a = auth().token_at(&credentials(), now).expect("token");
        let b = auth()
            .token_at(&credentials(), now + Duration::from_secs(600))
            .expect("token");
        assert_ne!(a, b);
    }

    #[test]
    fn the_next_token_comes_before_the_credentials_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800);
        let every = Duration::from_secs(600);
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(next_refresh(every, None, now), every);
        assert_eq!(next_refresh(every, Some(now + minutes(60)), now), every);
        // Credentials with 5 minutes left: the next token 4 minutes from now, signed by the renewed ones.
        assert_eq!(next_refresh(every, Some(now + minutes(5)), now), minutes(4));
        // Already (nearly) expired: soon, but never a busy loop.
        assert_eq!(next_refresh(every, Some(now), now), MIN_REFRESH);
        assert_eq!(
            next_refresh(every, Some(now - minutes(1)), now),
            MIN_REFRESH
        );
    }

    #[test]
    fn the_region_comes_from_an_rds_endpoint() {
        for (host, region) in [
            (
                "db.cluster-abc.eu-west-1.rds.amazonaws.com",
                Some("eu-west-1"),
            ),
            (
                "mydb.c9akciq32.us-east-2.rds.amazonaws.com",
                Some("us-east-2"),
            ),
            ("db.example.internal", None),
            ("rds.amazonaws.com", None),
        ] {
            assert_eq!(
                RdsAuth::region_of_endpoint(host).as_deref(),
                region,
                "{host}"
            );
        }
    }
}
