//! `AUTH=off` is a local-only switch. Alone in its test binary: it changes the process's
//! environment.

use readings::config::AuthConfig;

#[test]
fn auth_off_is_refused_under_lambda() {
    // Both cases in one test: the environment is the process's.
    std::env::set_var("AUTH", "off");
    assert!(!AuthConfig::from_env().unwrap().enabled);
    std::env::set_var("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
    let err = AuthConfig::from_env().unwrap_err().to_string();
    std::env::remove_var("AWS_LAMBDA_RUNTIME_API");
    std::env::remove_var("AUTH");
    assert!(err.contains("local runs only"), "{err}");
    assert!(AuthConfig::from_env().unwrap().enabled, "on by default");
}
