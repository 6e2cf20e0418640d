//! IAM database authentication from the database's side of the wire: a stand-in PostgreSQL (it speaks the
//! protocol up to the password, over TLS, then refuses) records the password each new connection sends. The
//! password is an RDS auth token signed with the server's credentials, and a new one goes out after each refresh.
//! (The shared PostgreSQL cannot check an RDS token; botocore's agreement on the token's signature is a unit test
//! in `tablecrypt-server`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tablecrypt_server::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// PostgreSQL's SSLRequest code.
const SSL_REQUEST: u32 = 80_877_103;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A connection that did not ask for TLS first.
    Plaintext,
    /// The password a TLS connection sent.
    Password(String),
}

async fn serve_one(
    mut tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    tcp.read_exact(&mut head).await?;
    if u32::from_be_bytes([head[4], head[5], head[6], head[7]]) != SSL_REQUEST {
        seen.lock().expect("seen").push(Seen::Plaintext);
        return Ok(());
    }
    tcp.write_all(b"S").await?;
    let mut tls = acceptor.accept(tcp).await?;
    let length = tls.read_u32().await? as usize;
    let mut startup = vec![0u8; length.saturating_sub(4)];
    tls.read_exact(&mut startup).await?;
    // AuthenticationCleartextPassword: the client sends its password as is.
    tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    let kind = tls.read_u8().await?;
    let length = tls.read_u32().await? as usize;
    let mut body = vec![0u8; length.saturating_sub(4)];
    tls.read_exact(&mut body).await?;
    if kind == b'p' {
        let password =
            String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
        seen.lock().expect("seen").push(Seen::Password(password));
    }
    let fields = b"SFATAL\0C28P01\0Mthe stand-in refuses every connection\0\0";
    let mut error = vec![b'E'];
    error.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    error.extend_from_slice(fields);
    tls.write_all(&error).await?;
    tls.shutdown().await
}

async fn stand_in_postgres() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
        .expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_one(tcp, acceptor.clone(), recorded.clone()));
        }
    });
    (port, seen)
}

fn passwords(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    seen.lock()
        .expect("seen")
        .iter()
        .filter_map(|s| match s {
            Seen::Password(p) => Some(p.clone()),
            Seen::Plaintext => None,
        })
        .collect()
}

/// Asks the pool for a connection (the stand-in refuses it once it has the password) until one more password
/// than `before` was seen.
async fn next_password(pool: &sqlx::PgPool, seen: &Mutex<Vec<Seen>>, before: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let _ = pool.acquire().await;
        let all = passwords(seen);
        if all.len() > before {
            return all[before].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no password sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_password_is_an_rds_token_sent_over_tls_and_renewed_on_schedule() {
    let (port, seen) = stand_in_postgres().await;
    let config = Config::from_toml(&format!(
        "insecure = true
database_url = 'postgres://tablecrypt@localhost:{port}/tablecrypt'
database_sslmode = 'require'
database_iam_auth = true
database_iam_region = 'eu-west-1'
database_iam_token_refresh = '1s'
database_acquire_timeout = '1s'"
    ))
    .expect("config");
    let database = tablecrypt_server::server::connect(&config)
        .await
        .expect("the first token is signed at start");
    let tasks = tokio_util::task::TaskTracker::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    database.keep_token_fresh(&tasks, shutdown.clone());

    let first = next_password(&database.pool, &seen, 0).await;
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").expect("the hub key (.cargo/config.toml)");
    let expected_prefix = format!(
        "localhost:{port}/?Action=connect&DBUser=tablecrypt&X-Amz-Algorithm=AWS4-HMAC-SHA256&\
         X-Amz-Credential={key_id}%2F"
    );
    assert!(first.starts_with(&expected_prefix), "{first}");
    assert!(
        first.contains("%2Feu-west-1%2Frds-db%2Faws4_request&")
            && first.contains("X-Amz-Expires=900"),
        "{first}"
    );
    assert!(!first.contains("X-Amz-Security-Token") || std::env::var("AWS_SESSION_TOKEN").is_ok());

    // A connection opened after the next refresh sends the new token; the old one is never sent again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = passwords(&seen).len();
    let later = next_password(&database.pool, &seen, before).await;
    assert_ne!(later, first, "the token was not renewed");
    let date = |token: &str| {
        token
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Date="))
            .expect("a signing date")
            .to_owned()
    };
    assert!(date(&later) > date(&first), "{first}\n{later}");
    assert!(
        !seen.lock().expect("seen").contains(&Seen::Plaintext),
        "a connection without TLS"
    );
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}
