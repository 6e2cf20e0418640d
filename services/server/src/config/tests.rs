//! The configuration's own rules, checked without starting a server.

use super::*;

/// Development mode, so the security requirements do not get in the way of other checks.
fn load(toml: &str) -> anyhow::Result<Config> {
    Config::from_toml(&format!("insecure = true\n{toml}"))
}

#[test]
fn tls_and_authentication_are_required_unless_insecure() {
    let err = Config::from_toml("").expect_err("no TLS").to_string();
    assert!(err.contains("tls") && err.contains("--insecure"), "{err}");
    let err = Config::from_toml("[tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'")
        .expect_err("no authentication")
        .to_string();
    assert!(err.contains("authentication"), "{err}");
    let sha = "a".repeat(64);
    let config = Config::from_toml(&format!(
        "[tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'\n\
         [[auth_tokens]]\nidentity = 'ci'\nsha256 = '{sha}'\n\
         [[grants]]\nidentity = 'token:ci'\nrole = 'viewer'\nscope = 'team=payments'"
    ))
    .expect("TLS and a token");
    assert!(
        !format!("{config:?}").contains(&sha),
        "token hashes are not printed"
    );
}

#[test]
fn bad_tokens_roles_and_scopes_are_refused() {
    let err = load("[[auth_tokens]]\nidentity = 'ci'\nsha256 = 'plaintext-token'")
        .expect_err("not a hash")
        .to_string();
    assert!(err.contains("auth_tokens[0].sha256"), "{err}");
    assert!(!err.contains("plaintext-token"), "{err}");
    let err = load("[[grants]]\nidentity = 'token:a'\nrole = 'root'")
        .expect_err("unknown role")
        .to_string();
    assert!(err.contains("grants[0].role"), "{err}");
    let err = load("[[grants]]\nidentity = 'token:a'\nrole = 'viewer'\nscope = '=bad'")
        .expect_err("bad selector")
        .to_string();
    assert!(err.contains("grants[0].scope"), "{err}");
    // A grant that could never match: a token name not configured, a JWT without [jwt] or of another issuer, a
    // certificate identity without mutual TLS.
    for (grant, why) in [
        ("token:nobody", "auth_tokens"),
        ("jwt:https://idp:alice", "[jwt]"),
        ("cert-cn:ops", "client_ca_file"),
    ] {
        let err = load(&format!(
            "[[grants]]\nidentity = '{grant}'\nrole = 'viewer'"
        ))
        .expect_err(grant)
        .to_string();
        assert!(
            err.contains("grants[0].identity") && err.contains(why),
            "{err}"
        );
    }
    // A grant names the credential kind: a bare name would match whichever kind carries it.
    let err = load("[[grants]]\nidentity = 'root-admin'\nrole = 'admin'")
        .expect_err("no kind")
        .to_string();
    assert!(
        err.contains("grants[0].identity") && err.contains("token:NAME"),
        "{err}"
    );
}

#[test]
fn defaults_are_valid() {
    let config = load("").expect("defaults load");
    assert_eq!(config.listen_addr.to_string(), "127.0.0.1:50051");
    assert_eq!(config.shutdown_grace_period, Duration::from_secs(25));
    assert!(config.metrics_addr.is_some());
    assert!(config.health_addr.is_none());
    assert!(
        load("metrics_addr = 'off'")
            .expect("off is valid")
            .metrics_addr
            .is_none()
    );
}

#[test]
fn bad_values_are_refused_with_the_key_named() {
    let err = load("listen_addr = 'localhost'")
        .expect_err("not a socket address")
        .to_string();
    assert!(err.contains("listen_addr"), "{err}");
    let err = load("log_format = 'xml'")
        .expect_err("unknown format")
        .to_string();
    assert!(err.contains("log_format"), "{err}");
    let err = load("database_url = 'mysql://x'")
        .expect_err("not postgres")
        .to_string();
    assert!(err.contains("postgres"), "{err}");
    let err = load("database_acquire_timeout = 'soon'")
        .expect_err("not a duration")
        .to_string();
    assert!(err.contains("database_acquire_timeout"), "{err}");
    let err = load("listen_adr = '127.0.0.1:1'")
        .expect_err("typo")
        .to_string();
    assert!(err.contains("listen_adr"), "{err}");
}

#[test]
fn limits_beyond_aws_or_nonsense_are_refused() {
    let err = load("max_tables_in_flight = 501")
        .expect_err("above AWS")
        .to_string();
    assert!(err.contains("max_tables_in_flight"), "{err}");
    let err = load("update_rate = -1.0")
        .expect_err("negative")
        .to_string();
    assert!(err.contains("update_rate"), "{err}");
    let err = load("role = 'both'").expect_err("unknown role").to_string();
    assert!(err.contains("role"), "{err}");
    assert_eq!(load("role = 'worker'").expect("valid").role, Role::Worker);
}

/// The CLI's variables are the CLI's: none of them names a server setting, so ignoring them hides nothing.
#[test]
fn no_cli_variable_is_a_server_setting() {
    for key in tablecrypt_proto::CLI_ENVIRONMENT_KEYS {
        let err = load(&format!("{key} = 'x'")).expect_err("not a server setting");
        assert!(
            err.to_string().contains("unknown field"),
            "{key} is both a CLI variable and a server setting: {err}"
        );
    }
}

#[test]
fn password_is_redacted() {
    let config = load("database_url = 'postgres://u:hunter2@db:5432/x'").expect("valid");
    assert!(!format!("{config:?}").contains("hunter2"));
}

fn reach(
    url: &str,
    tls: &database::DatabaseTls<'_>,
    insecure: bool,
) -> anyhow::Result<DatabaseConnection> {
    database::connection(&url.parse().expect("a URL"), tls, insecure)
}

#[test]
fn a_database_on_another_machine_is_reached_over_tls() {
    let none = database::DatabaseTls::default();
    // Unstated: require there (never libpq's silent plaintext fallback), with a word about the unchecked
    // certificate.
    let reached = reach("postgres://u@db.internal:5432/x", &none, false).expect("unstated");
    assert_eq!(reached.sslmode, DatabaseSslMode::Require);
    assert!(
        reached.warnings[0].contains("not checked"),
        "{:?}",
        reached.warnings
    );
    // Stated below require: refused, naming the setting and the way out.
    for mode in ["disable", "allow", "prefer"] {
        let err = reach(
            &format!("postgres://u@10.0.0.7/x?sslmode={mode}"),
            &none,
            false,
        )
        .expect_err("plaintext to another machine")
        .to_string();
        assert!(
            err.contains("database_sslmode") && err.contains(mode) && err.contains("verify-full"),
            "{err}"
        );
        // Development only: allowed, said out loud.
        let reached = reach(
            &format!("postgres://u@10.0.0.7/x?sslmode={mode}"),
            &none,
            true,
        )
        .expect("insecure");
        assert!(
            reached.warnings[0].contains("plaintext"),
            "{:?}",
            reached.warnings
        );
    }
    // verify-full: nothing to warn about.
    let full = database::DatabaseTls {
        sslmode: Some(DatabaseSslMode::VerifyFull),
        ..Default::default()
    };
    let reached = reach("postgres://u@db.internal/x?sslmode=disable", &full, false)
        .expect("the setting wins over the URL");
    assert_eq!(reached.sslmode, DatabaseSslMode::VerifyFull);
    assert!(reached.warnings.is_empty(), "{:?}", reached.warnings);
}

#[test]
fn a_database_on_this_machine_keeps_libpqs_default() {
    let none = database::DatabaseTls::default();
    for url in [
        "postgres://u@127.0.0.1:5432/x",
        "postgres://u@localhost/x",
        "postgres://u@[::1]/x",
        "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
    ] {
        let reached = reach(url, &none, false).expect(url);
        assert_eq!(reached.sslmode, DatabaseSslMode::Prefer, "{url}");
        assert!(reached.warnings.is_empty(), "{url}: {:?}", reached.warnings);
    }
    reach("postgres://u@127.0.0.1/x?sslmode=disable", &none, false)
        .expect("stated plaintext, locally");
}

#[test]
fn database_tls_files_are_checked_at_start() {
    let err = "postgres://u@db/x?sslmode=verify-everything"
        .parse::<DatabaseUrl>()
        .expect_err("bad sslmode")
        .to_string();
    assert!(
        err.contains("sslmode") && err.contains("verify-full"),
        "{err}"
    );
    let missing = Path::new("/nonexistent/rds-global-bundle.pem");
    let err = reach(
        "postgres://u@db/x",
        &database::DatabaseTls {
            sslmode: Some(DatabaseSslMode::VerifyFull),
            sslrootcert: Some(missing),
            ..Default::default()
        },
        false,
    )
    .expect_err("no such CA bundle");
    assert!(
        format!("{err:#}").contains("database_sslrootcert /nonexistent/rds-global-bundle.pem"),
        "{err:#}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, "x").expect("write");
    let err = reach(
        "postgres://u@db/x",
        &database::DatabaseTls {
            sslcert: Some(&cert),
            ..Default::default()
        },
        false,
    )
    .expect_err("a certificate without its key")
    .to_string();
    assert!(err.contains("database_sslkey"), "{err}");
    let err = load("database_sslmode = 'sometimes'")
        .expect_err("bad setting")
        .to_string();
    assert!(err.contains("database_sslmode"), "{err}");
}

#[test]
fn iam_database_auth_needs_tls_and_no_password() {
    let rds = "database_url = 'postgres://tablecrypt@db.cluster-abc.eu-west-1.rds.amazonaws.com/tablecrypt'";
    let on = load(&format!(
        "{rds}\ndatabase_iam_auth = true\ndatabase_sslmode = 'verify-full'"
    ))
    .expect("IAM over verified TLS");
    assert!(on.database_iam_auth);
    for sslmode in ["disable", "allow", "prefer"] {
        let err = load(&format!(
            "{rds}\ndatabase_iam_auth = true\ndatabase_sslmode = '{sslmode}'"
        ))
        .expect_err("a token over plaintext")
        .to_string();
        assert!(
            err.contains("database_iam_auth needs database_sslmode"),
            "{err}"
        );
    }
    // On this machine libpq's default (prefer) may fall back to plaintext: refused with IAM too.
    let err = load(
        "database_url = 'postgres://tablecrypt@127.0.0.1/tablecrypt'\ndatabase_iam_auth = true",
    )
    .expect_err("prefer on loopback")
    .to_string();
    assert!(err.contains("database_sslmode"), "{err}");
    let err = load(
        "database_url = 'postgres://tablecrypt:hunter2@db.cluster-abc.eu-west-1.rds.amazonaws.com/tablecrypt'\n\
         database_iam_auth = true\ndatabase_sslmode = 'require'",
    )
    .expect_err("a password beside IAM")
    .to_string();
    assert!(err.contains("remove the password"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = load(&format!(
        "{rds}\ndatabase_iam_auth = true\ndatabase_sslmode = 'require'\ndatabase_iam_token_refresh = '15m'"
    ))
    .expect_err("a refresh after the token expired")
    .to_string();
    assert!(err.contains("database_iam_token_refresh"), "{err}");
}

#[test]
fn bad_notification_sinks_are_refused_with_the_entry_named() {
    let sink = |body: &str| format!("[[notifications]]\nname = 'chat'\n{body}");
    assert!(load(&sink("url = 'https://hooks.example.com/x'")).is_ok());
    assert!(load(&sink("url = 'http://127.0.0.1:9000/x'")).is_ok());
    assert!(
        load(&sink(
            "sns_topic_arn = 'arn:aws:sns:eu-west-1:123456789012:tablecrypt'"
        ))
        .is_ok()
    );
    for (body, want) in [
        ("url = 'http://hooks.example.com/x'", "notifications[0].url"),
        ("url = 'ftp://hooks.example.com/x'", "notifications[0].url"),
        ("url = 'not a url'", "notifications[0].url"),
        ("", "exactly one of url, url_file and sns_topic_arn"),
        (
            "url = 'https://a.example'\nurl_file = '/nonexistent'",
            "exactly one of url, url_file and sns_topic_arn",
        ),
        (
            "url = 'https://a.example'\nsns_topic_arn = 'arn:aws:sns:eu-west-1:123456789012:t'",
            "exactly one of url, url_file and sns_topic_arn",
        ),
        (
            "sns_topic_arn = 'arn:aws:sqs:eu-west-1:123456789012:t'",
            "notifications[0].sns_topic_arn",
        ),
        (
            "sns_topic_arn = 'arn:aws:sns:eu-west-1:1234:t'",
            "notifications[0].sns_topic_arn",
        ),
        ("url_file = '/nonexistent/url'", "notifications[0].url_file"),
        (
            "url = 'https://a.example'\nevents = ['exploded']",
            "notifications[0].events",
        ),
        (
            "url = 'https://a.example'\nevents = []",
            "notifications[0].events",
        ),
        (
            "url = 'https://a.example'\nformat = 'xml'",
            "notifications[0].format",
        ),
        (
            "url = 'https://a.example'\nselector = '=x'",
            "notifications[0].selector",
        ),
    ] {
        let err = load(&sink(body)).expect_err(body).to_string();
        assert!(err.contains(want), "{body}: {err}");
    }
    let secret = "https://hooks.slack.com/services/T000/B000/very-secret";
    let err = load(&sink(&format!("url = '{secret}'\nformat = 'xml'")))
        .expect_err("bad format")
        .to_string();
    assert!(!err.contains("very-secret"), "{err}");
    let twice = format!(
        "{}\n{}",
        sink("url = 'https://a.example'"),
        sink("url = 'https://b.example'")
    );
    let err = load(&twice).expect_err("a name used twice").to_string();
    assert!(err.contains("notifications[1].name"), "{err}");
    let err = load("[[notifications]]\nname = 'a b'\nurl = 'https://a.example'")
        .expect_err("a space in the name")
        .to_string();
    assert!(err.contains("notifications[0].name"), "{err}");
}

#[test]
fn a_jwt_key_set_comes_from_one_source_over_https() {
    let jwt = |source: &str| {
        format!("[jwt]\nissuer = 'https://idp.example'\naudience = 'tablecrypt'\n{source}")
    };
    assert!(
        load(&jwt(
            "jwks_uri = 'https://idp.example/.well-known/jwks.json'"
        ))
        .is_ok()
    );
    assert!(load(&jwt("jwks_uri = 'http://127.0.0.1:8080/jwks.json'")).is_ok());
    assert!(load(&jwt("jwks_uri = 'http://[::1]:8080/jwks.json'")).is_ok());
    for (source, want) in [
        (
            "jwks_uri = 'http://idp.example/jwks.json'",
            "jwt.jwks_uri must be an https",
        ),
        (
            "jwks_uri = 'http://127.0.0.1.evil.example/jwks.json'",
            "jwt.jwks_uri must be an https",
        ),
        (
            "jwks_uri = 'file:///etc/passwd'",
            "jwt.jwks_uri must be an https",
        ),
        (
            "jwks_uri = 'http://localhost:x@idp.evil.example/jwks'",
            "jwt.jwks_uri must be an https",
        ),
        (
            "jwks_uri = 'http://127.0.0.1:1@idp.evil.example/jwks'",
            "jwt.jwks_uri must be an https",
        ),
        (
            "jwks_uri = 'https://user:pass@idp.example/jwks'",
            "without credentials",
        ),
        ("", "exactly one of jwks_file and jwks_uri"),
        (
            "jwks_file = '/x.json'\njwks_uri = 'https://idp.example/jwks.json'",
            "exactly one of jwks_file and jwks_uri",
        ),
    ] {
        let err = load(&jwt(source)).expect_err(source).to_string();
        assert!(err.contains(want), "{source}: {err}");
    }
}

#[test]
fn discovery_settings_are_checked_with_the_key_named() {
    let base = "[discovery]\norganization_role_arn = 'arn:aws:iam::100000000000:role/org-reader'\n\
                regions = ['eu-west-1']\n";
    let config = load(base).expect("minimal discovery");
    let settings = config
        .discovery_settings()
        .expect("valid")
        .expect("configured");
    assert_eq!(
        settings.rules.member_role.as_str(),
        "arn:aws:iam::{account_id}:role/tablecrypt-member"
    );
    for (extra, key) in [
        (
            "member_role = 'arn:aws:iam::111111111111:role/x'",
            "discovery.member_role",
        ),
        ("tag_labels = ['has space']", "discovery.tag_labels[0]"),
        (
            "[[discovery.ou_labels]]\nou = 'Workloads'\nlabels = { env = 'prod' }",
            "discovery.ou_labels[0].ou",
        ),
        (
            "[[discovery.ou_labels]]\nou = 'Root/Workloads'\nlabels = { env = 'not ok' }",
            "discovery.ou_labels[0].labels[\"env\"]",
        ),
        ("interval = '5s'", "discovery.interval"),
        (
            "tag_labels = ['env']\n[[discovery.ou_labels]]\nou = 'Root/Workloads'\nlabels = { env = 'prod' }",
            "also a label of ou_labels",
        ),
    ] {
        let err = load(&format!("{base}{extra}"))
            .expect_err(extra)
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let err = load(
        "[discovery]\norganization_role_arn = 'arn:aws:iam::100000000000:role/r'\nregions = []",
    )
    .expect_err("no region")
    .to_string();
    assert!(err.contains("discovery.regions"), "{err}");
}

#[test]
fn check_config_prints_toml_that_loads_back_with_every_secret_redacted() {
    let sha = "b".repeat(64);
    let with_secrets = load(&format!(
        "database_url = 'postgres://app:hunter2@db.internal:5432/tablecrypt?password=query-password'\n\
         otel_exporter_otlp_endpoint = 'http://otel:otel-password@otel:4317'\n\
         database_sslmode = 'require'\n\
         page_token_keys = 'page-token-secret-key-material-0123456789'\n\
         metrics_addr = 'off'\n\
         inventory_scan_interval = '6h'\n\
         [tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'\n\
         [[auth_tokens]]\nidentity = 'ci'\nsha256 = '{sha}'\n\
         [[grants]]\nidentity = 'token:ci'\nrole = 'viewer'\nscope = 'team=payments'\n\
         [[notifications]]\nname = 'ops'\nurl = 'https://hooks.example.com/services/webhook-secret'\n\
         [discovery]\norganization_role_arn = 'arn:aws:iam::100000000000:role/r'\n\
         organization_external_id = 'org-external-secret'\nregions = ['eu-west-1']\n\
         [[discovery.ou_labels]]\nou = 'Root/Workloads'\nlabels = {{ env = 'prod' }}\n"
    ))
    .expect("a configuration with secrets");
    let printed = with_secrets.to_toml().expect("TOML");
    for secret in [
        "hunter2",
        sha.as_str(),
        "page-token-secret",
        "webhook-secret",
        "org-external-secret",
        "query-password",
        "otel-password",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(printed.contains("[redacted]"), "{printed}");
    assert!(printed.contains("metrics_addr = \"off\""), "{printed}");
    assert!(printed.contains("[[discovery.ou_labels]]"), "{printed}");
    // Without secrets, what is printed loads back as the same configuration.
    let plain = load(
        "inventory_scan_interval = '6h'\nmetrics_addr = 'off'\n[tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'\nclient_ca_file = 'ca.pem'\n\
         [[grants]]\nidentity = 'spiffe://tablecrypt/ci'\nrole = 'viewer'\n\
         [discovery]\norganization_role_arn = 'arn:aws:iam::100000000000:role/r'\nregions = ['eu-west-1']\n",
    )
    .expect("a configuration");
    let again = Config::from_toml(&plain.to_toml().expect("TOML")).expect("loads back");
    assert_eq!(format!("{plain:?}"), format!("{again:?}"));
    // A redacted value copied back into a file is refused, never sent to AWS.
    let err = load(
        "[discovery]\norganization_role_arn = 'arn:aws:iam::100000000000:role/r'\nregions = ['eu-west-1']\n\
         member_external_id = '[redacted]'\n",
    )
    .expect_err("the marker")
    .to_string();
    assert!(err.contains("discovery.member_external_id"), "{err}");
}
