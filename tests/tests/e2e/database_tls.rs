//! TLS to PostgreSQL: the real server binary against a private cluster that takes TLS only (as RDS does with
//! `rds.force_ssl=1`), its certificate from a CA made here. verify-full connects with the right CA bundle and host
//! name, and refuses a wrong CA or a wrong host name with a message naming the problem; a client certificate is
//! presented when configured; plaintext to another machine is refused before anything is dialled.

use std::path::Path;
use std::process::Stdio;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sqlx::Connection as _;
use tablecrypt_tests::postgres::{PrivatePostgres, ServerTls};
use tablecrypt_tests::process::server_binary;

/// A throwaway CA.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A certificate for `names` (SANs; the first is also the CN), signed by `ca`: (certificate, key) as PEM.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// `tablecrypt-server migrate` with only `env` as configuration: its exit code and what it printed.
async fn migrate(env: &[(&str, String)]) -> (i32, String) {
    let mut command = tokio::process::Command::new(server_binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("TABLECRYPT_") || key.starts_with("PG") {
            command.env_remove(key);
        }
    }
    let output = command
        .arg("migrate")
        .env("TABLECRYPT_LOG_FORMAT", "pretty")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run tablecrypt-server migrate");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), printed)
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn verify_full_reaches_a_tls_only_database_and_names_what_is_wrong() {
    let ca_right = ca("tablecrypt test database CA");
    let ca_wrong = ca("somebody else's CA");
    // The database's certificate names only "localhost": reached as 127.0.0.1, verify-full must refuse it.
    let (cert, key) = leaf(&ca_right, &["localhost"]);
    let pg = PrivatePostgres::start_tls(&ServerTls {
        cert_pem: &cert,
        key_pem: &key,
        client_ca_pem: &ca_right.pem(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let right = write(dir.path(), "right-ca.pem", &ca_right.pem());
    let wrong = write(dir.path(), "wrong-ca.pem", &ca_wrong.pem());
    let url = |host: &str, user: &str| format!("postgres://{user}@{host}:{}/postgres", pg.port);
    let insecure = ("TABLECRYPT_INSECURE", "true".to_owned());

    // The cluster takes TLS only: plaintext is rejected by the database itself.
    let (code, printed) = migrate(&[
        (
            "DATABASE_URL",
            format!("{}?sslmode=disable", url("localhost", "postgres")),
        ),
        insecure.clone(),
    ])
    .await;
    assert_eq!(code, 1, "{printed}");
    assert!(printed.contains("no encryption"), "{printed}");

    // A wrong CA: refused, saying the certificate is not signed by the configured bundle.
    let (code, printed) = migrate(&[
        ("DATABASE_URL", url("localhost", "postgres")),
        ("TABLECRYPT_DATABASE_SSLMODE", "verify-full".into()),
        ("TABLECRYPT_DATABASE_SSLROOTCERT", wrong),
        insecure.clone(),
    ])
    .await;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.contains("not signed by a CA in database_sslrootcert"),
        "{printed}"
    );

    // The right CA, the wrong host name (the certificate names localhost only): refused, saying so.
    let (code, printed) = migrate(&[
        ("DATABASE_URL", url("127.0.0.1", "postgres")),
        ("TABLECRYPT_DATABASE_SSLMODE", "verify-full".into()),
        ("TABLECRYPT_DATABASE_SSLROOTCERT", right.clone()),
        insecure.clone(),
    ])
    .await;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.contains("does not name the host in DATABASE_URL"),
        "{printed}"
    );

    // The right CA and host, stated in the URL as libpq users write it: migrations applied over TLS.
    let (code, printed) = migrate(&[
        (
            "DATABASE_URL",
            format!(
                "{}?sslmode=verify-full&sslrootcert={right}",
                url("localhost", "postgres")
            ),
        ),
        insecure.clone(),
    ])
    .await;
    assert_eq!(code, 0, "{printed}");
    let mut conn = sqlx::PgConnection::connect(&format!(
        "{}?sslmode=verify-full&sslrootcert={right}",
        url("localhost", "postgres")
    ))
    .await
    .expect("connect over TLS");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("read the migrations table");
    assert!(applied > 0, "no migration applied");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the test's own connection is TLS too");

    // A role that authenticates by client certificate: refused without one, admitted with one.
    sqlx::query("CREATE ROLE certuser LOGIN SUPERUSER")
        .execute(&mut conn)
        .await
        .expect("create certuser");
    let verify = [
        ("TABLECRYPT_DATABASE_SSLMODE", "verify-full".to_owned()),
        ("TABLECRYPT_DATABASE_SSLROOTCERT", right.clone()),
        insecure.clone(),
    ];
    let mut env = vec![("DATABASE_URL", url("localhost", "certuser"))];
    env.extend(verify.iter().cloned());
    let (code, printed) = migrate(&env).await;
    assert_eq!(code, 1, "{printed}");
    assert!(printed.contains("certificate"), "{printed}");
    let (client_cert, client_key) = leaf(&ca_right, &["certuser"]);
    env.push((
        "TABLECRYPT_DATABASE_SSLCERT",
        write(dir.path(), "client.pem", &client_cert),
    ));
    env.push((
        "TABLECRYPT_DATABASE_SSLKEY",
        write(dir.path(), "client.key", &client_key),
    ));
    let (code, printed) = migrate(&env).await;
    assert_eq!(code, 0, "{printed}");

    // Plaintext to another machine is refused at start, before anything is dialled, naming the setting.
    let (code, printed) = migrate(&[(
        "DATABASE_URL",
        "postgres://tablecrypt@db.invalid:5432/tablecrypt?sslmode=prefer".into(),
    )])
    .await;
    assert_eq!(code, 2, "{printed}");
    assert!(
        printed.contains("database_sslmode") && printed.contains("prefer"),
        "{printed}"
    );
}
