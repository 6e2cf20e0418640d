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
         [[grants]]\nidentity = 'ci'\nrole = 'viewer'\nscope = 'team=payments'"
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
    let err = load("[[grants]]\nidentity = 'a'\nrole = 'root'")
        .expect_err("unknown role")
        .to_string();
    assert!(err.contains("grants[0].role"), "{err}");
    let err = load("[[grants]]\nidentity = 'a'\nrole = 'viewer'\nscope = '=bad'")
        .expect_err("bad selector")
        .to_string();
    assert!(err.contains("grants[0].scope"), "{err}");
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
